"""Byte-level BPE tokenizer: GPT-2's (OpenAI's encoder.py, which nanoGPT reaches through tiktoken), trainable.

Trains on any text by counting pairs over the unique pre-split words and updating the counts after each merge,
encodes lowest-rank-first exactly as GPT-2 does, reads GPT-2's published vocab.json + merges.txt, and saves as JSON.
"""
import heapq
import json
import re
import time
import unicodedata
from collections import Counter, defaultdict
from functools import lru_cache
from pathlib import Path

from .fsio import write_text
from .schema import read_json

# GPT-2's pre-split, as published; gpt2_split() spells out \p{L}, \p{N} and \s so Python's re can run it
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
PATTERNS = ("gpt2", None)  # None: no pre-split, merges may cross word boundaries


def _ranges(codepoints) -> str:
    """The body of a re character class holding these (sorted) code points, as a-b ranges."""
    out, start, prev = [], None, None
    for c in list(codepoints) + [None]:
        if start is not None and (c is None or c != prev + 1):
            out.append(re.escape(chr(start)) + (f"-{re.escape(chr(prev))}" if prev > start else ""))
            start = None
        if start is None:
            start = c
        prev = c
    return "".join(out)


@lru_cache(maxsize=None)
def gpt2_split() -> re.Pattern:
    """GPT-2's pre-split regex for Python's re (the regex package is not needed): letters, numbers and whitespace
    are listed from the unicodedata tables. The regex package's \\s leaves out U+001C..U+001F and so does this."""
    cats = [unicodedata.category(chr(c))[0] for c in range(0x110000)]
    L = _ranges(c for c, cat in enumerate(cats) if cat == "L")
    N = _ranges(c for c, cat in enumerate(cats) if cat == "N")
    S = _ranges(c for c in range(0x110000) if chr(c).isspace() and not 0x1C <= c <= 0x1F)
    return re.compile(rf"'s|'t|'re|'ve|'m|'ll|'d| ?[{L}]+| ?[{N}]+| ?[^{S}{L}{N}]+|[{S}]+(?![^{S}])|[{S}]+")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from the 256 bytes to printable characters, the alphabet of its vocab.json and merges.txt."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _special_split(special_tokens) -> re.Pattern | None:
    """A regex that cuts text around the special tokens, longest first, or None if there are none."""
    if not special_tokens:
        return None
    return re.compile("(" + "|".join(re.escape(s) for s in sorted(special_tokens, key=len, reverse=True)) + ")")


class BPETokenizer:
    """Byte-level BPE: an id for each of the 256 bytes, merges (a, b) -> new in rank order, special tokens apart.

    Merge r may only use tokens made before it, so encoding lowest-rank-first is well defined; special token ids
    collide with no byte or merge.
    """

    def __init__(self, merges, byte_ids=None, special_tokens: dict[str, int] | None = None,
                 pattern: str | None = "gpt2"):
        if pattern not in PATTERNS:
            raise ValueError(f"pattern={pattern!r} is not supported; use 'gpt2' (GPT-2's pre-split) or None (none)")
        self.byte_ids = list(range(256)) if byte_ids is None else [int(i) for i in byte_ids]
        self.merges = [(int(a), int(b), int(new)) for a, b, new in merges]
        self.special_tokens = dict(special_tokens or {})
        self.pattern = pattern
        if len(self.byte_ids) != 256 or len(set(self.byte_ids)) != 256:
            raise ValueError(f"byte_ids must give 256 distinct ids, one per byte (got {len(set(self.byte_ids))})")
        self.vocab = {i: bytes([b]) for b, i in enumerate(self.byte_ids)}  # token id -> its bytes
        self.ranks = {}  # (a, b) -> rank
        for r, (a, b, new) in enumerate(self.merges):
            if a not in self.vocab or b not in self.vocab:
                raise ValueError(f"merge {r} ({a}, {b}) uses a token that no byte or earlier merge makes")
            if new in self.vocab or (a, b) in self.ranks:
                raise ValueError(f"merge {r} ({a}, {b}) -> {new} repeats an earlier token or merge")
            self.ranks[(a, b)] = r
            self.vocab[new] = self.vocab[a] + self.vocab[b]
        for s, i in self.special_tokens.items():
            if not s or i in self.vocab:
                raise ValueError(f"special token {s!r} has id {i}, which a byte or a merge already uses")
        if len(set(self.special_tokens.values())) != len(self.special_tokens):
            raise ValueError(f"two special tokens share an id: {self.special_tokens}")
        self.decoder = {**self.vocab, **{i: s.encode("utf-8") for s, i in self.special_tokens.items()}}
        self.vocab_size = max(self.decoder) + 1
        self._special = _special_split(self.special_tokens)
        self._cache: dict[str, list[int]] = {}

    # --- training

    @classmethod
    def train(cls, text: str, vocab_size: int, pattern: str | None = "gpt2", special_tokens=(),
              verbose: bool = False) -> "BPETokenizer":
        """Learn vocab_size - 256 - len(special_tokens) merges from text: each step merges the most frequent pair,
        ties going to the smallest (a, b). Pairs never cross pre-split words or special tokens."""
        num_merges = vocab_size - 256 - len(special_tokens)
        if num_merges < 0:
            raise ValueError(f"vocab_size={vocab_size} leaves no room for the 256 bytes and {len(special_tokens)} "
                             f"special tokens; use --vocab_size={256 + len(special_tokens)} or more")
        if pattern not in PATTERNS:
            raise ValueError(f"pattern={pattern!r} is not supported; use 'gpt2' or None")
        t0 = time.time()
        # the unique words and how often each occurs: merges are counted per word, not per occurrence
        split = _special_split(special_tokens)
        parts = split.split(text)[::2] if split else [text]  # even pieces are text, odd ones the special tokens
        chunks = Counter()
        for part in parts:
            chunks.update(gpt2_split().findall(part) if pattern == "gpt2" else [part] if part else [])
        words = [list(w.encode("utf-8")) for w in chunks]
        counts = list(chunks.values())
        stats = defaultdict(int)  # pair -> occurrences in the text
        where = defaultdict(set)  # pair -> indices of the words that hold it (may list words that lost it since)
        for wi, (w, c) in enumerate(zip(words, counts)):
            for pair in zip(w, w[1:]):
                stats[pair] += c
                where[pair].add(wi)
        heap = [(-c, pair) for pair, c in stats.items()]  # max count first, then the smallest pair
        heapq.heapify(heap)
        merges = []
        while len(merges) < num_merges:
            while heap:  # pop until an entry still holds its pair's current count
                negc, pair = heapq.heappop(heap)
                if stats.get(pair) == -negc:
                    break
            else:
                break  # no pair left: every word is a single token
            new = 256 + len(merges)
            merges.append((pair[0], pair[1], new))
            touched = set()
            for wi in where.pop(pair):
                w, c = words[wi], counts[wi]
                merged = _merge(w, pair, new)
                if len(merged) == len(w):
                    continue
                for p in zip(w, w[1:]):  # incremental update: take the word's old pairs out, put the new ones in
                    stats[p] -= c
                    touched.add(p)
                for p in zip(merged, merged[1:]):
                    stats[p] += c
                    where[p].add(wi)
                    touched.add(p)
                words[wi] = merged
            del stats[pair]
            touched.discard(pair)
            for p in touched:
                if stats[p] > 0:
                    heapq.heappush(heap, (-stats[p], p))
                else:
                    del stats[p]
        specials = {s: 256 + len(merges) + i for i, s in enumerate(special_tokens)}
        if verbose:
            short = f"; the text ran out of pairs before {num_merges}" if len(merges) < num_merges else ""
            print(f"trained {len(merges)} merges on {len(text):,} characters ({len(words):,} unique words) "
                  f"in {time.time() - t0:.2f}s{short}")
        return cls(merges, None, specials, pattern)

    # --- encoding and decoding

    def encode(self, text: str, allowed_special: bool = True) -> list[int]:
        """String to token ids. Special tokens in the text become their ids unless allowed_special is False."""
        parts = self._special.split(text) if self._special and allowed_special else [text]
        ids = []
        for k, part in enumerate(parts):
            if k % 2:  # re.split puts the separators (the special tokens) at odd positions
                ids.append(self.special_tokens[part])
                continue
            for chunk in (gpt2_split().findall(part) if self.pattern == "gpt2" else [part] if part else []):
                cached = self._cache.get(chunk)
                if cached is None:
                    if len(self._cache) >= 100_000:
                        self._cache.clear()
                    cached = self._cache[chunk] = self._bpe(chunk.encode("utf-8"))
                ids.extend(cached)
        return ids

    def _bpe(self, data: bytes) -> list[int]:
        """Merge the bytes of one pre-split word lowest rank first, leftmost first among equals, as GPT-2's bpe().

        A heap of (rank, position) over a linked list: O(n log n), where GPT-2's rescans are O(n^2) on long words.
        """
        ids = [self.byte_ids[b] for b in data]
        n, ranks = len(ids), self.ranks
        nxt, prv = list(range(1, n + 1)), list(range(-1, n - 1))
        heap = [(ranks[p], i) for i, p in enumerate(zip(ids, ids[1:])) if p in ranks]
        heapq.heapify(heap)
        while heap:
            r, i = heapq.heappop(heap)
            j = nxt[i]
            if ids[i] is None or j >= n or ranks.get((ids[i], ids[j])) != r:
                continue  # stale: one side was merged away since this entry was pushed
            ids[i], ids[j] = self.merges[r][2], None
            nxt[i] = nxt[j]
            if nxt[i] < n:
                prv[nxt[i]] = i
            # the merged token's new neighbour pairs; merges that use it all rank after r
            if prv[i] >= 0 and (p := (ids[prv[i]], ids[i])) in ranks:
                heapq.heappush(heap, (ranks[p], prv[i]))
            if nxt[i] < n and (p := (ids[i], ids[nxt[i]])) in ranks:
                heapq.heappush(heap, (ranks[p], i))
        return [t for t in ids if t is not None]

    def decode(self, ids) -> str:
        """Token ids to string; bytes that are not valid UTF-8 (a character cut between tokens) become U+FFFD."""
        try:
            data = b"".join(self.decoder[int(i)] for i in ids)
        except KeyError as e:
            raise ValueError(f"token id {e.args[0]} is not in this vocabulary of {self.vocab_size}") from None
        return data.decode("utf-8", errors="replace")

    # --- files

    def meta(self) -> dict:
        """The tokenizer as JSON-able data: what meta.json and the checkpoint hold."""
        return {"tokenizer": "bpe", "version": 1, "vocab_size": self.vocab_size, "pattern": self.pattern,
                "special_tokens": self.special_tokens, "byte_ids": self.byte_ids,
                "merges": [list(m) for m in self.merges]}

    @classmethod
    def from_meta(cls, meta: dict) -> "BPETokenizer":
        if meta.get("tokenizer") != "bpe" or meta.get("version") != 1:
            raise ValueError(f"not a version-1 BPE tokenizer (tokenizer={meta.get('tokenizer')!r}, "
                             f"version={meta.get('version')!r}); prepare the dataset again")
        try:
            return cls(meta["merges"], meta["byte_ids"], meta["special_tokens"], meta["pattern"])
        except (KeyError, TypeError) as e:
            raise ValueError(f"BPE tokenizer data is malformed ({type(e).__name__}: {e}); "
                             "prepare the dataset again") from None

    def save(self, path: str | Path):
        write_text(path, json.dumps(self.meta(), ensure_ascii=False))  # atomic: a crash leaves the old file

    @classmethod
    def load(cls, path: str | Path) -> "BPETokenizer":
        """Read a tokenizer written by save (JSON; nothing in it is executed)."""
        return cls.from_meta(read_json(path))

    @classmethod
    def from_gpt2_files(cls, vocab_path: str | Path, merges_path: str | Path) -> "BPETokenizer":
        """GPT-2's published format: vocab.json (token string -> id) and merges.txt ("a b" per line, rank order),
        both written in bytes_to_unicode's alphabet. Ids not made by a byte or merge (<|endoftext|>) are special."""
        encoder = json.loads(Path(vocab_path).read_text(encoding="utf-8"))
        byte_encoder = bytes_to_unicode()
        missing = [ch for ch in byte_encoder.values() if ch not in encoder]
        if missing:
            raise ValueError(f"{vocab_path} has no token for the bytes {missing[:5]}; is it a GPT-2 style vocab.json?")
        byte_ids = [encoder[byte_encoder[b]] for b in range(256)]
        merges = []
        lines = Path(merges_path).read_text(encoding="utf-8").split("\n")
        for lineno, line in enumerate(lines, 1):
            if not line.strip() or (lineno == 1 and line.startswith("#version")):
                continue
            parts = line.split()
            if len(parts) != 2 or any(p not in encoder for p in (*parts, "".join(parts))):
                raise ValueError(f"{merges_path}:{lineno}: {line!r} is not a merge of two tokens of {vocab_path}")
            a, b = parts
            merges.append((encoder[a], encoder[b], encoder[a + b]))
        made = set(byte_ids) | {new for _, _, new in merges}
        specials = {s: i for s, i in encoder.items() if i not in made}
        return cls(merges, byte_ids, specials, pattern="gpt2")


def _merge(ids: list[int], pair: tuple[int, int], new: int) -> list[int]:
    """Replace every non-overlapping occurrence of pair in ids, left to right, by new."""
    out, i, n = [], 0, len(ids)
    while i < n:
        if i < n - 1 and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out
