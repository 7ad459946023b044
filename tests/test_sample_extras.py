"""Sampling extras: repetition penalty against a numpy reference, stop strings, and streamed output."""
import numpy as np
import pytest
from tinygrad import Tensor

import nanogpt_tg.sample as sample_module
import reference
from nanogpt_tg.bigram import Bigram, BigramConfig
from nanogpt_tg.checkpoint import save_checkpoint
from nanogpt_tg.config import SampleConfig
from nanogpt_tg.sample import Generator, apply_repetition_penalty, sample, stream_ready

from test_sample import CONFIG, TOK, write_checkpoint


@pytest.fixture(scope="module")
def gpt_ckpt(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("gpt"), seed=11)


@pytest.fixture(scope="module")
def cycle_ckpt(tmp_path_factory):
    """A bigram whose greedy choice after token i is i + 1: from 'a' it writes 'abcdefghi\\n abc...'."""
    d = tmp_path_factory.mktemp("cycle")
    model = Bigram(BigramConfig(vocab_size=11, block_size=8), verbose=False)
    table = np.roll(np.eye(11, dtype=np.float32) * 5.0, 1, axis=1)  # row i peaks at column i + 1
    model.token_embedding_table.weight.replace(Tensor(table)).realize()
    save_checkpoint(d, model, None, {"model_args": {"vocab_size": 11, "block_size": 8}, "iter_num": 0,
                                     "best_val_loss": 9.9, "config": {"model": "bigram"}, "meta": TOK.meta()})
    return d


def test_repetition_penalty_values_and_one_changes_nothing():
    logits = np.array([[2.0, -1.0, 0.5, 3.0], [1.0, 1.0, -2.0, 0.0]], dtype=np.float32)
    seen = np.array([[0, 1, 1], [3, 2, 2]])
    # by hand, HF's rule: seen tokens' positive logits / penalty, negative ones * penalty
    expected = np.array([[1.0, -2.0, 0.5, 3.0], [1.0, 1.0, -4.0, 0.0]])
    np.testing.assert_array_equal(apply_repetition_penalty(logits, seen, 2.0), expected)
    np.testing.assert_array_equal(apply_repetition_penalty(logits, seen, 1.0), logits)  # exact, not approximately
    np.testing.assert_array_equal(logits[0], [2.0, -1.0, 0.5, 3.0])  # the input is not modified


def test_generate_with_penalty_matches_reference_loop(gpt_ckpt):
    _, model, weights = gpt_ckpt
    prompt = np.array([[1, 2, 3], [4, 4, 5]])
    gen = Generator(model, rows=2)
    runs = {p: gen.generate(prompt, 12, temperature=0.0, repetition_penalty=p) for p in (1.0, 1.5)}
    for penalty, out in runs.items():
        ref = prompt.copy()
        for _ in range(12):  # crop, forward in float64, penalize every token so far, argmax
            logits = reference.forward(weights, ref[:, -CONFIG.block_size :], CONFIG.n_head)[:, -1, :]
            for row, ids in zip(logits, ref):
                ids = np.unique(ids)
                row[ids] = np.where(row[ids] > 0, row[ids] / penalty, row[ids] * penalty)
            ref = np.concatenate([ref, logits.argmax(-1)[:, None]], 1)
        np.testing.assert_array_equal(out, ref)
    assert not np.array_equal(runs[1.0], runs[1.5])  # the penalty did change the greedy text here
    rng_a, rng_b = np.random.default_rng(0), np.random.default_rng(0)
    np.testing.assert_array_equal(gen.generate(prompt, 10, temperature=0.8, rng=rng_a),
                                  gen.generate(prompt, 10, temperature=0.8, rng=rng_b, repetition_penalty=1.0))


def test_stop_string_ends_each_sample_before_it(cycle_ckpt, capsys):
    cfg = SampleConfig(out_dir=str(cycle_ckpt), device="cpu", start="a", num_samples=2, max_new_tokens=30,
                       temperature=0.0)
    assert sample(cfg) == ["abcdefghi\n abcdefghi\n abcdefghi\n "[:31]] * 2  # no stop: all 30 tokens
    capsys.readouterr()
    assert sample(SampleConfig(**{**cfg.__dict__, "stop": "fg"})) == ["abcde"] * 2
    assert "fg" not in capsys.readouterr().out
    assert sample(SampleConfig(**{**cfg.__dict__, "stop": "i\n a", "start": "h"})) == ["h"] * 2  # found right away
    assert sample(SampleConfig(**{**cfg.__dict__, "stop": "zz"}))[0].startswith("abcdefghi\n abc")  # never found


def test_stream_prints_token_by_token(cycle_ckpt, monkeypatch):
    pieces = []
    monkeypatch.setattr(sample_module, "print", lambda *a, end="\n", flush=False: pieces.append("".join(a) + end),
                        raising=False)
    texts = sample(SampleConfig(out_dir=str(cycle_ckpt), device="cpu", start="a", num_samples=1, max_new_tokens=12,
                                temperature=0.0, stream=True, stop="\n "))
    assert texts == ["abcdefghi"]
    assert "".join(pieces) == "abcdefghi\n---------------\n"
    # the prompt, then one character per generated token, each printed as soon as it was sampled
    assert pieces[:9] == ["a", "b", "c", "d", "e", "f", "g", "h", "i"]
    assert "\n " not in "".join(pieces[:-1])  # the start of the stop string was held back, never shown


def test_stream_gives_the_same_texts_as_batch(gpt_ckpt, capsys):
    d, _, _ = gpt_ckpt
    cfg = SampleConfig(out_dir=str(d), device="cpu", num_samples=3, max_new_tokens=15, start="ab", seed=3)
    batch = sample(cfg)
    out_batch = capsys.readouterr().out
    streamed = sample(SampleConfig(**{**cfg.__dict__, "stream": True}))
    assert streamed == batch and len(set(batch)) > 1
    assert capsys.readouterr().out == out_batch  # the same lines on the terminal


def test_stream_ready_holds_back_cut_characters_and_stop_prefixes():
    assert stream_ready("ab\ufffd", "") == "ab"  # a UTF-8 character cut between two BPE tokens
    assert stream_ready("abc\n", "\n\n") == "abc"
    assert stream_ready("abc\nx", "\n\n") == "abc\nx"
    assert stream_ready("xEN", "END") == "x"
    assert stream_ready("hello", "") == "hello"


def test_bad_repetition_penalty(gpt_ckpt):
    d, _, _ = gpt_ckpt
    with pytest.raises(ValueError, match="--repetition_penalty=0.0 must be > 0"):
        sample(SampleConfig(out_dir=str(d), device="cpu", repetition_penalty=0.0))
