"""Train a GPT, nanoGPT style: python train.py [preset.py] [--key=value ...]; see --help for the keys."""
if __name__ == "__main__":
    from nanogpt_tg import interrupt

    interrupt.install()  # first: a Ctrl-C or SIGTERM during the imports (seconds) ends with a line, not silently
    from nanogpt_tg.config import TrainConfig, cli
    from nanogpt_tg.cli import run

    cfg = cli(TrainConfig, "train.py", "[config/PRESET.py] [--key=value ...]")
    from nanogpt_tg.train import train

    run(train, cfg)
