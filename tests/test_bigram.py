"""Bigram baseline: logits, loss and gradient against numpy; train, checkpoint, resume, sample; Shakespeare (slow)."""
import math

import numpy as np
import pytest
from tinygrad import Tensor, dtypes

from conftest import shakespeare_path
from nanogpt_tg.bigram import Bigram, BigramConfig, build_model
from nanogpt_tg.checkpoint import save_checkpoint
from nanogpt_tg.config import SampleConfig, TrainConfig
from nanogpt_tg.data import prepare_text, read_text
from nanogpt_tg.sample import load_model, sample
from nanogpt_tg.train import train

BASE = dict(model="bigram", dataset="periodic", device="cpu", block_size=8, batch_size=8, gradient_accumulation_steps=1,
            learning_rate=1e-1, min_lr=1e-2, warmup_iters=0, eval_interval=30, eval_iters=4, log_interval=10)


def test_logits_loss_and_gradient_match_numpy():
    V = 7
    model = Bigram(BigramConfig(vocab_size=V, block_size=5), verbose=False)
    rng = np.random.default_rng(0)
    idx, targets = rng.integers(0, V, size=(2, 5)), rng.integers(0, V, size=(2, 5))
    _, loss0 = model(Tensor(idx, dtype=dtypes.int32), Tensor(targets, dtype=dtypes.int32))
    assert loss0.item() == pytest.approx(math.log(V), abs=1e-6)  # zero table: uniform, exactly ln(V)

    table = rng.normal(0.0, 1.0, size=(V, V))
    model.token_embedding_table.weight.replace(Tensor(table.astype(np.float32))).realize()
    logits, loss = model(Tensor(idx, dtype=dtypes.int32), Tensor(targets, dtype=dtypes.int32))
    loss.backward()
    # reference: row idx of the table, softmax cross-entropy, d loss / d table = (softmax - onehot) / N at row idx
    z = table[idx]  # (B, T, V)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    ref_loss = -np.log(np.take_along_axis(p, targets[..., None], -1)).mean()
    ref_grad = np.zeros_like(table)
    np.add.at(ref_grad, idx.reshape(-1), (p - np.eye(V)[targets]).reshape(-1, V) / idx.size)
    # float32 against float64 on O(1) values: 1e-5
    np.testing.assert_allclose(logits.numpy(), z, atol=1e-6)
    assert loss.item() == pytest.approx(ref_loss, abs=1e-5)
    np.testing.assert_allclose(model.token_embedding_table.weight.grad.numpy(), ref_grad, atol=1e-5)


def test_build_model_names_the_choices():
    assert isinstance(build_model("bigram", {"vocab_size": 5, "block_size": 4, "n_layer": 9}, verbose=False), Bigram)
    with pytest.raises(ValueError, match="--model=lstm is not known; use one of gpt, bigram"):
        build_model("lstm", {})


@pytest.fixture(scope="module")
def trained(periodic):
    cfg = TrainConfig(**BASE, out_dir=str(periodic / "out"), max_iters=60, lr_decay_iters=60)
    return cfg, train(cfg)


def test_trains_checkpoints_and_samples_like_the_gpt(trained, tmp_path):
    cfg, result = trained
    losses = result["losses"]
    assert losses[0]["val"] == pytest.approx(math.log(10), abs=1e-4)  # zero init
    assert losses[-1]["val"] < 0.3  # each character fixes the next one: a bigram can learn this to ~0
    model, tok, info = load_model(cfg.out_dir)
    assert isinstance(model, Bigram) and info["config"]["model"] == "bigram" and info["iter_num"] == 60
    save_checkpoint(tmp_path, result["model"], None, {**info, "iter_num": 61})  # the weights after the last step
    idx = Tensor(np.arange(8).reshape(1, 8), dtype=dtypes.int32)
    np.testing.assert_array_equal(load_model(tmp_path)[0](idx)[0].numpy(), result["model"](idx)[0].numpy())
    texts = sample(SampleConfig(out_dir=cfg.out_dir, device="cpu", start="c", num_samples=2, max_new_tokens=12,
                                temperature=0.0))
    assert texts == ["cdefghijabcde"] * 2  # greedy follows the period


def test_resume_refuses_another_model_kind(trained):
    cfg, _ = trained
    with pytest.raises(ValueError, match="resume with --model=bigram"):
        train(TrainConfig(**{**BASE, "model": "gpt", "init_from": "resume", "out_dir": cfg.out_dir, "max_iters": 61}))


@pytest.mark.slow
def test_tiny_shakespeare_val_loss_reaches_the_count_optimum(tmp_path, monkeypatch):
    """The issue's bar: val loss at most 2.55; the count-based bigram (numpy, add-0.1 smoothing) gets 2.48."""
    path = shakespeare_path()
    if path is None:
        pytest.skip("Tiny Shakespeare input.txt not on this machine (set NANOGPT_TG_SHAKESPEARE)")
    prepare_text(read_text(path), tmp_path / "data" / "shakespeare_char")
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig(**{**BASE, "dataset": "shakespeare_char", "batch_size": 32, "block_size": 64, "max_iters": 1000,
                         "lr_decay_iters": 1000, "eval_interval": 1000, "eval_iters": 100},
                      out_dir=str(tmp_path / "out"))
    val = train(cfg)["losses"][-1]["val"]
    tr, va = (np.fromfile(tmp_path / f"data/shakespeare_char/{s}.bin", dtype=np.uint16).astype(np.int64)
              for s in ("train", "val"))
    counts = np.full((65, 65), 0.1)
    np.add.at(counts, (tr[:-1], tr[1:]), 1)
    optimum = -np.log((counts / counts.sum(1, keepdims=True))[va[:-1], va[1:]]).mean()
    assert optimum == pytest.approx(2.484, abs=0.005)
    assert val <= 2.55
    assert val - optimum < 0.04  # eval on 100 batches of 2048 tokens: the estimate is good to ~0.01
