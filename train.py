"""Train a GPT, nanoGPT style: python train.py [preset.py] [--key=value ...]; see --help for the keys."""
from nanogpt_tg.config import TrainConfig, cli
from nanogpt_tg.cli import run

if __name__ == "__main__":
    cfg = cli(TrainConfig, "train.py", "[config/PRESET.py] [--key=value ...]")
    from nanogpt_tg.train import train

    run(train, cfg)
