"""Turn a text too large for memory into a dataset, streaming: python -m nanogpt_tg.prepare_large --input FILE --dataset NAME.

nanoGPT's data/openwebtext/prepare.py, for one big UTF-8 file: the text is read chunk_size characters at a time, never
whole. A first pass counts the characters (and collects the character vocabulary); the second encodes each chunk and
appends its tokens to train.bin (the first 90% of the characters) or val.bin (the rest). The files are the same as
`python -m nanogpt_tg.prepare` would write. --tokenizer=FILE.json uses a saved tokenizer instead, e.g. GPT-2's:
`BPETokenizer.from_gpt2_files("vocab.json", "merges.txt").save("gpt2.json")`. prepare_documents streams documents
instead (data/openwebtext/prepare.py).
"""
import math
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from . import tokenizer as tokenizers
from .cli import run
from .data import check_fills_a_block, check_fits_uint16, dataset_dir, dataset_files, meta_json
from .fsio import not_a_file
from .prepare import dataset_parser
from .progress import Progress
from .tokenizer import CharTokenizer


def read_chunks(path: Path, chunk_size: int, start: int = 0, stop: int | None = None) -> Iterator[str]:
    """Characters [start, stop) of a UTF-8 file, at most chunk_size at a time (newlines read as read_text does)."""
    with open(path, encoding="utf-8") as f:
        pos = 0
        while pos < start:  # skip, a chunk at a time
            pos += len(f.read(min(chunk_size, start - pos)))
        while stop is None or pos < stop:
            chunk = f.read(chunk_size if stop is None else min(chunk_size, stop - pos))
            if not chunk:
                return
            pos += len(chunk)
            yield chunk


def safe_pieces(chunks: Iterator[str]) -> Iterator[str]:
    """Re-cut chunks just before a newline that follows a non-space character. No piece of GPT-2's pre-split holds
    a non-space then a space, and none looks behind, so the pre-split (and so the BPE tokens) of the pieces is that
    of the whole text. (Cutting after the newline would not do: a piece ending in "\n\n" makes one token of it.)
    A text with no such newline is held whole until one comes."""
    carry = ""
    for chunk in chunks:
        text = carry + chunk
        cut = text.rfind("\n")
        while cut > 0 and text[cut - 1].isspace():
            cut = text.rfind("\n", 0, cut)
        cut = max(cut, 0)
        carry, piece = text[cut:], text[:cut]
        if piece:
            yield piece
    if carry:
        yield carry


def prepare_large(input_path: str | Path, out_dir: str | Path, tokenizer: str = "char", chunk_size: int = 1 << 22,
                  block_size: int = 256) -> dict:
    """Stream input_path into out_dir/train.bin, val.bin (uint16) and meta.json; returns the counts."""
    path, out_dir = Path(input_path), Path(out_dir)
    if chunk_size < 1:
        raise ValueError(f"--chunk_size={chunk_size} must be at least 1")
    if not path.is_file():
        raise FileNotFoundError(f"input file {path} {not_a_file(path)}; pass --input with the path of a UTF-8 text file")
    # first pass: the number of characters, and the character vocabulary
    n, chars = 0, set()
    try:
        for chunk in read_chunks(path, chunk_size):
            n += len(chunk)
            if tokenizer == "char":
                chars.update(chunk)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text ({e.reason}); convert it to UTF-8 first") from None
    print(f"length of dataset in characters: {n:,}")
    tok = CharTokenizer(sorted(chars)) if tokenizer == "char" else tokenizers.load(tokenizer)
    if getattr(tok, "pattern", "gpt2") != "gpt2":
        raise ValueError(f"{tokenizer} has no GPT-2 pre-split, so its tokens may span any cut; prepare this text whole "
                         "with python -m nanogpt_tg.prepare")
    check_fits_uint16(tok)
    # second pass: encode and append, train then val, split where prepare_text splits; all three files or none
    split, counts = int(n * 0.9), {}
    bar = Progress(n, "encoding", unit="chars")
    with dataset_files(out_dir) as files:
        for name, start, stop in (("train", 0, split), ("val", split, n)):
            counts[name] = 0
            pieces = read_chunks(path, chunk_size, start, stop)
            for piece in pieces if isinstance(tok, CharTokenizer) else safe_pieces(pieces):
                ids = np.array(tok.encode(piece), dtype=np.uint16)
                ids.tofile(files[name])
                counts[name] += len(ids)
                bar.update(len(piece))
        bar.close()
        check_fills_a_block(counts["val"], block_size, n)
        files["meta"].write(meta_json(tok))
    print(f"vocab size: {tok.vocab_size:,}\ntrain has {counts['train']:,} tokens\nval has {counts['val']:,} tokens")
    print(f"wrote {out_dir}/train.bin, val.bin, meta.json; train with --dataset={out_dir.name}")
    return {"vocab_size": tok.vocab_size, "train_tokens": counts["train"], "val_tokens": counts["val"]}


def prepare_documents(docs: Iterable[str], out_dir: str | Path, tok, val_fraction: float = 0.0005, total: int = 0,
                      flush_tokens: int = 1 << 20) -> dict:
    """Documents into out_dir/train.bin and val.bin (uint16) and meta.json, streaming, as nanoGPT's
    data/openwebtext/prepare.py: each document's tokens (special tokens in it read as text) end with <|endoftext|>,
    and val_fraction of the documents, spread evenly, go to val. All three files or none (dataset_files), so an
    interrupted run leaves no half file. total: the number of documents, for the progress counter."""
    eot = tok.special_tokens.get("<|endoftext|>")
    if eot is None:
        raise ValueError("the tokenizer has no <|endoftext|> token to end documents with; use GPT-2's")
    check_fits_uint16(tok)
    counts, docs_in, buffers = {"train": 0, "val": 0}, {"train": 0, "val": 0}, {"train": [], "val": []}
    with dataset_files(out_dir) as files:
        bar = Progress(total, "tokenizing", unit="documents")
        for i, text in enumerate(docs):
            split = "val" if math.floor((i + 1) * val_fraction) > math.floor(i * val_fraction) else "train"
            ids = tok.encode(text, allowed_special=False) + [eot]
            buffers[split] += ids
            counts[split] += len(ids)
            docs_in[split] += 1
            if len(buffers[split]) >= flush_tokens:
                np.array(buffers[split], dtype=np.uint16).tofile(files[split])
                buffers[split] = []
            bar.update()
        bar.close()
        if docs_in["val"] == 0 or docs_in["train"] == 0:
            raise ValueError(f"{sum(docs_in.values())} documents with --val_fraction={val_fraction} leave "
                             f"{'val' if docs_in['val'] == 0 else 'train'} empty; give more documents or another "
                             "--val_fraction")
        for split in ("train", "val"):
            np.array(buffers[split], dtype=np.uint16).tofile(files[split])
        files["meta"].write(meta_json(tok))
    print(f"train has {counts['train']:,} tokens ({docs_in['train']:,} documents)")
    print(f"val has {counts['val']:,} tokens ({docs_in['val']:,} documents)")
    return {"vocab_size": tok.vocab_size, "train_tokens": counts["train"], "val_tokens": counts["val"]}


def main(argv: list[str] | None = None):
    parser = dataset_parser("python -m nanogpt_tg.prepare_large", __doc__, "a UTF-8 text file, of any size")
    parser.add_argument("--tokenizer", default="char", help="char (default), or a tokenizer JSON file (tokenizer.save)")
    parser.add_argument("--chunk_size", type=int, default=1 << 22, help="characters read at a time (default 4M)")
    args = parser.parse_args(argv)
    run(lambda: prepare_large(args.input, dataset_dir(args.dataset), args.tokenizer, args.chunk_size, args.block_size))


if __name__ == "__main__":
    main()
