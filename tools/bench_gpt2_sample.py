"""Sampling speed of GPT-2 124M, this package against nanoGPT's sample.py in PyTorch, on the same random weights.

Writes random weights of GPT-2 124M's shape as a Hugging Face directory (config.json + model.safetensors, Conv1D
layout), loads them with `--init_from=DIR`'s code (nanogpt_tg/gpt2.py) and into tools/torch_nanogpt.py's GPT, then
times generating --tokens new tokens after "\\n" (GPT-2 id 198) for 1 and --samples samples, temperature 0.8, top-k
200, as sample.py's defaults: ours all samples at once with the KV cache, torch's one after another, as nanoGPT's
sample.py does. The two sides alternate, --rounds times, so that both see the same machine load. Needs torch.

    python tools/bench_gpt2_sample.py [--tokens=200] [--samples=10] [--rounds=2] [--torch_samples=2] [--only=torch]
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from nanogpt_tg.checkpoint import write_safetensors  # noqa: E402
from nanogpt_tg.device import set_device  # noqa: E402
from nanogpt_tg.gpt2 import CONV1D, from_pretrained, hf_shapes  # noqa: E402
from nanogpt_tg.sample import Generator  # noqa: E402

ARGS = dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50257)


def write_random_gpt2(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """Random GPT-2 124M weights (nanoGPT's init: N(0, 0.02), residual projections scaled) as a Hugging Face
    directory; returns them by Hugging Face name."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, shape in hf_shapes(ARGS).items():
        if name.endswith("bias") or ".ln_" in name or name.startswith("ln_f"):
            arrays[name] = np.full(shape, 1.0 if name.endswith("weight") else 0.0, dtype=np.float32)
        else:
            std = 0.02 / np.sqrt(2 * ARGS["n_layer"]) if name.endswith("c_proj.weight") else 0.02
            arrays[name] = (rng.standard_normal(shape, dtype=np.float32) * std).astype(np.float32)
    config = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "activation_function": "gelu_new",
              "n_layer": 12, "n_head": 12, "n_embd": 768, "n_positions": 1024, "n_ctx": 1024, "vocab_size": 50257,
              "layer_norm_epsilon": 1e-5}
    (path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    write_safetensors(path / "model.safetensors", arrays, {"format": "pt"})
    return arrays


def torch_model(arrays: dict[str, np.ndarray]):
    """tools/torch_nanogpt.py's GPT with the same weights (Conv1D weights transposed, as nanoGPT's from_pretrained)."""
    import torch
    from torch_nanogpt import GPT, GPTConfig

    model = GPT(GPTConfig(**ARGS, bias=True, dropout=0.0))
    state = {}
    for name, a in arrays.items():
        a = a.T if name.removesuffix(".weight").endswith(CONV1D) and name.endswith(".weight") else a
        state[f"transformer.{name}"] = torch.from_numpy(np.ascontiguousarray(a))
    state["lm_head.weight"] = state["transformer.wte.weight"]
    model.load_state_dict(state)
    return model.eval()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", choices=["tinygrad", "torch"], help="time one side only (run the two in turn, each "
                        "in its own process, so that neither's threads wait beside the other's)")
    parser.add_argument("--torch_samples", type=int, default=0,
                        help="torch samples timed per round for the many-sample figure (default --samples; torch "
                             "generates them one after another, so fewer give the same tokens/s sooner)")
    args = parser.parse_args()
    import torch

    set_device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        arrays = write_random_gpt2(Path(tmp))
        if args.only != "torch":
            t0 = time.perf_counter()
            model = from_pretrained(tmp)[0]
            print(f"loaded with --init_from=DIR's code in {time.perf_counter() - t0:.1f}s")
    ref = torch_model(arrays) if args.only != "tinygrad" else None
    del arrays
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.2f}")
    gens = {rows: Generator(model, rows) for rows in sorted({1, args.samples})} if args.only != "torch" else {}
    for rows, gen in gens.items():  # compile: the prefill, then the one-token step (eager, capture, replay)
        t0 = time.perf_counter()
        gen.generate(np.full((rows, 1), 198, dtype=np.int32), 4, temperature=0.8, top_k=200,
                     rng=np.random.default_rng(0))
        print(f"tinygrad {rows} sample(s): compiled in {time.perf_counter() - t0:.1f}s")
    x = torch.full((1, 1), 198, dtype=torch.long)
    if ref is not None:
        ref.generate(x, 3, temperature=0.8, top_k=200)
    results = {}
    for r in range(args.rounds):
        for rows in sorted({1, args.samples}):
            gen = gens.get(rows)
            ours = theirs = float("nan")
            if args.only != "torch":
                t0 = time.perf_counter()
                gen.generate(np.full((rows, 1), 198, dtype=np.int32), args.tokens, temperature=0.8, top_k=200,
                             rng=np.random.default_rng(r))
                ours = rows * args.tokens / (time.perf_counter() - t0)
            n = rows if rows == 1 else (args.torch_samples or rows)
            if args.only != "tinygrad":
                t0 = time.perf_counter()
                for _ in range(n):  # nanoGPT's sample.py: one sample after another
                    ref.generate(x, args.tokens, temperature=0.8, top_k=200)
                theirs = n * args.tokens / (time.perf_counter() - t0)
            results.setdefault(rows, []).append((ours, theirs))
            print(f"round {r}, {rows} sample(s) x {args.tokens} tokens: tinygrad {ours:.1f} tokens/s, torch "
                  f"{theirs:.1f} tokens/s ({n} timed), ratio {ours / theirs:.2f}; load {os.getloadavg()[0]:.2f}",
                  flush=True)
    for rows, rs in results.items():
        print(f"{rows} sample(s): ratios " + ", ".join(f"{o / t:.2f}" for o, t in rs))


if __name__ == "__main__":
    main()
