"""Benchmark the training step and sampling, like nanoGPT's bench.py, with PyTorch eager side by side where installed.

Times the real jitted step of train.py (batch offsets drawn as nanoGPT draws them, windows gathered, forward,
backward, clip, AdamW) after warm-up, and the same step of the PyTorch nanoGPT reference (tools/torch_nanogpt.py) in
the same run, alternating rounds so that both see the same machine load. Ratios are the figures to compare; absolute times move with the load of a shared machine.
"""
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from tinygrad import Tensor

from .config import TrainConfig
from .data import load_split, random_offsets
from .device import item, set_device
from .model import A100_BF16_FLOPS, GPT, GPTConfig
from .tokenizer import load as load_tokenizer
from .compat.torch_rng import TorchGenerator
from .train import configure_optimizer, make_train_step, set_lr

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class BenchConfig:
    # the model and batch: nanoGPT's README CPU config by default
    dataset: str = "shakespeare_char"
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64
    batch_size: int = 12
    gradient_accumulation_steps: int = 1
    bias: bool = False
    dropout: float = 0.0
    learning_rate: float = 1e-3
    device: str = "cpu"
    seed: int = 1337
    # timing
    warmup: int = 3  # untimed steps after the first (compiling) one
    iters: int = 20  # timed steps per round
    rounds: int = 3  # rounds, alternating tinygrad and torch; the median round is reported
    peak_flops: float = 453e9  # the device's peak FLOP/s for MFU; 453e9: fp32 on both cores of the 2-core dev machine
    torch: bool = True  # also time the PyTorch reference (needs torch)
    torch_threads: int = 0  # 0: torch's default (one per core); on a busy machine 1 thread is far steadier
    # sampling
    sample_tokens: int = 500  # new tokens per sample; 0 skips the sampling benchmark
    num_samples: int = 10  # also time sample.py's default of 10 samples (ours at once, torch one by one); 1 skips it
    # cold start: time from `python train.py ...` to its first iter line, fresh kernel cache then warm
    cold_start: bool = False
    start_eval_iters: int = 20  # --eval_iters of that train.py run (the README's 20; its step-0 eval comes first)


def flops_per_iter(model: GPT, cfg: BenchConfig) -> float:
    """nanoGPT's estimate (PaLM appendix B, 6N + 12LHQT per token), through model.estimate_mfu."""
    return model.flops_per_iter(cfg.batch_size * cfg.gradient_accumulation_steps)


def time_steps(step, n: int) -> float:
    """Seconds per call of step() over n calls; step() must block until its work is done."""
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - t0) / n


def tinygrad_setup(cfg: BenchConfig, vocab_size: int):
    """The model, and train.py's own jitted step on this config; returns (model, step that blocks, compile seconds)."""
    tcfg = replace(TrainConfig(), **{k: v for k, v in asdict(cfg).items() if k in TrainConfig.__dataclass_fields__})
    Tensor.manual_seed(cfg.seed)
    gen = TorchGenerator(cfg.seed)
    model = GPT(GPTConfig(n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, block_size=cfg.block_size,
                          bias=cfg.bias, vocab_size=vocab_size, dropout=cfg.dropout), verbose=False, generator=gen)
    optimizer = configure_optimizer(model, tcfg)
    set_lr(optimizer, cfg.learning_rate)
    data = load_split(ROOT / "data" / cfg.dataset, "train")
    train_step = make_train_step(model, optimizer, data, tcfg)

    def step() -> float:  # as train.py: offsets drawn on the host, then the jitted step; item() waits for it
        ix = [random_offsets(gen, data.shape[0], cfg.batch_size, cfg.block_size)
              for _ in range(cfg.gradient_accumulation_steps)]
        return item(train_step(np.stack(ix)))
    t0 = time.perf_counter()
    step(), step()  # the jit runs eagerly, then captures: both compile
    return model, step, time.perf_counter() - t0


def torch_setup(cfg: BenchConfig, vocab_size: int):
    """The PyTorch nanoGPT reference and nanoGPT's step (batch, forward, backward, clip, AdamW); returns (model, step)."""
    import torch

    sys.path.insert(0, str(ROOT / "tools"))
    from torch_nanogpt import GPT as TorchGPT, GPTConfig as TorchConfig

    if cfg.torch_threads > 0:
        torch.set_num_threads(cfg.torch_threads)
    torch.manual_seed(cfg.seed)
    data = np.memmap(ROOT / "data" / cfg.dataset / "train.bin", dtype=np.uint16, mode="r")
    model = TorchGPT(TorchConfig(n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, block_size=cfg.block_size,
                                 bias=cfg.bias, vocab_size=vocab_size, dropout=cfg.dropout))
    optimizer = model.configure_optimizers(0.1, cfg.learning_rate, (0.9, 0.95), "cpu")

    def get_batch():  # nanoGPT's get_batch
        ix = torch.randint(len(data) - cfg.block_size, (cfg.batch_size,))
        x = torch.stack([torch.from_numpy(data[i:i + cfg.block_size].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + cfg.block_size].astype(np.int64)) for i in ix])
        return x, y

    def step():
        for _ in range(cfg.gradient_accumulation_steps):
            _, loss = model(*get_batch())
            (loss / cfg.gradient_accumulation_steps).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return model, step


def bench_sampling(cfg: BenchConfig, model: GPT, torch_model, rows: int) -> dict[str, float]:
    """Tokens per second generating sample_tokens new tokens after "\n" for `rows` samples, temperature 0.8, top-k 200.

    Ours generates the rows at once (sample.py's Generator); torch one after another, as nanoGPT's sample.py does."""
    from .sample import Generator

    out = {}
    prompt = np.zeros((rows, 1), dtype=np.int32)
    gen = Generator(model, rows)
    gen.generate(prompt, cfg.block_size + 2, temperature=0.8, top_k=200, rng=np.random.default_rng(0))  # compiles
    t0 = time.perf_counter()
    gen.generate(prompt, cfg.sample_tokens, temperature=0.8, top_k=200, rng=np.random.default_rng(0))
    out["tinygrad"] = rows * cfg.sample_tokens / (time.perf_counter() - t0)
    if torch_model is not None:
        import torch

        torch_model.eval()
        x = torch.zeros((1, 1), dtype=torch.long)
        torch_model.generate(x, 3, temperature=0.8, top_k=200)
        t0 = time.perf_counter()
        for _ in range(rows):
            torch_model.generate(x, cfg.sample_tokens, temperature=0.8, top_k=200)
        out["torch"] = rows * cfg.sample_tokens / (time.perf_counter() - t0)
    return out


def train_command(cfg: BenchConfig) -> list[str]:
    """The README CPU command, run until its first iter line."""
    return [sys.executable, "train.py", "config/train_shakespeare_char.py", f"--device={cfg.device}", "--compile=False",
            f"--eval_iters={cfg.start_eval_iters}", "--log_interval=1", f"--block_size={cfg.block_size}",
            f"--batch_size={cfg.batch_size}", f"--n_layer={cfg.n_layer}", f"--n_head={cfg.n_head}", f"--n_embd={cfg.n_embd}", "--max_iters=2000",
            "--lr_decay_iters=2000", f"--dropout={cfg.dropout}", f"--dataset={cfg.dataset}"]


def time_to_first_iter(cfg: BenchConfig, env: dict, out_dir: str) -> float:
    """Seconds from starting train.py to its first `iter 0:` line; the process is stopped there."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(train_command(cfg) + [f"--out_dir={out_dir}"], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        for line in proc.stdout:
            if re.match(r"iter 0: loss", line):
                return time.perf_counter() - t0
        raise RuntimeError(f"train.py ended (rc {proc.wait()}) before its first iter line")
    finally:
        proc.kill()
        proc.wait()


def bench(cfg: BenchConfig) -> dict:
    """Run the benchmark per cfg, print its report and return the figures."""
    device = set_device(cfg.device)
    meta = ROOT / "data" / cfg.dataset / "meta.json"
    if not meta.is_file():
        raise FileNotFoundError(f"{meta} not found; prepare the dataset first: python data/{cfg.dataset}/prepare.py")
    vocab_size = load_tokenizer(meta).vocab_size
    tokens_per_iter = cfg.batch_size * cfg.block_size * cfg.gradient_accumulation_steps
    print(f"config: n_layer={cfg.n_layer} n_head={cfg.n_head} n_embd={cfg.n_embd} block_size={cfg.block_size} "
          f"batch_size={cfg.batch_size} grad_accum={cfg.gradient_accumulation_steps} bias={cfg.bias} "
          f"vocab_size={vocab_size}; tinygrad device {device}; load average {os.getloadavg()[0]:.2f}")
    model, step, compile_s = tinygrad_setup(cfg, vocab_size)
    print(f"tinygrad: first two steps (compile and jit capture) {compile_s:.1f}s")
    torch_model = torch_step = None
    if cfg.torch:
        try:
            torch_model, torch_step = torch_setup(cfg, vocab_size)
            import torch

            print(f"torch {torch.__version__}: eager, {torch.get_num_threads()} threads")
        except ImportError:
            print("torch is not installed: the PyTorch side is skipped (pip install torch)")
    for _ in range(cfg.warmup):
        step()
        if torch_step:
            torch_step()
    times = {"tinygrad": [], "torch": []}
    for r in range(cfg.rounds):  # alternate, so a change of machine load hits both sides
        times["tinygrad"].append(time_steps(step, cfg.iters))
        if torch_step:
            times["torch"].append(time_steps(torch_step, cfg.iters))
        print(f"round {r}: " + ", ".join(f"{k} {np.array(v[-1]) * 1000:.1f} ms/iter" for k, v in times.items() if v))
    flops = flops_per_iter(model, cfg)
    result = {"compile_s": compile_s, "flops_per_iter": flops}
    for name, ts in times.items():
        if not ts:
            continue
        dt = float(np.median(ts))
        result[name] = dict(ms_per_iter=dt * 1000, tokens_per_s=tokens_per_iter / dt, flops=flops / dt,
                            mfu=flops / dt / cfg.peak_flops)
        r = result[name]
        # two units: this device's peak (--peak_flops), and train.py's mfu, nanoGPT's unit (an A100's bf16 peak)
        print(f"{name}: {r['ms_per_iter']:.1f} ms/iter, {r['tokens_per_s']:,.0f} tokens/s, "
              f"{r['flops'] / 1e9:.1f} GFLOP/s, MFU {r['mfu'] * 100:.1f}% of --peak_flops={cfg.peak_flops / 1e9:.0f} "
              f"GFLOP/s ({r['flops'] / A100_BF16_FLOPS * 100:.2f}% of an A100, train.py's mfu) "
              f"(median of {len(ts)} rounds of {cfg.iters})")
    if "torch" in result:
        result["ratio"] = result["tinygrad"]["tokens_per_s"] / result["torch"]["tokens_per_s"]
        print(f"training throughput ratio tinygrad / torch: {result['ratio']:.2f}")
    for rows in sorted({1, cfg.num_samples}) if cfg.sample_tokens > 0 else []:
        s = result[f"sample_tokens_per_s_{rows}"] = bench_sampling(cfg, model, torch_model, rows)
        print(f"sampling {cfg.sample_tokens} tokens x {rows} sample{'s' * (rows > 1)}: "
              + ", ".join(f"{k} {v:,.0f} tokens/s" for k, v in s.items())
              + (f", ratio {s['tinygrad'] / s['torch']:.2f}" if "torch" in s else ""))
    if cfg.cold_start:
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "CACHEDB": str(Path(tmp) / "cache.db")}
            cold = time_to_first_iter(cfg, env, str(Path(tmp) / "out"))
            warm = time_to_first_iter(cfg, env, str(Path(tmp) / "out"))
        result["start_s"] = {"cold": cold, "warm": warm}
        print(f"train.py start to first iter line: cold (empty kernel cache) {cold:.1f}s, warm {warm:.1f}s")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return result
