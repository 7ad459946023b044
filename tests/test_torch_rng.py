"""PyTorch's CPU generator in numpy: its raw stream, randint, uniform_, normal_ and nanoGPT's init and training run.

References: the C++ standard's mt19937 values (no torch needed), then torch itself where it is installed.
"""
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from nanogpt_tg.config import TrainConfig
from nanogpt_tg.data import prepare_text
from nanogpt_tg.model import GPT, GPTConfig
from nanogpt_tg.compat.torch_rng import TorchGenerator
from nanogpt_tg.train import train

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def test_raw_stream_is_mt19937():
    """std::mt19937 with its default seed 5489: first output 3499211612, 10000th 4123659995 (C++ [rand.predef])."""
    out = TorchGenerator(5489).random(10000)
    assert out[0] == 3499211612 and out[-1] == 4123659995


def test_state_round_trip_continues_the_stream():
    """get_state / set_state: the same draws afterwards, the cached second normal of a small normal_ included."""
    gen = TorchGenerator(3)
    gen.normal(5)  # odd: leaves a value cached
    state = gen.get_state()
    want = (gen.normal(3), gen.randint(1000, 7), gen.normal(40))
    other = TorchGenerator(99)
    other.set_state(state)
    got = (other.normal(3), other.randint(1000, 7), other.normal(40))
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("high", [7, 1_003_790, 2**28 - 1, 2**28, 2**33 + 5])
def test_randint_equals_torch(torch, high):
    """Integers exactly, on both sides of 2**28, where torch switches to 64-bit draws; then the streams are in step."""
    torch.manual_seed(1337)
    want = torch.randint(high, (12,)).numpy()
    gen = TorchGenerator(1337)
    np.testing.assert_array_equal(gen.randint(high, 12), want)
    np.testing.assert_array_equal(gen.randint(1000, 4), torch.randint(1000, (4,)).numpy())


@pytest.mark.parametrize("n", [1, 3, 5, 16, 100, 8320])
def test_uniform_and_normal_equal_torch(torch, n):
    """uniform_ bit for bit; normal_ to 2e-6 at std 1 (torch's vectorized float32 log/cos/sin round their own way;
    measured 1.1e-6 at most),
    below 16 values torch's scalar sampler with its cache; the streams stay in step afterwards."""
    torch.manual_seed(7)
    want_u = torch.empty(n).uniform_(-0.5, 2.0).numpy()
    want_n = torch.empty(n).normal_(0.3, 1.0).numpy()
    want_next = torch.randint(1000, (4,)).numpy()
    gen = TorchGenerator(7)
    np.testing.assert_array_equal(gen.uniform(n, -0.5, 2.0), want_u)
    np.testing.assert_allclose(gen.normal(n, 0.3, 1.0), want_n, rtol=0, atol=2e-6)
    np.testing.assert_array_equal(gen.randint(1000, 4), want_next)


@pytest.mark.parametrize("kw", [dict(n_layer=4, n_head=4, n_embd=128, block_size=64, bias=False, vocab_size=65),
                                dict(n_layer=2, n_head=2, n_embd=6, block_size=2, bias=True, vocab_size=5)])
def test_gpt_init_equals_nanogpt(torch, kw):
    """GPT(seed) holds the weights nanoGPT's GPT holds after torch.manual_seed(seed), to 1e-7 (they are ~0.02), and
    leaves the generator where nanoGPT's leaves torch's: the first batch offsets are the same."""
    sys.path.insert(0, str(TOOLS))
    from torch_nanogpt import GPT as TorchGPT, GPTConfig as TorchConfig

    torch.manual_seed(7)
    want = {k: v.detach().numpy() for k, v in TorchGPT(TorchConfig(dropout=0.0, **kw)).state_dict().items()}
    want_ix = torch.randint(1000, (8,)).numpy()
    gen = TorchGenerator(7)
    got = GPT(GPTConfig(dropout=0.0, **kw), verbose=False, generator=gen).state_dict()
    assert set(want) == set(got) | {"lm_head.weight"}
    for k, p in got.items():
        np.testing.assert_allclose(p.numpy(), want[k], rtol=0, atol=1e-7, err_msg=k)
    np.testing.assert_array_equal(gen.randint(1000, 8), want_ix)


def test_train_runs_nanogpt_s_run(torch, tmp_path):
    """train.py and nanoGPT's loop (tools/torch_train.py) from the same seed, with gradient accumulation: the same
    initial weights, the same batches in the same order around the evaluations, so the same losses at every logged
    iteration (1e-4: float32 sums in another order, over 30 steps)."""
    sys.path.insert(0, str(TOOLS))
    from torch_train import main as torch_train

    words = np.random.default_rng(0).choice(["to ", "be ", "or ", "not ", "that ", "is ", "the ", "question\n"], 4000)
    prepare_text("".join(words), tmp_path / "data" / "words", block_size=16)
    cfg = TrainConfig(dataset="words", device="cpu", out_dir=str(tmp_path / "out"), n_layer=2, n_head=2, n_embd=32,
                      block_size=16, batch_size=4, gradient_accumulation_steps=2, dropout=0.0, bias=False,
                      learning_rate=3e-3, min_lr=3e-4, warmup_iters=5, max_iters=30, lr_decay_iters=30,
                      eval_interval=10, eval_iters=3, log_interval=1, beta2=0.99, seed=5)
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        ours = train(cfg)
        want = torch_train(replace(cfg, out_dir=str(tmp_path / "torch-out")))
    finally:
        os.chdir(old)
    got_evals = [(e["iter"], e["train"], e["val"]) for e in ours["losses"]]
    assert [e[0] for e in got_evals] == [e[0] for e in want["eval"]] == [0, 10, 20, 30]
    np.testing.assert_allclose(np.array(got_evals)[:, 1:], np.array(want["eval"])[:, 1:], rtol=1e-4)
    records = [line for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines() if '"iter"' in line]
    import json
    got_iters = [(r["iter"], r["loss"]) for r in map(json.loads, records) if r.get("kind") == "iter"]
    assert [i for i, _ in got_iters] == [i for i, _ in want["iter"]]
    np.testing.assert_allclose([v for _, v in got_iters], [v for _, v in want["iter"]], rtol=1e-4)
