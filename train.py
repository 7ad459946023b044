"""Train a GPT, nanoGPT style: python train.py [preset.py] [--key=value ...]; see --help for the keys."""
if __name__ == "__main__":
    from nanogpt_tg import interrupt

    interrupt.install("nothing to save yet")  # first: a Ctrl-C or SIGTERM in the imports (seconds) ends with a line
    from nanogpt_tg.config import TrainConfig, cli
    from nanogpt_tg.cli import run

    cfg = cli(TrainConfig, "train.py", "[config/PRESET.py] [--key=value ...]")
    from nanogpt_tg.train import train

    run(train, cfg)
