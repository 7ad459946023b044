"""The jits' shared scratch memory (cpu/scratch.py): jits whose arenas start at one address still compute what numpy
does, calls that run at once get ranges of their own (a replica of a jit too), faulting in ahead changes no byte,
and a run's shape brings back the size its arenas needed last time."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from tinygrad import Tensor, TinyJit
from tinygrad.device import Buffer
from tinygrad.uop.ops import Ops, buffers

from nanogpt_tg import cpu

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(cpu.status.get("scratch") != "on", reason="the scratch patch is off here (not Linux, "
                                "NANOGPT_TG_CPU_SCRATCH=0, or the CPU layer is off)")


def scratch():
    from nanogpt_tg.cpu import scratch
    return scratch


def arena_addresses(jit) -> set[int]:
    """The addresses of the arenas in jit's captured calls that are views of a scratch range."""
    found = set()
    for u in jit.captured.linear.toposort():
        b = buffers.get(u) if u.op is Ops.BUFFER else None
        if isinstance(b, Buffer) and b.options is not None and b.options.external_ptr is not None:
            found.add(b.options.external_ptr)
    return found


def make_mlp(rng, n_in, n_hidden):
    """A jitted two-layer MLP with its own weights: its hidden activations are the arena's."""
    w1 = Tensor(rng.standard_normal((n_in, n_hidden)).astype(np.float32) / np.sqrt(n_in)).realize()
    w2 = Tensor(rng.standard_normal((n_hidden, 3)).astype(np.float32) / np.sqrt(n_hidden)).realize()

    @TinyJit
    def f(x: Tensor) -> Tensor:
        return ((x @ w1).relu().exp2() @ w2).realize()

    def reference(x):
        return np.exp2(np.maximum(x @ w1.numpy(), 0)) @ w2.numpy()
    return f, reference


def test_two_jits_share_one_arena_and_compute_what_numpy_does():
    """Two jits with intermediates of different sizes, called in turn: each call's results are numpy's (float32
    sums, rtol 1e-5), though both jits' arenas start at the same address."""
    rng = np.random.default_rng(0)
    small, small_ref = make_mlp(rng, 24, 40)
    large, large_ref = make_mlp(rng, 32, 96)
    for step in range(5):
        xs, xl = (rng.standard_normal((64, n)).astype(np.float32) for n in (24, 32))
        np.testing.assert_allclose(small(Tensor(xs)).numpy(), small_ref(xs), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(large(Tensor(xl)).numpy(), large_ref(xl), rtol=1e-5, atol=1e-5)
    start = scratch()._range(("CPU", 0, 0)).addr
    assert arena_addresses(small) == arena_addresses(large) == {start}


def test_a_jit_captured_in_another_lane_has_scratch_of_its_own():
    """What on_cores runs at once is captured under lanes of its own: its arena is elsewhere, and both jits called
    at once on the cores compute what numpy does."""
    from nanogpt_tg.cpu import runtime

    rng = np.random.default_rng(1)
    jits = [make_mlp(rng, 16, 64) for _ in range(2)]
    x = [Tensor(rng.standard_normal((128, 16)).astype(np.float32)).realize() for _ in range(2)]
    for k, (f, _) in enumerate(jits):
        with cpu.scratch_lane(k):
            f(x[k]), f(x[k])  # tinygrad's jit runs its first call eagerly, captures the second
    assert arena_addresses(jits[0][0]) == {scratch()._range(("CPU", 0, 0)).addr}
    assert arena_addresses(jits[1][0]) == {scratch()._range(("CPU", 0, 1)).addr}
    if runtime.cores() >= 2:
        for _ in range(3):
            out = runtime.on_cores([lambda: jits[0][0](x[0]), lambda: jits[1][0](x[1])])
            for k in range(2):
                np.testing.assert_allclose(out[k].numpy(), jits[k][1](x[k].numpy()), rtol=1e-5, atol=1e-5)


def test_a_replica_runs_at_once_with_its_jit_on_other_buffers():
    """A replica of a captured jit (the train step's shares on the cores, one capture for all) has its arena in its
    own lane's range and no capture of its own, and run at once with the original on other input and output buffers,
    each writes what numpy computes (float32, rtol 1e-5). A jit that writes a buffer besides its inputs and arenas
    gets none (both copies would write it) unless the replica is given a buffer of its own in its place."""
    from nanogpt_tg.cpu import runtime

    rng = np.random.default_rng(3)
    w1, w2 = (Tensor(rng.standard_normal(shape).astype(np.float32) / 4).realize() for shape in ((16, 48), (48, 3)))

    @TinyJit
    def f(x: Tensor, out: Tensor) -> Tensor:
        return out.assign(((x @ w1).relu().exp2() @ w2) * 2 + 1).realize()

    def reference(x):
        return (np.exp2(np.maximum(x @ w1.numpy(), 0)) @ w2.numpy()) * 2 + 1
    xs = [Tensor(rng.standard_normal((96, 16)).astype(np.float32)).realize() for _ in range(2)]
    outs = [Tensor.zeros(96, 3).contiguous().realize() for _ in range(2)]
    f(xs[0], outs[0]), f(xs[0], outs[0])  # the first call runs eagerly, the second captures
    copy = cpu.replica(f, 1)
    assert copy is not None and copy.captured is not f.captured
    assert arena_addresses(f) == {scratch()._range(("CPU", 0, 0)).addr}
    assert arena_addresses(copy) == {scratch()._range(("CPU", 0, 1)).addr}
    for _ in range(3):
        data = [rng.standard_normal((96, 16)).astype(np.float32) for _ in range(2)]
        for x, d in zip(xs, data):
            x.assign(Tensor(d)).realize()
        calls = [lambda: f(xs[0], outs[0]), lambda: copy(xs[1], outs[1])]
        runtime.on_cores(calls) if runtime.cores() >= 2 else [c() for c in calls]
        for out, d in zip(outs, data):
            np.testing.assert_allclose(out.numpy(), reference(d), rtol=1e-5, atol=1e-5)

    counts = [Tensor.zeros(1).contiguous().realize() for _ in range(2)]  # not inputs: a replica would share one

    @TinyJit
    def g(x: Tensor, out: Tensor) -> Tensor:
        return out.assign(((x @ w1).relu() @ w2) * 2).realize(counts[0].assign(counts[0] + 1))
    g(xs[0], outs[0]), g(xs[0], outs[0])
    assert cpu.replica(g, 1) is None
    copy = cpu.replica(g, 1, {counts[0]: counts[1]})  # unless it is given one of its own
    for _ in range(3):
        calls = [lambda: g(xs[0], outs[0]), lambda: copy(xs[1], outs[1])]
        runtime.on_cores(calls) if runtime.cores() >= 2 else [c() for c in calls]
    assert counts[0].item() == 5 and counts[1].item() == 3  # the eager call, the capture, 3 replays; 3 of the copy
    np.testing.assert_allclose(outs[1].numpy(), (np.maximum(xs[1].numpy() @ w1.numpy(), 0) @ w2.numpy()) * 2,
                               rtol=1e-5, atol=1e-5)


def test_faulting_in_ahead_leaves_what_is_written():
    """The idle-priority thread faults a range in as if written, but every byte written before stays."""
    r = scratch().Range(64 << 20)
    view = np.frombuffer(r.mem, dtype=np.uint8)
    pattern = np.random.default_rng(2).integers(0, 256, 48 << 20, dtype=np.uint8)
    view[:pattern.size] = pattern
    r.want(64 << 20)
    deadline = time.monotonic() + 60
    while r.done < r.target and time.monotonic() < deadline:
        time.sleep(0.01)
    assert r.done == 64 << 20  # all of it (Linux 5.14+ has MADV_POPULATE_WRITE)
    np.testing.assert_array_equal(view[:pattern.size], pattern)
    assert not view[pattern.size:].any()  # faulted in, never written: zeros


SHAPE_RUN = """
import json, sys
sys.path.insert(0, {root!r})
import numpy as np
from nanogpt_tg.device import set_device
set_device("cpu")
from nanogpt_tg import cpu
from nanogpt_tg.cpu import scratch
from tinygrad import Tensor, TinyJit
cpu.expect_scratch("a run's shape")
asked = scratch._range(("CPU", 0, 0)).target  # before any jit: what the last run of this shape needed
w = Tensor(np.ones((64, 512), np.float32)).realize()
f = TinyJit(lambda x: ((x @ w).relu() @ w.T).sum(1).realize())
for _ in range(3):
    out = f(Tensor(np.ones((256, 64), np.float32))).numpy()
print(json.dumps({{"asked": asked, "needed": scratch._need[("CPU", 0, 0)], "out": float(out[0])}}))
"""


def test_a_run_of_the_same_shape_faults_in_what_the_last_one_needed(tmp_path):
    def run():
        proc = subprocess.run([sys.executable, "-c", SHAPE_RUN.format(root=str(ROOT))], capture_output=True, text=True,
                              timeout=300, env={**os.environ, "CACHEDB": str(tmp_path / "cache.db")})
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1])
    first, second = run(), run()
    assert first["asked"] == 0 and first["needed"] >= 256 * 512 * 4  # its hidden (256, 512) float32 activations
    assert second["asked"] == first["needed"] == second["needed"]
    assert first["out"] == second["out"] == 512 * 64.0 * 64  # each of 512 hidden units is 64, times 64 ones
