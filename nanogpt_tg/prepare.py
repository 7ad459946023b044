"""Turn any UTF-8 text file into a character-level dataset: python -m nanogpt_tg.prepare --input FILE --dataset NAME.

With --tokenizer=bpe --vocab_size=N the tokens are byte-level BPE, trained on the text (nanogpt_tg/bpe.py).
"""
import argparse
import urllib.request
from pathlib import Path

from .bpe import BPETokenizer
from .cli import run
from .data import dataset_dir, prepare_text, read_text
from .fsio import not_a_file, write_bytes
from .progress import Progress

SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"


def download(url: str, path: str | Path) -> Path:
    """Fetch url into path (a byte counter on a terminal); an OSError that says how to do without a network."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"downloading {url}")
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            bar, chunks = Progress(int(r.headers.get("Content-Length") or 0), "downloading", unit="bytes"), []
            while chunk := r.read(1 << 16):
                chunks.append(chunk)
                bar.update(len(chunk))
            bar.close()
    except OSError as e:
        raise OSError(f"could not download {url} ({e}); with no network, give a local copy of the file instead") from None
    write_bytes(path, b"".join(chunks))
    return path


def prepare_file(input_path: str | Path, out_dir: str | Path, block_size: int = 256, tokenizer: str = "char",
                 vocab_size: int = 1024) -> dict:
    """Read input_path (UTF-8), write train.bin, val.bin and meta.json into out_dir, and report the counts."""
    text = read_text(input_path)
    print(f"length of dataset in characters: {len(text):,}")
    tok = None
    if tokenizer == "bpe":  # trained on the train split only; <|endoftext|> separates documents as in GPT-2
        train_text = text[: int(len(text) * 0.9)]
        tok = BPETokenizer.train(train_text, vocab_size, special_tokens=["<|endoftext|>"], verbose=True)
    elif tokenizer != "char":
        raise ValueError(f"--tokenizer={tokenizer} is not known; use char or bpe")
    counts = prepare_text(text, out_dir, block_size=block_size, tokenizer=tok)
    print(f"vocab size: {counts['vocab_size']:,}")
    print(f"train has {counts['train_tokens']:,} tokens")
    print(f"val has {counts['val_tokens']:,} tokens")
    print(f"wrote {Path(out_dir)}/train.bin, val.bin, meta.json; train with --dataset={Path(out_dir).name}")
    return counts


def shakespeare_text(input_path: str | None, input_file_path: Path, script: str) -> Path:
    """Tiny Shakespeare's input.txt at input_file_path: a copy of input_path, else the one already there, else
    downloaded (script: the prepare command, named in the error that says to pass --input instead)."""
    if input_path:
        if not Path(input_path).is_file():
            raise FileNotFoundError(f"--input {input_path} {not_a_file(input_path)}; give the path of tiny "
                                    "shakespeare's input.txt")
        input_file_path.parent.mkdir(parents=True, exist_ok=True)
        if Path(input_path).resolve() != input_file_path.resolve():
            write_bytes(input_file_path, Path(input_path).read_bytes())
    elif not input_file_path.exists():
        try:
            download(SHAKESPEARE_URL, input_file_path)
        except OSError as e:
            raise OSError(f"{e}: python {script} --input PATH/TO/input.txt") from None
    return input_file_path


def dataset_parser(prog: str, description: str, input_help: str) -> argparse.ArgumentParser:
    """The arguments every prepare command takes: --input, --dataset, --block_size."""
    parser = argparse.ArgumentParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help=input_help)
    parser.add_argument("--dataset", required=True, help="dataset name: files go to data/NAME/, train with --dataset=NAME")
    parser.add_argument("--block_size", type=int, default=256, help="refuse texts too short for one block (default 256)")
    return parser


def main(argv: list[str] | None = None):
    parser = dataset_parser("python -m nanogpt_tg.prepare", __doc__, "a UTF-8 text file")
    parser.add_argument("--tokenizer", choices=["char", "bpe"], default="char", help="char or byte-level bpe")
    parser.add_argument("--vocab_size", type=int, default=1024, help="bpe only: tokens in all (default 1024)")
    args = parser.parse_args(argv)
    run(lambda: prepare_file(args.input, dataset_dir(args.dataset), args.block_size, args.tokenizer, args.vocab_size))


if __name__ == "__main__":
    main()
