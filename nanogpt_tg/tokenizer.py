"""Character-level tokenizer: the stoi/itos maps of nanoGPT's data/shakespeare_char/prepare.py, kept as JSON."""
import json
from pathlib import Path


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
        return {"vocab_size": self.vocab_size, "itos": self.itos, "stoi": self.stoi}

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
