"""Prepare the Shakespeare dataset for character-level language modeling (nanoGPT's data/shakespeare_char/prepare.py).

Downloads the tiny shakespeare text when input.txt is missing, or reads --input PATH (for machines with no network).
Writes train.bin and val.bin (uint16 token ids) and meta.json (the vocabulary) next to this script.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from anywhere in a checkout
from nanogpt_tg.cli import run  # noqa: E402
from nanogpt_tg.prepare import prepare_file, shakespeare_text  # noqa: E402

HERE = Path(__file__).resolve().parent


def prepare(input_path: str | None):
    """input.txt from input_path, else the one here, else downloaded; then the dataset beside this script."""
    prepare_file(shakespeare_text(input_path, HERE / "input.txt", "data/shakespeare_char/prepare.py"), HERE)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", help="a local copy of input.txt (no download)")
    run(prepare, parser.parse_args().input)
