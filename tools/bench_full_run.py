"""The README's 2000-iteration command, ours and PyTorch nanoGPT's (tools/torch_train.py), back to back.

    python tools/bench_full_run.py [train.py's --key=value ...]

Runs `python train.py <README args> <yours>` and `python tools/torch_train.py <the same>` one after the other (in a
temporary out_dir each) and prints, per side: wall time from start to exit, the last val loss, and the spread of the
per-iteration times from the `iter` lines (p10, median, p90 and p90/p10), then the wall-time ratio. Needs torch.
"""
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from nanogpt_tg.bench import BenchConfig, train_command  # noqa: E402

README_ARGS = train_command(BenchConfig())[2:]  # the README's command, as bench.py's cold start runs it


def run(script: str, args: list[str]) -> dict:
    """Run one side; its wall seconds, last val loss and the per-iteration ms (iteration 0, which compiles, left out)."""
    with tempfile.TemporaryDirectory() as out_dir:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, script, *README_ARGS, *args, f"--out_dir={out_dir}"], cwd=ROOT,
                              capture_output=True, text=True)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"error: {script} failed (rc {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    iters = [(int(i), float(ms)) for i, ms in re.findall(r"^iter (\d+): loss [\d.]+, time ([\d.]+)ms", proc.stdout, re.M)]
    vals = re.findall(r"^step \d+: train loss [\d.]+, val loss ([\d.]+)", proc.stdout, re.M)
    return {"wall": wall, "val": float(vals[-1]) if vals else float("nan"), "ms": np.array([ms for i, ms in iters if i > 0])}


def main(args: list[str]):
    results = {}
    for name, script in (("nanogpt-tg", "train.py"), ("torch", "tools/torch_train.py")):
        r = results[name] = run(script, args)
        p10, p50, p90 = np.percentile(r["ms"], [10, 50, 90])
        print(f"{name}: wall {r['wall']:.1f} s, val loss {r['val']:.4f}, per-iteration ms p10 {p10:.1f} / median "
              f"{p50:.1f} / p90 {p90:.1f} (p90/p10 {p90 / p10:.2f}, {len(r['ms'])} iterations)", flush=True)
    print(f"wall-time ratio nanogpt-tg / torch: {results['nanogpt-tg']['wall'] / results['torch']['wall']:.2f} "
          f"(below 1: nanogpt-tg finished first)")


if __name__ == "__main__":
    if any(a in ("-h", "--help") for a in sys.argv[1:]):
        print(__doc__)
        sys.exit(0)
    main(sys.argv[1:])
