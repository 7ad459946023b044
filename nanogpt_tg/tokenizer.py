"""Character-level tokenizer: the stoi/itos maps of nanoGPT's data/shakespeare_char/prepare.py, kept as JSON.

Every tokenizer here has encode, decode, vocab_size and meta(); load() and from_meta() pick the class from meta's
"tokenizer" field ("char", or "bpe" for nanogpt_tg.bpe.BPETokenizer).
"""
from pathlib import Path
from typing import Protocol

from .bpe import BPETokenizer
from .schema import CheckpointError, check_vocabulary, read_json


class CharTokenizer:
    def __init__(self, chars: list[str]):
        if len(set(chars)) != len(chars):
            raise ValueError("the vocabulary has repeated characters; prepare the dataset again")
        self.itos = list(chars)
        self.stoi = {ch: i for i, ch in enumerate(self.itos)}

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        """The vocabulary of a text: all the unique characters that occur in it, sorted."""
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, s: str) -> list[int]:
        """String to token ids; a character outside the vocabulary raises a ValueError naming it."""
        try:
            return [self.stoi[c] for c in s]
        except KeyError:
            missing = sorted(set(s) - set(self.stoi))
            raise ValueError(f"characters not in the vocabulary: {', '.join(map(repr, missing))}; "
                             f"this model knows {self.vocab_size} characters: {''.join(self.itos)!r}") from None

    def decode(self, ids) -> str:
        """Token ids to string."""
        return "".join(self.itos[int(i)] for i in ids)

    def meta(self) -> dict:
        """The vocabulary as nanoGPT's meta.pkl holds it, in JSON-able form."""
        return {"tokenizer": "char", "vocab_size": self.vocab_size, "itos": self.itos, "stoi": self.stoi}

    @classmethod
    def from_meta(cls, meta: dict, path: str | Path = "vocabulary") -> "CharTokenizer":
        return cls(check_vocabulary(meta, path)["itos"])  # nanoGPT's {int: char} itos becomes a list

    @classmethod
    def load(cls, path: str | Path) -> "CharTokenizer":
        """Read a meta.json written by prepare."""
        return cls.from_meta(read_json(path), path)


class Tokenizer(Protocol):
    """What train.py, sample.py and prepare need of a tokenizer."""

    vocab_size: int

    def encode(self, s: str) -> list[int]: ...

    def decode(self, ids) -> str: ...

    def meta(self) -> dict: ...


def from_meta(meta: dict, path: str | Path = "vocabulary") -> Tokenizer:
    """The tokenizer that meta describes; meta without a "tokenizer" field (nanoGPT's meta.pkl form) is char-level.
    A meta that does not fit the schema (schema.check_vocabulary) is a CheckpointError naming path and the field."""
    meta = check_vocabulary(meta, path)
    if meta.get("tokenizer", "char") == "char":
        return CharTokenizer.from_meta(meta, path)
    try:
        return BPETokenizer.from_meta(meta)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None


def load(path: str | Path) -> Tokenizer:
    """Read a meta.json written by prepare, whichever tokenizer it holds."""
    return from_meta(read_json(path), path)
