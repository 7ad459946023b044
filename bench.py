"""Benchmark training and sampling against PyTorch nanoGPT: python bench.py [--key=value ...]; see --help for the keys."""
if __name__ == "__main__":
    from nanogpt_tg import interrupt

    interrupt.install()  # first: a Ctrl-C or SIGTERM in the imports (seconds) ends with a line
    from nanogpt_tg.config import cli
    from nanogpt_tg.cli import run
    from nanogpt_tg.bench import BenchConfig

    cfg = cli(BenchConfig, "bench.py", "[--key=value ...]")
    from nanogpt_tg.bench import bench

    run(bench, cfg)
