"""The CPU thread pool (cpu_runtime.py): thread-split kernels go through it, and every part runs exactly once."""
import ctypes
import os
import subprocess

import numpy as np
import pytest
from tinygrad import Device, Tensor, TinyJit
from tinygrad.helpers import NUM_CPU_THREADS

from nanogpt_tg.cpu import runtime as cpu_runtime
from nanogpt_tg.device import set_device

pytestmark = pytest.mark.skipif(not Device.DEFAULT.startswith("CPU") or NUM_CPU_THREADS.value < 2,
                                reason="the pool runs CPU kernels on two or more threads")


@pytest.fixture
def parts_run(monkeypatch):
    """The number of parts of each kernel run through the pool during the test."""
    if os.environ.get("NANOGPT_TG_CPU_THREADS") == "0":
        pytest.skip("NANOGPT_TG_CPU_THREADS=0: the pool is off")
    set_device("cpu")
    assert cpu_runtime._run_parts is not None, "the pool did not install"
    seen, run = [], cpu_runtime._run_parts
    monkeypatch.setattr(cpu_runtime, "_run_parts", lambda *a: (seen.append(a[1]), run(*a))[1])
    return seen


def test_big_elementwise_and_matmul_equal_numpy(parts_run):
    """Kernels large enough to be split (tinygrad's bar: 128K operations a part) give numpy's results: a part run
    twice or skipped would leave stale or doubled values. float32 against float64: 1e-5 relative, plus 1e-4 absolute
    for the products (sums of up to 264 terms of size ~1; float32 rounding reaches ~2e-5) and 1e-5 for exp."""
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((520, 264)).astype(np.float32), rng.standard_normal((264, 392)).astype(np.float32)
    ta, tb = Tensor(a), Tensor(b)
    np.testing.assert_allclose((ta @ tb).numpy(), a.astype(np.float64) @ b, rtol=1e-5, atol=1e-4)  # tinygrad's tiles
    c, d = a[:384, :128], b[:128, :384]  # sizes that take kernels.py's 16x8 tiles
    np.testing.assert_allclose((Tensor(c) @ Tensor(d)).numpy(), c.astype(np.float64) @ d, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose((ta * 3 + 1).exp().numpy(), np.exp(a.astype(np.float64) * 3 + 1), rtol=1e-5, atol=1e-5)
    assert parts_run and all(p == NUM_CPU_THREADS.value for p in parts_run), parts_run


def test_off_switch(monkeypatch):
    """NANOGPT_TG_CPU_THREADS=0 keeps tinygrad's runtime (install reports False and patches nothing)."""
    monkeypatch.setenv("NANOGPT_TG_CPU_THREADS", "0")
    monkeypatch.setattr(cpu_runtime, "_run_parts", None)
    assert cpu_runtime.install() is False


def test_jitted_batches_run_as_one_graph_with_new_inputs_each_call():
    """A TinyJit on the CPU runs its kernels as a CPUGraph table; called with other input tensors each time (the graph
    rewrites their addresses), every call's result equals numpy's (1e-5 relative, 1e-4 absolute: sums of 64 terms)."""
    set_device("cpu")
    built = []

    class Spy(cpu_runtime.CPUGraph):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            built.append(len(self.calls))

    Device["CPU"].graph = Spy
    try:
        step = TinyJit(lambda a, b: ((a @ b).relu() * 2 + a.sum(1, keepdim=True)).realize())
        rng = np.random.default_rng(5)
        for _ in range(4):
            a, b = rng.standard_normal((96, 64)).astype(np.float32), rng.standard_normal((64, 80)).astype(np.float32)
            want = np.maximum(a.astype(np.float64) @ b, 0) * 2 + a.sum(1, keepdims=True)
            np.testing.assert_allclose(step(Tensor(a), Tensor(b)).numpy(), want, rtol=1e-5, atol=1e-4)
    finally:
        Device["CPU"].graph = cpu_runtime.CPUGraph
    assert built and built[0] >= 2, f"no graph of two or more kernels was built: {built}"


COUNTING_KERNEL = r"""
#include <stdint.h>
/* part `part` of a kernel adds 1 to out[part]; out has room past the parts, where nothing may be written */
void count_part(uint64_t out, uint64_t part) { ((volatile int64_t *)out)[part] += 1; }
"""


def test_every_part_runs_once_when_kernels_have_different_part_counts(tmp_path):
    """Kernels one after another with different numbers of parts (tinygrad's heuristic gives a small kernel fewer
    parts than a big one on a many-core CPU): each run_parts returns only when each of its parts ran exactly once,
    and no part of an older kernel runs with a newer one's arguments (a thread that lost the race for the last part
    once claimed a part past the end of the next kernel). Exact counts: 100,000 kernels in batches of 2,000 (run_list,
    no Python between them), none may differ; before the fix 116-350 did, with the same kernels all of 2 parts none."""
    set_device("cpu")
    if cpu_runtime._run_parts is None:
        pytest.skip("the pool is off")
    lib_path = tmp_path / "count.so"
    subprocess.run([os.environ.get("CC", "clang"), "-O2", "-shared", "-fPIC", "-x", "c", "-", "-o", str(lib_path)],
                   input=COUNTING_KERNEL.encode(), check=True, capture_output=True)
    kernel = ctypes.cast(ctypes.CDLL(str(lib_path)).count_part, ctypes.c_void_p).value
    n, room, entry = 2000, 16, cpu_runtime.ENTRY
    parts = np.resize([8, 3, 5, 2, 7], n)
    out = np.zeros((n, room), dtype=np.int64)
    table = (ctypes.c_uint64 * (entry * n))()
    for j in range(n):  # one jitted batch: kernel, parts, the slot of the part number, the argument count, arguments
        table[entry * j:entry * j + 6] = [kernel, int(parts[j]), 1, 2, out[j].ctypes.data, 0]
    want = (np.arange(room) < parts[:, None]).astype(np.int64)
    bad = 0
    for _ in range(50):
        out[:] = 0
        cpu_runtime._run_list(table, n)
        bad += int(np.any(out != want, axis=1).sum())
    assert bad == 0, f"{bad} of {50 * n:,} kernels ran a part twice, skipped one or ran one past their end"
