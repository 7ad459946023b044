"""A tiny training run and sample, the same in this process or another: what tests compare across CPU patches and
devices (test_cpu_layer.py, test_opencl.py)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from nanogpt_tg import cpu

HERE = Path(__file__).resolve().parent


def tiny_run(workdir: str, device: str = "cpu", new_tokens: int = 50) -> dict:
    """Train the tiny GPT 20 steps on a periodic text in workdir, then greedily sample 50 tokens: the per-iteration
    losses, the last eval's losses, the first sampled position's logits, and the tokens. Two micro-steps per step, not
    TrainConfig's 40: the jitted step unrolls them, and 40 made it the slowest step of the tests to compile."""
    os.makedirs(workdir, exist_ok=True)
    os.chdir(workdir)
    from nanogpt_tg.config import TrainConfig
    from nanogpt_tg.data import prepare_text
    from nanogpt_tg.sample import Generator
    from nanogpt_tg.train import train

    prepare_text("abcdefghij" * 300, "data/periodic", block_size=8)
    cfg = TrainConfig(dataset="periodic", out_dir="out", device=device, n_layer=1, n_head=2, n_embd=16, block_size=8,
                      batch_size=8, gradient_accumulation_steps=2, dropout=0.0, bias=False, learning_rate=1e-2,
                      min_lr=1e-3, warmup_iters=2, max_iters=20, lr_decay_iters=20, eval_interval=20, eval_iters=2,
                      log_interval=1)
    losses = []
    result = train(cfg, on_metrics=lambda r: losses.append(r["loss"]) if r["kind"] == "iter" else None)
    gen = Generator(result["model"], rows=1)
    prompt = np.array([[0, 1, 2]], dtype=np.int32)
    logits = gen.next_logits(prompt)[0]
    tokens = gen.generate(prompt, new_tokens, temperature=0.0)[0, 3:]
    return {"losses": losses, "eval": result["losses"][-1], "logits": logits.tolist(), "tokens": tokens.tolist(),
            "status": dict(cpu.status)}


def run_elsewhere(tmp_path, setup: str = "", timeout: int = 600, device: str = "cpu", new_tokens: int = 50,
                  **env) -> tuple[dict, str]:
    """tiny_run in a fresh process: setup runs first (before nanogpt_tg is imported)."""
    call = f"tiny_run({str(tmp_path)!r}, {device!r}, {new_tokens})"
    code = (f"import json, sys\n{setup}\nsys.path[:0] = [{str(HERE)!r}, {str(HERE.parent)!r}]\n"
            f"from tiny_run import tiny_run\nprint('RESULT ' + json.dumps({call}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):]), proc.stderr


def assert_same_run(a: dict, b: dict, atol: float = 1e-4):
    """Other kernels sum in another order: float32 rounding apart, the same run. Losses and logits to atol absolute
    (they are O(1); rounding differences are ~1e-6 and Adam's 20 steps do not grow them past that); tokens exactly,
    as many as both sampled."""
    np.testing.assert_allclose(a["losses"], b["losses"], rtol=0, atol=atol)
    np.testing.assert_allclose([a["eval"]["train"], a["eval"]["val"]], [b["eval"]["train"], b["eval"]["val"]], atol=atol)
    np.testing.assert_allclose(a["logits"], b["logits"], rtol=0, atol=atol)
    n = min(len(a["tokens"]), len(b["tokens"]))
    assert n > 0 and a["tokens"][:n] == b["tokens"][:n]
