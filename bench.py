"""Benchmark training and sampling against PyTorch nanoGPT: python bench.py [--key=value ...]; see --help for the keys."""
from nanogpt_tg.config import cli
from nanogpt_tg.cli import run
from nanogpt_tg.bench import BenchConfig

if __name__ == "__main__":
    cfg = cli(BenchConfig, "bench.py", "[--key=value ...]")
    from nanogpt_tg.bench import bench

    run(bench, cfg)
