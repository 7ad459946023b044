"""Sample from a trained model, nanoGPT style: python sample.py --out_dir=out-shakespeare-char [--key=value ...]."""
from nanogpt_tg.config import SampleConfig, cli
from nanogpt_tg.cli import run

if __name__ == "__main__":
    cfg = cli(SampleConfig, "sample.py", "[--key=value ...]")
    from nanogpt_tg.sample import sample

    run(sample, cfg)
