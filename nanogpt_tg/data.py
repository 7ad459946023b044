"""Datasets: text to uint16 token files (nanoGPT's prepare.py), and training windows at random offsets (nanoGPT's get_batch)."""
import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from tinygrad import Tensor, dtypes

from .fsio import not_a_file, staged
from .progress import Progress
from .tokenizer import CharTokenizer, Tokenizer
from .compat.torch_rng import TorchGenerator


def prepare_text(text: str, out_dir: str | Path, block_size: int = 256, tokenizer: Tokenizer | None = None) -> dict:
    """Write train.bin / val.bin (uint16 tokens, first 90% / last 10%) and meta.json into out_dir.

    The tokenizer defaults to the text's characters. Refuses a text whose validation split cannot fill one block of
    block_size + 1 tokens. Returns the counts.
    """
    tok = CharTokenizer.from_text(text) if tokenizer is None else tokenizer
    check_fits_uint16(tok)
    n = len(text)
    train_data, val_data = text[: int(n * 0.9)], text[int(n * 0.9) :]
    train_ids, val_ids = encode_array(tok, train_data, "encoding train"), encode_array(tok, val_data, "encoding val")
    check_fills_a_block(len(val_ids), block_size, n)
    with dataset_files(out_dir) as files:
        train_ids.tofile(files["train"])
        val_ids.tofile(files["val"])
        files["meta"].write(meta_json(tok))
    return {"vocab_size": tok.vocab_size, "train_tokens": len(train_ids), "val_tokens": len(val_ids)}


def check_fits_uint16(tok: Tokenizer):
    if tok.vocab_size > 2**16:
        raise ValueError(f"the vocabulary has {tok.vocab_size} tokens; token files hold uint16, at most 65536")


def check_fills_a_block(val_tokens: int, block_size: int, n_chars: int):
    """Refuse a text whose validation split (val_tokens of n_chars characters) cannot fill one block + 1."""
    if val_tokens < block_size + 1:
        raise ValueError(f"text too short: {n_chars:,} characters give a validation split of {val_tokens:,} tokens, "
                         f"but one block needs block_size + 1 = {block_size + 1}; use a longer text "
                         f"(at least {10 * (block_size + 1):,} characters) or a smaller --block_size")


@contextmanager
def dataset_files(out_dir: str | Path):
    """Yields {"train", "val", "meta"}: binary files for train.bin, val.bin and meta.json in out_dir, written all or
    none (fsio.staged). The old meta.json goes first and the new one comes last, so a dataset that a crash left half
    replaced has no meta.json and is refused as not prepared, never trained on with another vocabulary."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = {"train": "train.bin", "val": "val.bin", "meta": "meta.json"}
    with staged([out_dir / n for n in names.values()], marker=out_dir / "meta.json") as files:
        yield {k: files[out_dir / n] for k, n in names.items()}


def meta_json(tok: Tokenizer) -> bytes:
    """A tokenizer's meta.json, as bytes."""
    return json.dumps(tok.meta(), ensure_ascii=False, indent=1).encode("utf-8")


def dataset_dir(name: str) -> Path:
    """data/NAME for a dataset name: one plain directory name (not empty, no path separators)."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ValueError(f"--dataset={name!r} is not a dataset name; give a plain name such as shakespeare_char "
                         "(its files go to data/NAME/)")
    return Path("data") / name


def encode_array(tok: Tokenizer, text: str, desc: str = "encoding") -> np.ndarray:
    """Token ids of text as uint16; characters a million at a time, with a progress counter on a terminal."""
    if not isinstance(tok, CharTokenizer):  # BPE merges may span a chunk boundary: encode whole
        return np.array(tok.encode(text), dtype=np.uint16)
    bar, chunk, parts = Progress(len(text), desc, unit="chars"), 1 << 20, []
    for i in range(0, len(text), chunk):
        parts.append(np.array(tok.encode(text[i : i + chunk]), dtype=np.uint16))
        bar.update(len(parts[-1]))
    bar.close()
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)


def read_text(path: str | Path, flag: str = "--input") -> str:
    """A UTF-8 text file, every character kept; a clear error, naming the flag that gave it, for a missing or
    non-UTF-8 file."""
    path = Path(path)
    what = f"input file {path}" if flag == "--input" else f"{flag}{path}: {path}"
    if not path.is_file():
        raise FileNotFoundError(f"{what} {not_a_file(path)}; give {flag} the path of an existing UTF-8 text file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{what} is not UTF-8 text ({e.reason} at byte {e.start}); convert it to UTF-8 first") from None


def load_split(data_dir: str | Path, split: str, vocab_size: int | None = None) -> Tensor:
    """A token file as a 1-D uint16 tensor on the default device; given vocab_size, every id is checked below it."""
    path = Path(data_dir) / f"{split}.bin"
    if not path.is_file():
        raise FileNotFoundError(f"{path} {not_a_file(path)}; prepare the dataset first, e.g. "
                                f"`python data/shakespeare_char/prepare.py` or `python -m nanogpt_tg.prepare --input FILE "
                                f"--dataset {Path(data_dir).name}`")
    if path.stat().st_size < 4 or path.stat().st_size % 2:
        raise ValueError(f"{path} is not a uint16 token file ({path.stat().st_size} bytes); prepare the dataset again")
    if vocab_size is not None:  # one pass over the file: an id past the vocabulary would index outside the embedding
        top = int(np.memmap(path, dtype=np.uint16, mode="r").max())
        if top >= vocab_size:
            raise ValueError(f"{path} holds token id {top}, but its vocabulary (meta.json) has {vocab_size} tokens; "
                             "the files do not belong together: prepare the dataset again")
    return Tensor(path, dtype=dtypes.uint16).to(None).realize()


def random_offsets(gen: TorchGenerator, n_tokens: int, batch_size: int, block_size: int) -> np.ndarray:
    """nanoGPT's ix = torch.randint(len(data) - block_size, (batch_size,)): batch_size window starts, int32, from gen."""
    return gen.randint(n_tokens - block_size, batch_size).astype(np.int32)


def get_batch(data: Tensor, ix: Tensor, block_size: int) -> tuple[Tensor, Tensor]:
    """The windows of data at the offsets ix (int32, (B,)); y is x shifted left by one. Both (B, block_size) int32.

    Gathered on the device, so it can live inside a jitted step that reads ix from a buffer (random_offsets)."""
    batch_size = ix.shape[0]
    assert data.shape[0] > block_size, f"{data.shape[0]} tokens cannot fill a block of {block_size} + 1"
    offsets = ix.reshape(batch_size, 1) + Tensor.arange(block_size + 1, dtype=dtypes.int32).reshape(1, -1)
    windows = data[offsets.flatten()].reshape(batch_size, block_size + 1).cast(dtypes.int32)
    return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()
