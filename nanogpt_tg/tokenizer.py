"""Character-level tokenizer: the stoi/itos maps of nanoGPT's data/shakespeare_char/prepare.py, kept as JSON.

Every tokenizer here has encode, decode, vocab_size and meta(); load() and from_meta() pick the class from meta's
"tokenizer" field ("char", or "bpe" for nanogpt_tg.bpe.BPETokenizer).
"""
import json
from pathlib import Path
from typing import Protocol

from .bpe import BPETokenizer


class CharTokenizer:
    def __init__(self, chars: list[str]):
        assert len(set(chars)) == len(chars), "vocabulary has repeated characters"
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
    def from_meta(cls, meta: dict) -> "CharTokenizer":
        itos = meta["itos"]
        if isinstance(itos, dict):  # nanoGPT's {int: char} form
            itos = [itos[i] for i in sorted(itos, key=int)]
        return cls(itos)

    @classmethod
    def load(cls, path: str | Path) -> "CharTokenizer":
        """Read a meta.json written by prepare."""
        return cls.from_meta(json.loads(Path(path).read_text(encoding="utf-8")))


class Tokenizer(Protocol):
    """What train.py, sample.py and prepare need of a tokenizer."""

    vocab_size: int

    def encode(self, s: str) -> list[int]: ...

    def decode(self, ids) -> str: ...

    def meta(self) -> dict: ...


def from_meta(meta: dict) -> Tokenizer:
    """The tokenizer that meta describes; meta without a "tokenizer" field (nanoGPT's meta.pkl form) is char-level."""
    kind = meta.get("tokenizer", "char")
    if kind == "char":
        return CharTokenizer.from_meta(meta)
    if kind == "bpe":
        return BPETokenizer.from_meta(meta)
    raise ValueError(f"unknown tokenizer {kind!r}; this version reads 'char' and 'bpe': prepare the dataset again")


def load(path: str | Path) -> Tokenizer:
    """Read a meta.json written by prepare, whichever tokenizer it holds."""
    return from_meta(json.loads(Path(path).read_text(encoding="utf-8")))
