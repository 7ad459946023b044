import json

import numpy as np
import pytest
from tinygrad import Tensor

from conftest import shakespeare_path
from nanogpt_tg.data import get_batch, load_split, prepare_text, random_offsets, read_text
from nanogpt_tg.compat.torch_rng import TorchGenerator
from nanogpt_tg.prepare import main as prepare_main


def test_prepare_splits_90_10_and_writes_uint16(tmp_path):
    text = "".join(chr(97 + i % 7) for i in range(1000))
    counts = prepare_text(text, tmp_path, block_size=16)
    assert counts == {"vocab_size": 7, "train_tokens": 900, "val_tokens": 100}
    train = np.fromfile(tmp_path / "train.bin", dtype=np.uint16)
    val = np.fromfile(tmp_path / "val.bin", dtype=np.uint16)
    meta = json.loads((tmp_path / "meta.json").read_text(encoding="utf-8"))
    assert "".join(meta["itos"][i] for i in np.concatenate([train, val])) == text


def test_prepare_keeps_every_character(tmp_path):
    text = ("Ünïcödé — ok 🙂\r\n\t" * 200)
    prepare_text(text, tmp_path, block_size=8)
    meta = json.loads((tmp_path / "meta.json").read_text(encoding="utf-8"))
    assert set(meta["itos"]) == set(text)


def test_prepare_refuses_a_text_too_short_for_a_block(tmp_path):
    with pytest.raises(ValueError, match="too short.*block_size"):
        prepare_text("abc" * 50, tmp_path, block_size=256)


def test_prepare_command_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="not found.*--input"):
        prepare_main(["--input", "missing.txt", "--dataset", "x"])
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1") * 1000)
    with pytest.raises(SystemExit, match="not UTF-8"):
        prepare_main(["--input", "latin1.txt", "--dataset", "x"])
    (tmp_path / "ok.txt").write_text("to be or not to be\n" * 200, encoding="utf-8")
    prepare_main(["--input", "ok.txt", "--dataset", "mine", "--block_size", "32"])
    assert (tmp_path / "data/mine/train.bin").stat().st_size == 2 * int(len("to be or not to be\n" * 200) * 0.9)


def test_real_tiny_shakespeare_counts(tmp_path):
    path = shakespeare_path()
    if path is None:
        pytest.skip("Tiny Shakespeare input.txt not on this machine (set NANOGPT_TG_SHAKESPEARE)")
    counts = prepare_text(read_text(path), tmp_path)
    assert counts == {"vocab_size": 65, "train_tokens": 1_003_854, "val_tokens": 111_540}


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    """A token file of 0, 1, 2, ... so each window shows where it was cut."""
    d = tmp_path_factory.mktemp("stream")
    np.arange(5000, dtype=np.uint16).tofile(d / "train.bin")
    return load_split(d, "train")


def test_batch_windows_are_real_and_y_is_x_shifted(stream):
    ix = random_offsets(TorchGenerator(0), stream.shape[0], 8, 16)
    x, y = get_batch(stream, Tensor(ix), 16)
    x, y = x.numpy(), y.numpy()
    assert x.shape == y.shape == (8, 16) and x.dtype == np.int32
    for row_x, row_y in zip(x, y):
        start = row_x[0]
        np.testing.assert_array_equal(row_x, np.arange(start, start + 16))  # a contiguous window of the stream
        np.testing.assert_array_equal(row_y, row_x + 1)  # y is x shifted left by one
        assert 0 <= start <= 5000 - 16 - 1
    np.testing.assert_array_equal(x[:, 0], ix)  # the windows start at the offsets given
    assert len({r[0] for r in x}) > 1  # random offsets, not one window repeated


def test_batches_reproducible_by_seed(stream):
    def batches(seed, n):
        gen = TorchGenerator(seed)
        return [get_batch(stream, Tensor(random_offsets(gen, 5000, 4, 8)), 8)[0].numpy() for _ in range(n)]
    a, b, c = batches(42, 3), batches(42, 3), batches(43, 1)[0]
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[0], a[1])  # successive batches differ
    assert not np.array_equal(a[0], c)  # another seed, other windows


def test_missing_token_file_names_prepare(tmp_path):
    with pytest.raises(FileNotFoundError, match="prepare"):
        load_split(tmp_path, "train")
