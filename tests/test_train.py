"""Training: the schedule the jitted step really uses, learning a periodic stream, checkpoints, resume."""
import math
import re

import numpy as np
import pytest
from conftest import PERIOD
from tinygrad import Tensor, dtypes

from nanogpt_tg.checkpoint import load_checkpoint, save_checkpoint
from nanogpt_tg.config import TrainConfig
from nanogpt_tg.data import load_split, random_offsets
from nanogpt_tg.model import GPT, GPTConfig
from nanogpt_tg.sample import load_model
from nanogpt_tg.compat.torch_rng import TorchGenerator
from nanogpt_tg.train import configure_optimizer, get_lr, make_train_step, set_lr, train

BASE = dict(dataset="periodic", device="cpu", n_layer=1, n_head=2, n_embd=16, block_size=8, batch_size=8,
            gradient_accumulation_steps=1, dropout=0.0, bias=False, learning_rate=1e-2, min_lr=1e-3, warmup_iters=5,
            eval_interval=30, eval_iters=4, log_interval=1, beta2=0.99, always_save_checkpoint=True)


@pytest.fixture(scope="module")
def trained(periodic):
    cfg = TrainConfig(**BASE, out_dir=str(periodic / "out"), max_iters=60, lr_decay_iters=60)
    return cfg, train(cfg)


def test_nanogpt_schedule_values():
    cfg = TrainConfig(learning_rate=1e-3, min_lr=1e-4, warmup_iters=100, lr_decay_iters=5000)
    assert get_lr(0, cfg) == pytest.approx(1e-3 * 1 / 101)  # nanoGPT's (it+1)/(warmup_iters+1)
    assert get_lr(99, cfg) == pytest.approx(1e-3 * 100 / 101)
    assert get_lr(100, cfg) == pytest.approx(1e-3)
    assert get_lr(2550, cfg) == pytest.approx(1e-4 + 0.5 * 0.9e-3)  # half way down the cosine
    assert get_lr(5000, cfg) == pytest.approx(1e-4)
    assert get_lr(6000, cfg) == 1e-4
    assert get_lr(7, TrainConfig(decay_lr=False, learning_rate=3e-4)) == 3e-4


def test_jitted_step_uses_the_scheduled_lr(periodic):
    """With beta1 = beta2 = 0, AdamW moves a non-decayed weight by exactly lr * sign(grad): read lr off the update."""
    cfg = TrainConfig(**{**BASE, "beta1": 0.0, "beta2": 0.0, "learning_rate": 1e-2, "min_lr": 1e-3,
                         "warmup_iters": 3, "lr_decay_iters": 8, "grad_clip": 1.0})
    model = GPT(GPTConfig(block_size=8, vocab_size=10, n_layer=1, n_head=2, n_embd=16, bias=False), verbose=False)
    optimizer = configure_optimizer(model, cfg)
    data = load_split("data/periodic", "train")
    step = make_train_step(model, optimizer, data, cfg)
    ln_f = model.transformer["ln_f"].weight
    gen = TorchGenerator(0)
    for it in range(10):  # call 1 captures the jit, 2+ replay it
        lr = get_lr(it, cfg)
        set_lr(optimizer, lr)
        before = ln_f.numpy().copy()
        step(random_offsets(gen, data.shape[0], cfg.batch_size, cfg.block_size)[None])
        moved = np.abs(ln_f.numpy() - before)
        moved = moved[moved > 0]  # a weight whose gradient is exactly 0 does not move
        # each move is lr * |g| / (|g| + eps), eps = 1e-8: lr to within 2e-6 where |g| > 1e-5 (float32 steps near 1.0
        # are 1.2e-7), a little less where the gradient is tiny; so the median is lr, and no move exceeds it.
        # neighbouring iterations' lrs differ by 1e-4 or more, so a stale or baked-in lr fails
        assert abs(np.median(moved) - lr) < 2e-6, f"iter {it}: median move {np.median(moved)}, lr {lr}"
        assert moved.max() < lr + 2e-6, f"iter {it}"


def test_short_run_learns_a_periodic_stream(trained):
    cfg, result = trained
    losses = result["losses"]
    assert [entry["iter"] for entry in losses] == [0, 30, 60]
    assert abs(losses[0]["val"] - math.log(10)) < 0.2  # starts near ln(vocab)
    assert losses[-1]["val"] < 0.3  # the next character is a function of the current one: learnable to ~0
    assert result["iter_num"] == 61


def test_checkpoint_round_trip_gives_identical_logits(trained, tmp_path):
    cfg, result = trained
    model = result["model"]
    save_checkpoint(tmp_path, model, None, {"model_args": {**model.config.__dict__}, "iter_num": 5,
                                             "best_val_loss": 1.0, "config": {}, "meta": {"itos": list(PERIOD)}})
    loaded, tok, info = load_model(tmp_path)
    idx = Tensor(np.arange(8).reshape(1, 8) % 10, dtype=dtypes.int32)
    np.testing.assert_array_equal(model(idx)[0].numpy(), loaded(idx)[0].numpy())  # bit-identical
    assert info["iter_num"] == 5 and tok.itos == list(PERIOD)
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_resume_continues_the_iteration_count(trained, capsys):
    cfg, result = trained
    arrays, info = load_checkpoint(cfg.out_dir)
    assert info["iter_num"] == 60 and info["best_val_loss"] == pytest.approx(result["losses"][-1]["val"])
    assert any(k.endswith(".exp_avg") for k in arrays)  # AdamW moments are saved for resume
    capsys.readouterr()
    resumed = train(TrainConfig(**{**BASE, "init_from": "resume", "out_dir": cfg.out_dir, "max_iters": 65,
                                   "lr_decay_iters": 60}))
    out = capsys.readouterr().out
    iters = [int(m) for m in re.findall(r"^iter (\d+):", out, re.M)]
    assert iters == [60, 61, 62, 63, 64, 65]
    first_loss = float(re.search(r"^iter 60: loss ([\d.]+)", out, re.M).group(1))
    assert first_loss < 0.5  # the trained weights were loaded, not a fresh init (~2.3)
    assert resumed["iter_num"] == 66


def test_steps_read_the_offsets_they_are_given():
    """make_train_step and make_eval_steps: one capture each, replayed with new offsets every call. The train step's
    loss equals an eager forward pass on the windows at its offsets before the update; each eval step draws its
    split's offsets from the generator (torch's randint over that split) and reads that split only (float32, 1e-6
    relative). A capture that baked in its first offsets would repeat one batch; a wrong shift would read the other
    split, whose tokens differ."""
    from nanogpt_tg.data import get_batch
    from nanogpt_tg.train import make_eval_steps

    cfg = TrainConfig(**{**BASE, "block_size": 4, "batch_size": 2, "gradient_accumulation_steps": 2})
    rng = np.random.default_rng(0)
    splits = {"train": Tensor(rng.integers(0, 5, size=400).astype(np.uint16)),
              "val": Tensor(rng.integers(5, 10, size=60).astype(np.uint16))}  # other tokens: a mixed-up read shows
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=4, vocab_size=10, bias=False), verbose=False)
    steps = make_eval_steps(model, splits, cfg, TorchGenerator(21))
    got = {split: [steps[split]().item() for _ in range(4)] for split in ("train", "val", "train")}
    gen = TorchGenerator(21)
    want = {split: [model(*get_batch(splits[split], Tensor(random_offsets(gen, splits[split].shape[0], 2, 4)), 4))[1].item()
                    for _ in range(4)] for split in ("train", "val", "train")}
    for split in got:
        assert len(set(got[split])) == 4, got
        np.testing.assert_allclose(got[split], want[split], rtol=1e-6, err_msg=split)

    optimizer = configure_optimizer(model, cfg)
    set_lr(optimizer, 1e-2)
    step = make_train_step(model, optimizer, splits["train"], cfg)
    for seed in range(3):
        ix = random_offsets(TorchGenerator(seed), 400, 4, 4).reshape(2, 2)
        want = model(*get_batch(splits["train"], Tensor(ix[1]), 4))[1].item()  # the last micro-step's loss is logged
        np.testing.assert_allclose(step(ix).item(), want, rtol=1e-6, err_msg=f"call {seed}")




def test_write_fills_cpu_buffers_in_place(monkeypatch):
    """device.write copies straight into a realized CPU buffer, 1-D or not (the train step's offsets, the sampler's
    token windows, the learning rate): a scheduled assign costs ~1 ms a call, ~2x a sampled token's time. A jit that
    reads the buffer sees the new values on replay."""
    from tinygrad import TinyJit
    from nanogpt_tg.device import write
    from nanogpt_tg.train import offsets_buffer

    buffers = [offsets_buffer((2, 3), "CPU"), Tensor.zeros(2, 3, dtype=dtypes.int32).contiguous().realize(),
               Tensor([0.5]).realize()]
    jits = [TinyJit(lambda t=t: (t * 2).realize()) for t in buffers]
    for jit in jits:
        jit(), jit()  # captured
    monkeypatch.setattr(Tensor, "assign", lambda *a, **k: pytest.fail("write scheduled an assign"))
    for t, jit in zip(buffers, jits):
        values = np.arange(t.numel()).reshape(t.shape) + 7
        write(t, values)
        np.testing.assert_array_equal(jit().numpy(), 2 * values.astype(t.numpy().dtype))


def test_read_copies_cpu_buffers_and_falls_back_for_views():
    """device.read returns a jitted output's values straight from its CPU memory (Tensor.numpy schedules a copy,
    ~0.2 ms a sampled token); a view that is not a whole buffer goes through Tensor.numpy. Exact either way."""
    from nanogpt_tg.device import read

    t = (Tensor.arange(12, dtype=dtypes.float32).reshape(3, 4) * 2).contiguous().realize()
    got = read(t)
    np.testing.assert_array_equal(got, np.arange(12).reshape(3, 4) * 2)
    got[0, 0] = -1  # a copy: the buffer keeps its value
    assert read(t)[0, 0] == 0
    np.testing.assert_array_equal(read(t[1:, ::2]), (np.arange(12).reshape(3, 4) * 2)[1:, ::2])


def test_item_reads_a_loss_as_tensor_item_does():
    """device.item (train.py's loss read, ~1.5 ms faster than Tensor.item on the CPU): the same float, exactly, for a
    realized one-element buffer; a lazy value, a view and an int tensor go through Tensor.item."""
    from nanogpt_tg.device import item

    loss = (Tensor([[0.1, 0.25]]).sum() / 3).realize()
    assert item(loss) == loss.item() == np.float32(0.35) / np.float32(3)
    assert item(Tensor([1.5, 2.5])[1:].sum()) == 2.5 and item(Tensor([7], dtype=dtypes.int32)) == 7


def test_read_and_write_take_tinygrad_s_path_without_the_internals_they_use(monkeypatch):
    """As if tinygrad had renamed the names tg.cpu_buffer reads: read and write still give exact values, through
    Tensor.numpy and assign."""
    from nanogpt_tg import tg
    from nanogpt_tg.device import read, write

    monkeypatch.setattr(tg, "Ops", None)
    t = Tensor.zeros(3, 4).contiguous().realize()
    assert tg.cpu_buffer(t) is None
    values = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    write(t, values)
    np.testing.assert_array_equal(read(t), values)  # exact: a copy, no arithmetic
