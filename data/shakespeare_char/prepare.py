"""Prepare the Shakespeare dataset for character-level language modeling (nanoGPT's data/shakespeare_char/prepare.py).

Downloads the tiny shakespeare text when input.txt is missing, or reads --input PATH (for machines with no network).
Writes train.bin and val.bin (uint16 token ids) and meta.json (the vocabulary) next to this script.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from anywhere in a checkout
from nanogpt_tg.fsio import not_a_file, write_bytes  # noqa: E402
from nanogpt_tg.prepare import SHAKESPEARE_URL, download, prepare_file  # noqa: E402

HERE = Path(__file__).resolve().parent


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", help="a local copy of input.txt (no download)")
    args = parser.parse_args()
    input_file_path = HERE / "input.txt"
    if args.input:
        if not Path(args.input).is_file():
            sys.exit(f"error: --input {args.input} {not_a_file(args.input)}; give the path of tiny shakespeare's input.txt")
        if Path(args.input).resolve() != input_file_path:
            write_bytes(input_file_path, Path(args.input).read_bytes())
    elif not input_file_path.exists():
        try:
            download(SHAKESPEARE_URL, input_file_path)
        except OSError as e:
            sys.exit(f"error: {e}: python data/shakespeare_char/prepare.py --input PATH/TO/input.txt")
    try:
        prepare_file(input_file_path, HERE)
    except (FileNotFoundError, ValueError, OSError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
