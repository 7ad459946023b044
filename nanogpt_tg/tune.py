"""Measure this CPU's matmul tiles for a training step, once per machine: python -m nanogpt_tg.tune [--key=value ...]

The keys are bench.py's (nanoGPT's names; the README CPU config by default; the preset's size is --n_layer=6
--n_head=6 --n_embd=384 --block_size=256 --batch_size=64), plus --minutes, the search's time bound. It builds train.py's
step for that config and compiles it with the search on (nanogpt_tg/cpu/tune.py): one line per kernel searched, then
a summary. What it measured is kept in tinygrad's disk cache, so train.py, sample.py and bench.py use it from then on
(their next start compiles once). `NANOGPT_TG_TUNE=1 python train.py ...` searches on first use instead.
"""
import os
import time
from dataclasses import dataclass

from .bench import BenchConfig


@dataclass(frozen=True)
class TuneConfig(BenchConfig):
    minutes: float = 10.0  # no kernel's search starts after this many minutes; the rest keep kernels.py's tiles


def tune(cfg: TuneConfig) -> list:
    os.environ["NANOGPT_TG_TUNE"], os.environ["NANOGPT_TG_TUNE_MINUTES"] = "1", str(cfg.minutes)
    from .bench import ROOT, tinygrad_setup
    from .cpu import kernels, tune as search
    from .device import set_device
    from .tokenizer import load as load_tokenizer

    device = set_device(cfg.device)
    if not device.startswith("CPU") or kernels.tune is None or not search.searching:
        raise ValueError(f"--device={cfg.device}: the tile search is for tinygrad's CPU device with nanogpt_tg's CPU "
                         f"layer on (this is {device}; NANOGPT_TG_CPU and NANOGPT_TG_MATMUL_OPTS must not be 0)")
    meta = ROOT / "data" / cfg.dataset / "meta.json"
    if not meta.is_file():
        raise FileNotFoundError(f"{meta} not found; prepare the dataset first: python data/{cfg.dataset}/prepare.py")
    print(f"tune: searching the matmul tiles of n_layer={cfg.n_layer} n_embd={cfg.n_embd} block_size={cfg.block_size} "
          f"batch_size={cfg.batch_size} on this CPU, at most {cfg.minutes:g} minutes (kernels of "
          f"{search.MIN_FLOPS / 1e6:.0f} MFLOP and more without a measured tile)", flush=True)
    t0 = time.perf_counter()
    tinygrad_setup(cfg, load_tokenizer(meta).vocab_size)
    found = search.searched
    changed = [s for s in found if s[1] != search.candidates(kernels.VECTOR_FLOATS)[0]]
    gain = sum(default - best for _, _, best, default in changed)
    print(f"tune: {len(found)} kernels searched in {time.perf_counter() - t0:.0f} s; {len(changed)} run faster with "
          f"another tile than kernels.py's ({gain * 1e3:.1f} ms less per step, measured one kernel at a time); kept in "
          f"tinygrad's cache for this CPU")
    return found


if __name__ == "__main__":
    from .cli import run
    from .config import cli

    run(tune, cli(TuneConfig, "python -m nanogpt_tg.tune", "[--key=value ...]"))
