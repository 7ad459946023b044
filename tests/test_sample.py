"""Sampling: crop-to-block_size semantics against the numpy reference, seeds, greedy, and bad input."""
import numpy as np
import pytest

import reference
from nanogpt_tg.checkpoint import save_checkpoint
from nanogpt_tg.config import SampleConfig
from nanogpt_tg.model import GPTConfig
from nanogpt_tg.sample import Generator, sample, sample_logits
from nanogpt_tg.tokenizer import CharTokenizer
from test_model import with_big_weights

CONFIG = GPTConfig(block_size=8, vocab_size=11, n_layer=2, n_head=2, n_embd=8, dropout=0.0, bias=True)
TOK = CharTokenizer(list("\n abcdefghi"))


def write_checkpoint(d, seed: int):
    """A checkpoint of a CONFIG model with O(1) weights in d; returns d, the model and its float64 weights."""
    model, weights = with_big_weights(CONFIG, seed=seed)
    save_checkpoint(d, model, None, {"model_args": dict(CONFIG.__dict__), "iter_num": 0, "best_val_loss": 9.9,
                                     "config": {}, "meta": TOK.meta()})
    return d, model, weights


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ckpt"), seed=7)


def test_greedy_past_block_size_equals_crop_and_recompute_reference(ckpt):
    _, model, weights = ckpt
    prompt = np.array([[1, 2, 3], [4, 4, 5]])
    out = Generator(model, rows=2).generate(prompt, max_new_tokens=14, temperature=0.0)
    ref = prompt.copy()
    for _ in range(14):  # nanoGPT's generate: crop to the last block_size tokens, take the last position's argmax
        logits = reference.forward(weights, ref[:, -CONFIG.block_size:], CONFIG.n_head)[:, -1, :]
        ref = np.concatenate([ref, logits.argmax(-1)[:, None]], 1)
    np.testing.assert_array_equal(out, ref)  # 17 tokens > block_size 8: the crop is exercised


def test_top_k_and_temperature_follow_nanogpt():
    rng = np.random.default_rng(0)
    logits = np.array([[0.0, 3.0, 2.9, -1.0]])
    assert all(sample_logits(logits, 1.0, 1, rng)[0] == 1 for _ in range(20))  # top_k=1 is greedy
    picks = {int(sample_logits(logits, 1.0, 2, rng)[0]) for _ in range(200)}
    assert picks == {1, 2}  # top-2 never picks outside the two best
    assert sample_logits(logits, 0.0, None, rng)[0] == 1  # temperature 0: greedy, no division by zero
    draws = np.array([sample_logits(logits, 0.5, None, rng)[0] for _ in range(4000)])
    expected = np.exp(logits[0] / 0.5) / np.exp(logits[0] / 0.5).sum()  # softmax(logits / temperature)
    np.testing.assert_allclose(np.bincount(draws, minlength=4) / 4000, expected, atol=0.025)  # ~3 sigma


def test_same_seed_same_text_and_only_vocabulary(ckpt, capsys):
    d, _, _ = ckpt
    cfg = SampleConfig(out_dir=str(d), device="cpu", num_samples=3, max_new_tokens=20, start="ab", seed=5)
    a, b = sample(cfg), sample(cfg)
    c = sample(SampleConfig(**{**cfg.__dict__, "seed": 6}))
    assert a == b and a != c
    assert all(t.startswith("ab") and len(t) == 22 and set(t) <= set(TOK.itos) for t in a)
    assert "---------------" in capsys.readouterr().out
    greedy = sample(SampleConfig(**{**cfg.__dict__, "temperature": 0.0}))
    assert len(set(greedy)) == 1  # greedy rows from one prompt agree


def test_start_from_file(ckpt, tmp_path):
    d, _, _ = ckpt
    (tmp_path / "prompt.txt").write_text("cab", encoding="utf-8")
    texts = sample(SampleConfig(out_dir=str(d), device="cpu", num_samples=1, max_new_tokens=3,
                                start=f"FILE:{tmp_path / 'prompt.txt'}"))
    assert texts[0].startswith("cab")


@pytest.mark.parametrize("override, error, message", [
    ({"start": "xyz"}, ValueError, "not in the vocabulary: 'x', 'y', 'z'"),
    ({"start": "FILE:/no/such/prompt.txt"}, FileNotFoundError, "not found"),
    ({"max_new_tokens": 0}, ValueError, "--max_new_tokens=0"),
    ({"top_k": 0}, ValueError, "--top_k=0"),
    ({"temperature": -1.0}, ValueError, "--temperature=-1.0"),
    ({"out_dir": "/no/such/dir"}, ValueError, "no checkpoint in /no/such/dir"),
])
def test_bad_sampling_input(ckpt, override, error, message):
    d, _, _ = ckpt
    with pytest.raises(error, match=message.replace("(", r"\(").replace("?", r"\?")):
        sample(SampleConfig(**{**SampleConfig(out_dir=str(d), device="cpu").__dict__, **override}))
