"""Ctrl-C and SIGTERM end a command with one line and status 130 at any point: during the imports, during a cold
compile (promptly: nothing to save yet), after a save though the SIGTERM to the process group killed tinygrad's
compile workers, and a second signal at once, whatever is running. A normal end does not wait for killed workers."""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nanogpt_tg.data import prepare_text

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--dataset=sig", "--device=cpu", "--n_layer=1", "--n_head=2", "--n_embd=16", "--block_size=16", "--batch_size=4",
        "--gradient_accumulation_steps=1", "--eval_iters=2", "--max_iters=50", "--out_dir=out"]
pytestmark = pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads signal masks from /proc")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("signals")
    prepare_text("".join(np.random.default_rng(0).choice(list("abcdefgh \n"), size=3000)), d / "data" / "sig", 16)
    return d


def catches_sigterm(pid: int) -> bool:
    """Whether the process has a handler for SIGTERM yet (SigCgt in /proc/PID/status)."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(caught >> (signal.SIGTERM - 1) & 1)


def start(workdir, *args, env=None) -> tuple[subprocess.Popen, Path]:
    log = workdir / "log.txt"
    proc = subprocess.Popen([sys.executable, "-u", str(ROOT / "train.py"), *ARGS, *args], cwd=workdir,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    return proc, log


def wait_for(proc, ready, timeout=120):
    deadline = time.time() + timeout
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, "the run ended before the signal was sent"


def test_sigterm_during_the_imports_says_so(workdir):
    proc, log = start(workdir)
    wait_for(proc, lambda: catches_sigterm(proc.pid))  # the command's first line ran: tinygrad is still loading
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    out = log.read_text()
    assert "stopped by SIGTERM; nothing to save yet" in out and "Traceback" not in out
    assert "tokens per iteration" not in out  # it did stop during the imports
    assert not (workdir / "out").exists()


def test_sigterm_during_a_cold_compile_stops_promptly_and_leaves_nothing(workdir, tmp_path):
    # a fresh kernel cache: the first eval and step compile for many seconds here; nothing is trained yet
    proc, log = start(workdir, "--out_dir=cold", env={"CACHEDB": str(tmp_path / "cache.db")})
    wait_for(proc, lambda: "num non-decayed parameter tensors" in log.read_text())  # the last line before the loop
    time.sleep(0.5)  # into the compile
    sent = time.time()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    stopped_in = time.time() - sent
    out = log.read_text()
    assert "stopped by SIGTERM; nothing to save yet" in out and "Traceback" not in out
    assert "step 0:" not in out and "iter 0:" not in out  # stopped inside the compile, not after it
    assert stopped_in < 15, stopped_in  # not at the end of a step: a cold one compiles for tens of seconds
    assert not (workdir / "cold").exists()  # a run that wrote nothing leaves no out_dir behind


SPIN_C = """#include <time.h>
void spin(double s) {  /* busy for s seconds, whatever signals come: like one long jitted step on the CPU */
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  do clock_gettime(CLOCK_MONOTONIC, &b); while (b.tv_sec - a.tv_sec + (b.tv_nsec - a.tv_nsec) * 1e-9 < s);
}
"""


def test_a_second_signal_quits_at_once_whatever_runs(tmp_path):
    """The training loop's handler, armed (a step was done): the first signal asks for a save; the second comes while
    the main thread is inside a C call of a minute (Python's handlers wait for it) and a worker pool, like tinygrad's
    compile workers, is busy: it exits 130 at once all the same."""
    (tmp_path / "spin.c").write_text(SPIN_C)
    subprocess.run(["clang", "-O1", "-shared", "-fPIC", str(tmp_path / "spin.c"), "-o", str(tmp_path / "spin.so")],
                   check=True)
    script = """if True:
        import ctypes, multiprocessing, os, signal, sys, threading, time
        from nanogpt_tg.interrupt import Interrupt, install
        install()
        spin = ctypes.CDLL(sys.argv[1]).spin
        spin.argtypes = [ctypes.c_double]
        with Interrupt() as interrupt:
            interrupt.armed = True
            pool = multiprocessing.get_context("spawn").Pool(1)
            pool.apply_async(time.sleep, (60,))
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)
            assert interrupt.requested == "SIGINT"
            threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
            spin(60.0)
    """
    t0 = time.time()
    r = subprocess.run([sys.executable, "-c", script, str(tmp_path / "spin.so")], cwd=ROOT, capture_output=True,
                       text=True, timeout=90)
    assert r.returncode == 130, r.stderr
    assert "SIGINT: saving a checkpoint after this step" in r.stdout
    # the parent's last word; a spawned worker still starting up may print its own EOFError as the parent goes
    assert r.stderr.strip().splitlines()[0] == "SIGINT again: quit at once, without saving", r.stderr
    assert time.time() - t0 < 20


def with_compile_workers(body: str) -> str:
    """A command's script that starts tinygrad's compile workers first, as a cold compile does (a warm kernel cache
    needs none), and waits for them: each idle one then takes its turn holding the pool's task-queue lock."""
    return f"""if True:
        import multiprocessing, os, signal, sys
        from nanogpt_tg import interrupt
        interrupt.install("nothing to save yet")
        from tinygrad.engine.worker import get_worker_pool
        assert get_worker_pool().apply(int, ("7",)) == 7
        from nanogpt_tg.cli import run
        {body}
    """


def run_in_group(script: str, cwd, log: Path, *args) -> subprocess.Popen:
    """In its own process group (session), as under timeout, systemd or SLURM, with tinygrad's compile workers on."""
    path = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))  # this checkout's nanogpt_tg
    return subprocess.Popen([sys.executable, "-u", "-c", script, *args], cwd=cwd, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": path, "PARALLEL": "2"})


def exit_status(proc: subprocess.Popen, bound: float) -> int:
    """proc's status within bound seconds; a process still running then is killed, with its group, and fails."""
    try:
        return proc.wait(timeout=bound)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"still running {bound:g} s later: hung at exit")


def left_in_session(sid: int, within: float = 5.0) -> list[str]:
    """The processes still alive in session sid after within seconds (a compile worker the run left behind would be
    one; multiprocessing's resource tracker takes a moment to see its parent gone)."""
    deadline = time.time() + within
    while True:
        left = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()  # after the command's name, which may hold spaces
            except OSError:  # gone meanwhile
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                left.append(stat.parent.name)
        if not left or time.time() > deadline:
            return left
        time.sleep(0.05)


def test_sigterm_to_the_process_group_saves_and_exits_though_it_killed_the_compile_workers(workdir):
    """`timeout`, systemd and SLURM signal the whole group: the compile workers (which ignore SIGINT only) die with
    the idle one's lock on the pool's task queue held, and a normal exit would wait for it for ever in
    multiprocessing's finalizer. After the save the run must still end at once, with its line and status 130."""
    log = workdir / "group.txt"
    script = with_compile_workers("""from nanogpt_tg.config import TrainConfig, cli
        from nanogpt_tg.train import train
        run(train, cli(TrainConfig, "train.py", ""))""")
    proc = run_in_group(script, workdir, log, *ARGS, "--max_iters=100000", "--log_interval=1", "--out_dir=group")
    wait_for(proc, lambda: "iter 1:" in log.read_text())  # armed: a step is done, the signal saves it
    os.killpg(proc.pid, signal.SIGTERM)
    assert exit_status(proc, 20) == 130
    assert not left_in_session(proc.pid)  # the workers, and the ones the pool started in place of the killed, are gone
    out = log.read_text()
    assert re.search(r"^stopped by SIGTERM at iter \d+; resume with --init_from=resume$", out, re.M), out
    assert "Traceback" not in out and (workdir / "group" / "ckpt.safetensors").is_file()  # a worker's EOFError, say


def test_a_normal_end_does_not_wait_for_killed_compile_workers(tmp_path):
    """Compile workers killed by someone else's SIGTERM must not hang the end of a command that was not signalled."""
    log = tmp_path / "log.txt"
    script = with_compile_workers("""for child in multiprocessing.active_children():
            os.kill(child.pid, signal.SIGTERM)
            child.join()
        run(print, "done")""")
    proc = run_in_group(script, tmp_path, log)
    assert exit_status(proc, 20) == 0, log.read_text()
    assert not left_in_session(proc.pid)
    assert log.read_text().splitlines()[-1] == "done"
