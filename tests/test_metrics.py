"""metrics.jsonl from a real run and its resume, the ETA on a terminal, progress counters, and the plot command."""
import errno
import io
import json
import re
import sys
import time

import pytest

from nanogpt_tg.config import TrainConfig
from nanogpt_tg.estimate import RunEstimate
from nanogpt_tg import metrics
from nanogpt_tg.metrics import METRICS_NAME, MetricsLog, curves, read_metrics
from nanogpt_tg.plot import main as plot_main
from nanogpt_tg.progress import ETA, Progress, format_duration, progress
from nanogpt_tg.train import get_lr, train

# the smallest run that has evals, logs, a checkpoint and a resume (shapes as in test_train, so kernels are cached)
BASE = dict(dataset="periodic", device="cpu", n_layer=1, n_head=2, n_embd=16, block_size=8, batch_size=8,
            gradient_accumulation_steps=1, dropout=0.0, bias=False, learning_rate=1e-2, min_lr=1e-3, warmup_iters=2,
            lr_decay_iters=12, eval_interval=4, eval_iters=2, log_interval=2, beta2=0.99)
PLAIN_ITER_LINE = re.compile(r"^iter \d+: loss \d+\.\d{4}, time \d+\.\d{2}ms, mfu -?\d+\.\d{2}%$")


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture(scope="module")
def runs(periodic):
    """A scratch run to iteration 8 with plain stdout, then a resume to 12 with stdout a terminal."""
    d = periodic
    mp = pytest.MonkeyPatch()
    out = str(d / "out")
    try:
        plain = io.StringIO()
        mp.setattr(sys, "stdout", plain)
        train(TrainConfig(**BASE, out_dir=out, max_iters=8))
        first = (d / "out" / METRICS_NAME).read_text(encoding="utf-8")
        tty = Terminal()
        mp.setattr(sys, "stdout", tty)
        train(TrainConfig(**BASE, out_dir=out, max_iters=12, init_from="resume"))
    finally:
        mp.undo()
    lines = (d / "out" / METRICS_NAME).read_text(encoding="utf-8").splitlines()
    return d / "out", plain.getvalue(), tty.getvalue(), first, [json.loads(line) for line in lines]


def test_metrics_jsonl_has_one_line_per_log_and_eval(runs):
    out_dir, _, _, first, records = runs
    first = [json.loads(line) for line in first.splitlines()]
    assert [(r["kind"], r["iter"]) for r in first] == [("start", 0), ("eval", 0), ("iter", 0), ("iter", 2), ("eval", 4),
        ("iter", 4), ("iter", 6), ("eval", 8), ("iter", 8)]
    cfg = TrainConfig(**BASE)
    for r in first:
        assert r["time"] > 1.6e9
        if r["kind"] != "start":
            assert r["lr"] == pytest.approx(get_lr(r["iter"], cfg), rel=1e-12)
        if r["kind"] == "eval":
            assert 0 < r["val_loss"] < 3 and 0 < r["train_loss"] < 3  # ln(10) = 2.30 at init, lower after
        if r["kind"] == "iter":
            assert r["ms_per_iter"] > 0
            # tokens/s = tokens per iteration (1 * 8 * 8) / seconds per iteration
            assert r["tokens_per_s"] == pytest.approx(64 / (r["ms_per_iter"] / 1000), rel=1e-9)


def test_resume_appends_to_metrics(runs):
    out_dir, _, _, first, records = runs
    n = len(first.splitlines())
    assert [json.loads(line) for line in first.splitlines()] == records[:n]  # appended, not clobbered
    assert [(r["kind"], r["iter"]) for r in records[n:]] == [("start", 8), ("eval", 8), ("iter", 8), ("iter", 10),
        ("eval", 12), ("iter", 12)]
    assert records[n]["init_from"] == "resume"
    # the reader keeps the resumed run's records from its checkpoint's iteration on
    kept = [(r["kind"], r["iter"]) for r in read_metrics(out_dir)]
    assert kept == [(r["kind"], r["iter"]) for r in records[:n - 2]] + [(r["kind"], r["iter"]) for r in records[n:]]


def test_log_lines_plain_off_a_terminal_with_an_eta_on_one(runs):
    _, plain, tty, _, _ = runs
    plain_iters = [line for line in plain.splitlines() if line.startswith("iter ")]
    assert len(plain_iters) == 5 and all(PLAIN_ITER_LINE.match(line) for line in plain_iters)  # nanoGPT's lines
    assert "\r" not in plain and "\x1b" not in plain
    tty_iters = [line for line in tty.splitlines() if line.startswith("iter ")]
    assert [line.split(":")[0] for line in tty_iters] == ["iter 8", "iter 10", "iter 12"]
    assert all(PLAIN_ITER_LINE.match(line) for line in tty_iters[:2])  # no rate while the first steps compile
    assert re.search(r", eta \d+s$", tty_iters[2])


def test_eta_and_durations():
    eta = ETA(max_iters=100, stream=Terminal())
    assert eta.seconds_left(0) is None and eta.seconds_left(1) is None  # compiling: no rate yet
    eta.mark = (1, time.time() - 2.0)  # 10 iterations took 2 s
    assert eta.seconds_left(11) == pytest.approx(89 * 0.2, rel=0.05)
    assert ETA(100, stream=io.StringIO()).suffix(50) == ""
    assert [format_duration(s) for s in (0.4, 59, 61, 3599.6, 7384)] == ["0s", "59s", "1m01s", "1h00m", "2h03m"]


def test_progress_counter_only_on_a_terminal():
    tty, pipe = Terminal(), io.StringIO()
    assert list(progress(range(5), "sampling", unit="tokens", stream=pipe)) == list(range(5))
    assert pipe.getvalue() == ""
    bar = Progress(4, "encoding", unit="chars", stream=tty, delay=0.0)
    bar.update(4)
    assert tty.getvalue().startswith("\rencoding: 4/4 chars [0s<0s]")
    bar.close()
    assert tty.getvalue().endswith("\r\x1b[K")  # erased, so the next line starts clean
    quick = Terminal()
    list(progress(range(3), "sampling", stream=quick))  # done before the 0.5 s delay: nothing drawn
    assert quick.getvalue() == ""


def test_run_estimate_from_the_first_timed_batches(capsys):
    """nanoGPT's GPU preset on a CPU: 10 s per eval batch (the first, compiling, left out by the median) makes
    5001 steps of about 3 forward passes and 21 evals of 2 x 200 batches: 5001 * 30 + 21 * 400 * 10 = 234,030 s."""
    cfg = TrainConfig(max_iters=5000, eval_interval=250, eval_iters=200, gradient_accumulation_steps=1,
                      dataset="shakespeare_char")
    estimate = RunEstimate(cfg, 0, "CPU", on_cpu=True)
    estimate.batch_s = [40.0, 10.0, 10.0]  # as eval_batch(i) records them
    assert estimate.counts() == (5001, 21) and estimate.seconds() == pytest.approx(234_030)
    estimate.check("eval")
    out = capsys.readouterr().out
    assert out == ("note: this run will take about 65h00m on CPU (5,001 iterations, 21 evals of 2 x 200 batches); "
                   "nanoGPT's CPU run takes minutes: python train.py config/train_shakespeare_char_cpu.py\n")
    estimate.check("step")  # said once
    assert capsys.readouterr().out == ""
    resumed = RunEstimate(cfg, 4999, "CUDA", on_cpu=False)
    resumed.step_s = [2.0] * 5
    assert resumed.counts() == (2, 1) and resumed.seconds() == pytest.approx(2 * 2.0 + 400 * 2.0 / 3)
    resumed.check("step")  # minutes: nothing said
    assert capsys.readouterr().out == ""


def write_metrics(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"kind": "iter", "it', encoding="utf-8")


def test_reader_stitches_resumes_and_skips_a_cut_line(tmp_path):
    write_metrics(tmp_path / METRICS_NAME, [
        {"kind": "start", "iter": 0}, {"kind": "eval", "iter": 0, "train_loss": 4.0, "val_loss": 4.1},
        {"kind": "iter", "iter": 0, "loss": 4.2}, {"kind": "iter", "iter": 5, "loss": 3.0},
        {"kind": "eval", "iter": 5, "train_loss": 3.1, "val_loss": 3.2}, {"kind": "iter", "iter": 7, "loss": 2.9},
        {"kind": "start", "iter": 5}, {"kind": "eval", "iter": 5, "train_loss": 3.1, "val_loss": 3.3},
        {"kind": "iter", "iter": 5, "loss": 2.8}])
    c = curves(read_metrics(tmp_path))
    assert c["train"] == ([0, 5], [4.2, 2.8])  # the first run's iterations 5 and 7 were replayed by the resume
    assert c["eval_val"] == ([0, 5], [4.1, 3.3])


def kinds(records):
    return [(r["kind"], r["iter"], r.get("loss")) for r in records]


def test_a_resume_after_a_cut_line_starts_on_a_line_of_its_own(tmp_path):
    path = tmp_path / METRICS_NAME
    write_metrics(path, [{"kind": "start", "iter": 0}, {"kind": "iter", "iter": 0, "loss": 4.0},
                         {"kind": "iter", "iter": 5, "loss": 3.0}])  # the crash cut the next line short
    log = MetricsLog(tmp_path, 5, "resume")
    log.log("iter", 5, loss=2.5)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[3] == '{"kind": "iter", "it' and json.loads(lines[4])["kind"] == "start" and len(lines) == 6
    assert kinds(read_metrics(path)) == [("start", 0, None), ("iter", 0, 4.0), ("start", 5, None), ("iter", 5, 2.5)]


def test_reader_keeps_the_last_of_repeated_iterations_and_reads_a_joined_start(tmp_path):
    path = tmp_path / METRICS_NAME
    start6 = json.dumps({"kind": "start", "iter": 6})
    path.write_text("\n".join([
        json.dumps({"kind": "start", "iter": 0}), json.dumps({"kind": "iter", "iter": 5, "loss": 3.0}),
        json.dumps({"kind": "iter", "iter": 5, "loss": 2.9}),  # a repeat with no start record before it
        json.dumps({"kind": "iter", "iter": 7, "loss": 2.7}),
        '{"kind": "iter", "it' + start6,  # an older version joined a resume's start onto a cut line
        json.dumps({"kind": "iter", "iter": 7, "loss": 2.6})]) + "\n", encoding="utf-8")
    assert kinds(read_metrics(path)) == [("start", 0, None), ("iter", 5, 2.9), ("start", 6, None), ("iter", 7, 2.6)]


def test_a_scratch_run_starts_a_new_file_and_keeps_the_old_one(tmp_path, capsys):
    out = tmp_path / "out"
    MetricsLog(out, 0, "scratch")  # nothing written yet: a run that fails here leaves no out_dir behind
    assert not out.exists()
    for run in (1, 2):
        log = MetricsLog(out, 0, "scratch")
        log.log("iter", 0, loss=float(run))
        MetricsLog(out, 1, "resume").log("iter", 1, loss=0.5)  # a resume appends
    assert kinds(read_metrics(out)) == [("start", 0, None), ("iter", 0, 2.0), ("start", 1, None), ("iter", 1, 0.5)]
    assert kinds(read_metrics(out / f"{METRICS_NAME}.1"))[1] == ("iter", 0, 1.0)
    assert f"kept as {METRICS_NAME}.1; this run starts a new file" in capsys.readouterr().out


def test_a_full_disk_warns_once_and_the_run_goes_on(tmp_path, monkeypatch, capsys):
    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    log = MetricsLog(tmp_path, 10, "resume")
    monkeypatch.setattr(metrics.os, "write", full)  # the disk, not the code under test
    log.log("eval", 10, val_loss=2.0)
    log.log("iter", 10, loss=1.9)  # no exception: training goes on to its checkpoint
    monkeypatch.undo()  # space freed
    log.log("iter", 11, loss=1.8)
    err = capsys.readouterr().err
    assert err.count("warning: could not append to") == 1 and "No space left on device" in err
    assert "free disk space" in err
    assert kinds(read_metrics(tmp_path)) == [("start", 10, None), ("iter", 11, 1.8)]


def test_plot_command_writes_loss_png(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="the plot needs the plot extra: pip install -e '.[plot]'")
    evals = [{"kind": "eval", "iter": i, "train_loss": 4 / (1 + i / 50), "val_loss": 4.1 / (1 + i / 60)}
             for i in range(0, 301, 100)]
    iters = [{"kind": "iter", "iter": i, "loss": 4 / (1 + i / 50) + 0.1 * (i % 3)} for i in range(301)]
    write_metrics(tmp_path / METRICS_NAME, [{"kind": "start", "iter": 0}] + evals + iters)
    plot_main([f"--out_dir={tmp_path}"])
    png = (tmp_path / "loss.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert f"wrote {tmp_path / 'loss.png'}" in capsys.readouterr().out


def test_plot_command_help_and_errors(tmp_path, capsys, monkeypatch):
    with pytest.raises(SystemExit) as e:
        plot_main(["--help"])
    assert e.value.code == 0 and "--out_dir" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"metrics.jsonl not found; train first"):
        plot_main([f"--out_dir={tmp_path}"])
    write_metrics(tmp_path / METRICS_NAME, [{"kind": "start", "iter": 0}])
    with pytest.raises(SystemExit, match="no losses yet"):
        plot_main([f"--out_dir={tmp_path}"])
    write_metrics(tmp_path / METRICS_NAME, [{"kind": "start", "iter": 0}, {"kind": "iter", "iter": 0, "loss": 4.0}])
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # as if matplotlib were not installed
    with pytest.raises(SystemExit, match=r"needs matplotlib.*pip install 'nanogpt-tg\[plot\]'"):
        plot_main([f"--out_dir={tmp_path}"])
