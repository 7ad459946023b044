"""Sample from a trained model, nanoGPT style: python sample.py --out_dir=out-shakespeare-char [--key=value ...]."""
if __name__ == "__main__":
    from nanogpt_tg import interrupt

    interrupt.install()  # first: a Ctrl-C or SIGTERM in the imports (seconds) ends with a line
    from nanogpt_tg.config import SampleConfig, cli
    from nanogpt_tg.cli import run

    cfg = cli(SampleConfig, "sample.py", "[--key=value ...]")
    from nanogpt_tg.sample import sample

    run(sample, cfg)
