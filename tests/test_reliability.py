"""Nothing trained is lost: atomic checkpoints, Ctrl-C/SIGTERM save and exact resume, divergence, strict loading."""
import errno
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nanogpt_tg import checkpoint, fsio
from nanogpt_tg.checkpoint import CheckpointError, load_checkpoint, load_weights, read_safetensors, save_checkpoint
from nanogpt_tg.config import TrainConfig
from nanogpt_tg.data import prepare_text
from nanogpt_tg.model import GPT, GPTConfig
from nanogpt_tg.train import train

ROOT = Path(__file__).resolve().parents[1]
TINY = GPTConfig(block_size=8, vocab_size=10, n_layer=1, n_head=2, n_embd=8, bias=False)
MAX_ITERS = 300  # enough that a signal sent on seeing "iter 13:" lands mid-run (an iteration takes ~2 ms here)
ARGS = ["--dataset=rnd", "--device=cpu", "--n_layer=1", "--n_head=2", "--n_embd=16", "--block_size=16", "--batch_size=4",
        "--gradient_accumulation_steps=2", "--dropout=0.1", "--eval_interval=50", "--eval_iters=2", "--log_interval=1",
        f"--max_iters={MAX_ITERS}", f"--lr_decay_iters={MAX_ITERS}", "--warmup_iters=5", "--learning_rate=3e-3"]


@pytest.fixture(scope="module")
def rnd(tmp_path_factory):
    """A working directory with data/rnd/: random text over 12 characters."""
    d = tmp_path_factory.mktemp("rnd")
    text = "".join(np.random.default_rng(0).choice(list("abcdefghij \n"), size=6000))
    prepare_text(text, d / "data" / "rnd", block_size=16)
    return d


def run_train(cwd, *args, **kw):
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *ARGS, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600, **kw)


def iter_losses(log: str) -> dict[int, str]:
    return {int(i): loss for i, loss in re.findall(r"^iter (\d+): loss ([\d.]+)", log, re.M)}


@pytest.fixture(scope="module")
def uninterrupted(rnd):
    full = run_train(rnd, "--out_dir=full")
    assert full.returncode == 0, full.stderr
    return full


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_killed_run_resumes_bit_for_bit(rnd, uninterrupted, sig):
    """Interrupt at some iteration k, resume: the losses from k on and the final checkpoint equal an uninterrupted run."""
    full = uninterrupted
    log_path = rnd / f"part_{sig.name}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-u", str(ROOT / "train.py"), *ARGS, f"--out_dir=part_{sig.name}"],
                                cwd=rnd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 300
        while "iter 13:" not in log_path.read_text() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        proc.send_signal(sig)
        assert proc.wait(timeout=120) == 130
    part = log_path.read_text()
    stopped = int(re.search(r"stopped by SIG\w+ at iter (\d+)", part).group(1))
    assert 13 < stopped < MAX_ITERS
    resumed = run_train(rnd, f"--out_dir=part_{sig.name}", "--init_from=resume")
    assert resumed.returncode == 0, resumed.stderr
    full_losses, resumed_losses = iter_losses(full.stdout), iter_losses(resumed.stdout)
    assert min(resumed_losses) == stopped and max(resumed_losses) == MAX_ITERS
    assert all(full_losses[i] == loss for i, loss in resumed_losses.items())
    a, _ = read_safetensors(rnd / "full/ckpt.safetensors")
    b, _ = read_safetensors(rnd / f"part_{sig.name}/ckpt.safetensors")
    assert a.keys() == b.keys()
    for k in a:  # weights, AdamW moments and RNG state: bit for bit
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def resume_copy(rnd, name: str) -> Path:
    """A copy of the uninterrupted run's checkpoint (iteration 300, the last) in out_dir `name`, to resume from."""
    (rnd / name).mkdir()
    (rnd / name / "ckpt.safetensors").write_bytes((rnd / "full/ckpt.safetensors").read_bytes())
    return rnd / name


def test_a_signal_during_an_eval_stops_it_at_the_next_batch_and_saves(rnd, uninterrupted):
    """An eval of 2 x 10^7 batches (hours) after one step: a note says the run takes hours, SIGINT ends the eval
    at its next batch, and the checkpoint is the run before that eval, so a resume repeats it."""
    out = resume_copy(rnd, "long_eval")
    log_path = rnd / "long_eval.log"
    with open(log_path, "w") as log:  # 300 is no eval iteration for --eval_interval=7: one step, then an eval at 301
        proc = subprocess.Popen([sys.executable, "-u", str(ROOT / "train.py"), *ARGS, "--out_dir=long_eval",
                                 "--init_from=resume", "--max_iters=310", "--eval_interval=7", "--eval_iters=10000000"],
                                cwd=rnd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 300
        while "note: this run will take about" not in log_path.read_text() and proc.poll() is None \
                and time.time() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        sent = time.time()
        assert proc.wait(timeout=120) == 130
    out_text = log_path.read_text()
    assert time.time() - sent < 30, out_text  # not at the end of the eval
    assert re.search(r"^iter 300: loss", out_text, re.M) and "step 301:" not in out_text
    assert "stopped by SIGINT at iter 301, in its eval" in out_text and "Traceback" not in out_text
    note = next(line for line in out_text.splitlines() if line.startswith("note: this run will take about"))
    assert re.search(r"about \d+h\d\dm on CPU \(11 iterations, 2 evals of 2 x 10000000 batches\); nanoGPT's CPU run "
                     r"takes minutes: python train.py config/train_shakespeare_char_cpu.py --dataset=rnd", note), note
    assert "note: mfu in the iter lines is nanoGPT's, a percentage of an A100's bfloat16 peak" in out_text
    assert load_checkpoint(out)[1]["iter_num"] == 301


def test_eval_only_evaluates_at_any_iteration_and_resume_names_overridden_flags(rnd, uninterrupted):
    out = resume_copy(rnd, "eval_only")
    before = (out / "ckpt.safetensors").read_bytes()
    r = run_train(rnd, "--out_dir=eval_only", "--init_from=resume", "--eval_only=True", "--eval_interval=7",
                  "--n_layer=2", "--block_size=8", "--bias=True", "--n_head=2")
    assert r.returncode == 0, r.stderr
    assert re.search(r"^step 300: train loss \d\.\d{4}, val loss \d\.\d{4}$", r.stdout, re.M)  # 300 % 7 != 0
    assert ("--init_from=resume: the model's shape is the checkpoint's: n_layer=1 (not --n_layer=2), block_size=16 "
            "(not --block_size=8), bias=False (not --bias=True)") in r.stdout
    assert "iter 300:" not in r.stdout and (out / "ckpt.safetensors").read_bytes() == before


def test_a_run_that_fails_before_writing_leaves_no_out_dir(rnd, monkeypatch):
    monkeypatch.chdir(rnd)
    with pytest.raises(FileNotFoundError, match="data/missing/meta.json not found"):
        train(TrainConfig(dataset="missing", device="cpu", out_dir="never/made"))
    assert not (rnd / "never").exists()


def small_checkpoint(out_dir, iter_num):
    model = GPT(TINY, seed=iter_num, verbose=False)
    save_checkpoint(out_dir, model, None, {"model_args": dict(TINY.__dict__), "iter_num": iter_num,
                                           "best_val_loss": 1.0, "config": {}, "meta": {"itos": list("abcdefghij")}})
    return model


@pytest.mark.parametrize("fail_at", ["write", "fsync", "replace"])
def test_failed_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch, fail_at):
    small_checkpoint(tmp_path, 1)
    before = (tmp_path / "ckpt.safetensors").read_bytes()

    def disk_full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    if fail_at == "write":  # the disk fills half way through the tensors
        real_open = open

        class HalfFile:
            def __init__(self, f):
                self.f, self.n = f, 0

            def write(self, b):
                self.n += 1
                if self.n > 3:
                    disk_full()
                return self.f.write(b)

            def __getattr__(self, name):
                return getattr(self.f, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()

        monkeypatch.setattr(fsio, "open", lambda *a, **k: HalfFile(real_open(*a, **k)), raising=False)
    else:
        monkeypatch.setattr(fsio.os, fail_at, disk_full)
    with pytest.raises(OSError, match="could not write checkpoint .*No space left on device.*previous checkpoint is intact"):
        small_checkpoint(tmp_path, 2)
    monkeypatch.undo()
    assert (tmp_path / "ckpt.safetensors").read_bytes() == before
    assert load_checkpoint(tmp_path)[1]["iter_num"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.safetensors"]  # no half-written file left


def test_divergence_stops_and_leaves_the_last_good_checkpoint(rnd, monkeypatch):
    monkeypatch.chdir(rnd)
    cfg = dict(dataset="rnd", device="cpu", n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4,
               gradient_accumulation_steps=1, eval_interval=5, eval_iters=1, log_interval=1, max_iters=5,
               lr_decay_iters=100, warmup_iters=0, out_dir="div")
    train(TrainConfig(**cfg))
    with pytest.raises(FloatingPointError, match=r"at iter \d+; training diverged.*div/ckpt.safetensors \(iter 5\)"):
        train(TrainConfig(**{**cfg, "init_from": "resume", "max_iters": 30, "learning_rate": 1e38, "grad_clip": 0.0}))
    arrays, info = load_checkpoint(rnd / "div")  # the last good one: iter 5, finite, nothing written after the NaN
    assert info["iter_num"] == 5 and all(np.isfinite(a).all() for a in arrays.values())


def test_strict_loading_errors_name_the_file_and_problem(tmp_path):
    small_checkpoint(tmp_path, 3)
    path = tmp_path / "ckpt.safetensors"
    arrays, info = load_checkpoint(tmp_path)
    wider = GPT(GPTConfig(**{**TINY.__dict__, "n_embd": 16}), verbose=False)
    with pytest.raises(CheckpointError, match=r"has shape \(10, 8\), the model expects \(10, 16\)"):
        load_weights(wider, arrays, path)
    deeper = GPT(GPTConfig(**{**TINY.__dict__, "n_layer": 2}), verbose=False)
    with pytest.raises(CheckpointError, match=r"missing: \['transformer.h.1"):
        load_weights(deeper, arrays, path)
    with pytest.raises(CheckpointError, match=r"extra: \['transformer.h.0"):
        load_weights(GPT(GPTConfig(**{**TINY.__dict__, "n_layer": 0}), verbose=False), arrays, path)

    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match=r"ckpt.safetensors is not a valid safetensors file .*truncated"):
        load_checkpoint(tmp_path)
    path.write_bytes(b"\x00" * 3)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path)
    path.write_bytes(raw.replace(b'\\"version\\": 1', b'\\"version\\": 99'))
    with pytest.raises(CheckpointError, match="format version 99; this version reads 1"):
        load_checkpoint(tmp_path)
    checkpoint.write_safetensors(path, {"x": np.zeros(2, np.float32)}, {})
    with pytest.raises(CheckpointError, match="no nanogpt-tg metadata"):
        load_checkpoint(tmp_path)


def test_resume_refuses_another_vocabulary(rnd, tmp_path, monkeypatch):
    monkeypatch.chdir(rnd)
    cfg = dict(dataset="rnd", device="cpu", n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4,
               gradient_accumulation_steps=1, eval_interval=5, eval_iters=1, max_iters=5, lr_decay_iters=100,
               warmup_iters=0, out_dir="vocab")
    train(TrainConfig(**cfg))
    prepare_text("".join(np.random.default_rng(1).choice(list("klmnopqrstuv"), size=3000)), rnd / "data/other", 16)
    with pytest.raises(ValueError, match="trained on another vocabulary"):
        train(TrainConfig(**{**cfg, "init_from": "resume", "dataset": "other"}))


# the bad inputs of the README's table: each ends in one `error:` line naming what to change, no traceback
BAD_INPUTS = [
    (["train.py", "--n_layr=2"], "unknown config key 'n_layr' (did you mean 'n_layer'?)"),
    (["train.py", "--bias=maybe"], "--bias=maybe is not a valid bool"),
    (["train.py", "--max_iters=1e3.5"], "--max_iters=1e3.5 is not a valid int"),
    (["train.py", "missing_preset.py"], "config file missing_preset.py not found"),
    (["train.py", "--dataset=rnd", "--n_embd=30", "--n_head=4"], "--n_embd=30 is not divisible by --n_head=4"),
    (["train.py", "--dataset=rnd", "--learning_rate=-1"], "--learning_rate=-1.0 must be positive"),
    (["train.py", "--dataset=rnd", "--batch_size=0"], "--batch_size=0 must be positive"),
    (["train.py", "--dataset=rnd", "--dropout=1.5"], "--dropout=1.5 must be in [0, 1)"),
    (["train.py", "--dataset=rnd", "--init_from=gpt3"], "--init_from=gpt3 is not supported; use scratch, resume, gpt2,"),
    (["train.py", "--dataset=rnd", "--device=tpu"], "--device=tpu: tinygrad cannot open it"),
    (["train.py", "--dataset=rnd", "--block_size=5000"], "--block_size=5000 is too large for data/rnd/val.bin"),
    (["train.py", "--dataset=nope"], "data/nope/meta.json not found; prepare the dataset first"),
    (["train.py", "--dataset=rnd", "--out_dir=/proc/nope"], "--out_dir=/proc/nope cannot be written"),
    (["train.py", "--dataset=rnd", "--init_from=resume", "--out_dir=empty"], "no checkpoint in empty"),
    (["sample.py", "--out_dir=empty"], "no checkpoint in empty"),
    (["sample.py", "--out_dir=good", "--start=XYZ"], "characters not in the vocabulary: 'X', 'Y', 'Z'"),
    (["sample.py", "--out_dir=good", "--start=FILE:nope.txt"], "--start=FILE:nope.txt: nope.txt not found"),
    (["sample.py", "--out_dir=good", "--max_new_tokens=0"], "--max_new_tokens=0 must be at least 1"),
    (["sample.py", "--out_dir=good", "--top_k=0"], "--top_k=0 must be at least 1"),
    (["sample.py", "--out_dir=good", "--temperature=-1"], "--temperature=-1.0 must be >= 0"),
    (["sample.py", "--out_dir=corrupt"], "is not a valid safetensors file"),
    (["-m", "nanogpt_tg.prepare", "--input=nope.txt", "--dataset=x"], "input file nope.txt not found"),
    (["-m", "nanogpt_tg.prepare", "--input=short.txt", "--dataset=x"], "text too short"),
    (["-m", "nanogpt_tg.prepare", "--input=latin1.txt", "--dataset=x"], "is not UTF-8 text"),
]


def test_bad_inputs_give_one_line_errors(rnd):
    (rnd / "empty").mkdir(exist_ok=True)
    small_checkpoint(rnd / "good", 1)
    (rnd / "corrupt").mkdir(exist_ok=True)
    (rnd / "corrupt/ckpt.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    (rnd / "short.txt").write_text("too short\n", encoding="utf-8")
    (rnd / "latin1.txt").write_bytes("caf\xe9 ".encode("latin-1") * 500)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for args, message in BAD_INPUTS:
        script = [str(ROOT / args[0])] if args[0].endswith(".py") else args[:2]
        rest = args[1:] if args[0].endswith(".py") else args[2:]
        r = subprocess.run([sys.executable, *script, *rest], cwd=rnd, capture_output=True, text=True, env=env, timeout=120)
        lines = r.stderr.strip().splitlines()
        assert r.returncode not in (0, None), args
        assert "Traceback" not in r.stderr and len(lines) == 1, (args, r.stderr)
        assert lines[0].startswith("error: ") and message in lines[0], (args, lines[0])
