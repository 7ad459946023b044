"""The CPU matmul kernel options (kernels.py): applied where meant, and the products still equal numpy's."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tinygrad.codegen as codegen
import tinygrad.codegen.opt.heuristic as heuristic
import tinygrad.engine.realize as realize
from tinygrad import Context, Device, Tensor
from tinygrad.codegen.opt import OptOps

from nanogpt_tg.cpu import kernels

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not Device.DEFAULT.startswith("CPU"), reason="the options are for the CPU backend")


@pytest.fixture
def applied(monkeypatch):
    """The options chosen for each kernel compiled in the test, in this process (PARALLEL=0: no worker processes)."""
    kernels.install()
    seen = []

    def spy(k):
        out = kernels.hand_coded_optimizations(k)
        seen.append(tuple(out.applied_opts))
        return out

    monkeypatch.setattr(heuristic, "hand_coded_optimizations", spy)
    programs = {}  # an empty program cache, in memory only: every kernel is generated here, none read from disk
    monkeypatch.setattr(realize, "to_program_cache", programs)
    monkeypatch.setattr(codegen, "to_program_cache", programs)
    with Context(PARALLEL=0):
        yield seen


CASES = {
    "x @ w.T (a Linear)": ((40, 24), (56, 24), lambda a, b: a @ b.T),
    "x @ w": ((40, 24), (24, 72), lambda a, b: a @ b),
    "x.T @ g (a weight gradient)": ((88, 24), (88, 40), lambda a, b: a.T @ b),
    "batched heads": ((2, 3, 16, 8), (2, 3, 8, 24), lambda a, b: a @ b),
    "odd sizes (65 classes)": ((13, 20), (65, 20), lambda a, b: a @ b.T),
}


@pytest.mark.parametrize("name", CASES)
def test_matmul_equals_numpy(applied, name):
    """float32 products against numpy's float64, to 1e-5 relative + 1e-5 absolute (O(1) inputs, sums of 8-88 terms)."""
    shape_a, shape_b, op = CASES[name]
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal(shape_a).astype(np.float32), rng.standard_normal(shape_b).astype(np.float32)
    got = op(Tensor(a), Tensor(b)).numpy()
    np.testing.assert_allclose(got, op(a.astype(np.float64), b.astype(np.float64)), rtol=1e-5, atol=1e-5)
    assert applied, "no kernel was generated"


@pytest.mark.parametrize("rows, small", [(64, False), (48, True)])
def test_options_are_applied(applied, rows, small):
    """A Linear-shaped product gets kernels.py's tile (UPCAST_N x UPCAST_M) and the unroll of 4, not tinygrad's 3 x 3;
    one under SMALL_MACS multiply-adds (48 x 64 x 80) gets SMALL_TILE, which compiles faster."""
    rng = np.random.default_rng(8)
    a, w = rng.standard_normal((rows, 64)).astype(np.float32), rng.standard_normal((80, 64)).astype(np.float32)
    got = (Tensor(a) @ Tensor(w).T).numpy()
    np.testing.assert_allclose(got, a.astype(np.float64) @ w.T.astype(np.float64), rtol=1e-5, atol=1e-5)
    assert (rows * 64 * 80 < kernels.SMALL_MACS) == small
    upcast_n, upcast_m, unroll_k = kernels.SMALL_TILE if small else (kernels.UPCAST_N, kernels.UPCAST_M,
                                                                      kernels.UNROLL_K)
    upcasts = sorted(o.arg for opts in applied for o in opts if o.op is OptOps.UPCAST)
    unrolls = [o.arg for opts in applied for o in opts if o.op is OptOps.UNROLL]
    assert upcasts == sorted([kernels.fit(rows, upcast_m), kernels.fit(80, upcast_n)]), applied
    assert unrolls == [unroll_k], applied


def test_odd_sizes_get_the_tiles_that_divide_them(applied):
    """A 65-word vocabulary: the logits (96 x 65) and the tied weight's gradient (65 x 64, over 96 tokens) get
    tiles of divisors (13 or 5 for 65), not tinygrad's heuristic, which ran them at ~15 GFLOP/s here."""
    assert [kernels.fit(65, 16), kernels.fit(65, 8), kernels.fit(768, 16), kernels.fit(7, 4)] == [13, 5, 16, 1]
    rng = np.random.default_rng(9)
    x, w = rng.standard_normal((96, 64)).astype(np.float32), rng.standard_normal((65, 64)).astype(np.float32)
    g = rng.standard_normal((96, 65)).astype(np.float32)
    (Tensor(x) @ Tensor(w).T).realize()
    (Tensor(g).T @ Tensor(x)).realize()
    upcasts = [sorted(o.arg for o in opts if o.op is OptOps.UPCAST) for opts in applied]
    tiles = lambda *sizes: sorted(n for n in sizes if n > 1)  # an upcast of 1 is none (65 has no divisor 2-4)
    logits = tiles(kernels.fit(65, kernels.UPCAST_N), kernels.fit(96, kernels.UPCAST_M))  # 65 the contiguous axis
    gradient = tiles(kernels.fit(64, kernels.UPCAST_N), kernels.fit(65, kernels.UPCAST_M))
    assert logits in upcasts and gradient in upcasts, applied


def test_off_switch(monkeypatch):
    """NANOGPT_TG_MATMUL_OPTS=0: install() leaves tinygrad's heuristic in place."""
    monkeypatch.setenv("NANOGPT_TG_MATMUL_OPTS", "0")
    monkeypatch.setattr(heuristic, "hand_coded_optimizations", kernels._tinygrad_heuristic)
    kernels.install()
    assert heuristic.hand_coded_optimizations is kernels._tinygrad_heuristic


@pytest.mark.parametrize("floats, want", [("16", (16, 8, [16, 8, 4, 2])), ("8", (16, 4, [8, 4, 2])), ("4", (8, 4, [4, 2]))])
def test_tiles_follow_the_vector_width(floats, want):
    """16x8 tiles and 16-float loads only where a register holds 16 floats (AVX-512); AVX2 gets 16x4 tiles (128
    accumulators would spill its 16 registers), 4-float CPUs 8x4. Checked in a fresh process, as the module reads it at
    import."""
    code = "from nanogpt_tg.cpu import kernels as k; print(k.UPCAST_N, k.UPCAST_M, k.WIDE_LOADS)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "NANOGPT_TG_VECTOR_FLOATS": floats}, cwd=str(ROOT)).stdout.split(maxsplit=2)
    assert (int(out[0]), int(out[1]), json.loads(out[2])) == want


def test_exp_kernels_stay_plain_loops(applied):
    """An elementwise kernel with exp in it gets no upcast (clang vectorizes the plain loop; tinygrad's upcast of 4
    made it scalar code, 5x slower), only the split into threads; the values still match numpy's to 1e-6."""
    x = np.random.default_rng(10).standard_normal((64, 520)).astype(np.float32)
    got = (-Tensor(x) * Tensor(x)).exp().numpy()
    np.testing.assert_allclose(got, np.exp(-x.astype(np.float64) ** 2), rtol=1e-6, atol=1e-7)
    assert applied and all(o.op is OptOps.THREAD for opts in applied for o in opts), applied


def test_sums_along_a_strided_axis_read_vectors(applied):
    """dW's sum of partial products over token chunks, laid out as the weight (layers.weight_grad: 64 chunks of
    (strips, out, 16) = (2, 48, 16) into 48 x 32): the output axis contiguous in both buffers upcast by the vector
    width, the chunk axis unrolled. tinygrad's heuristic left these sums scalar, one float of each partial at a time
    (~1.4 GB/s at the preset's size). Equal to numpy's float64 sums to 1e-5."""
    partial = np.random.default_rng(12).standard_normal((64, 2, 48, 16)).astype(np.float32)
    got = Tensor(partial).sum(0).permute(1, 0, 2).reshape(48, 32).contiguous().numpy()
    want = partial.astype(np.float64).sum(0).transpose(1, 0, 2).reshape(48, 32)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    upcasts = [o.arg for opts in applied for o in opts if o.op is OptOps.UPCAST]
    unrolls = [o.arg for opts in applied for o in opts if o.op is OptOps.UNROLL]
    assert upcasts == [kernels.fit(16, kernels.VECTOR_FLOATS)] and unrolls == [kernels.UNROLL_K], applied


def test_one_row_products_are_vectorized_along_their_outputs(applied):
    """A matrix-vector product (a sampler's last position): the outputs upcast by the vector tile, the reduction
    unrolled; tinygrad's heuristic ran these at ~2 GFLOP/s here. Equal to numpy's to 1e-5."""
    rng = np.random.default_rng(11)
    x, w = rng.standard_normal((1, 24)).astype(np.float32), rng.standard_normal((24, 72)).astype(np.float32)
    got = (Tensor(x) @ Tensor(w)).numpy()
    np.testing.assert_allclose(got, x.astype(np.float64) @ w, rtol=1e-5, atol=1e-5)
    upcasts = [o.arg for opts in applied for o in opts if o.op is OptOps.UPCAST]
    assert upcasts == [kernels.fit(72, kernels.UPCAST_N)], applied


def test_the_compiler_is_asked_for_the_cpus_vector_width(monkeypatch):
    """On AVX-512 CPUs clang is told to use 512-bit vectors (its default there is 256, which split each 16-float tile
    in two); elsewhere, and with the layer off, tinygrad's default target stays. Only the CPU device is changed."""
    from nanogpt_tg import cpu

    monkeypatch.setattr(kernels, "VECTOR_FLOATS", 16)
    wide = "CPU:CLANG:x86_64,native,prefer-vector-width=512"
    if kernels.platform.machine().lower() in ("x86_64", "amd64"):
        assert cpu.target("CPU") == wide
    assert cpu.target("CL") == "CL" and cpu.target("CPU:1") == "CPU:1"
    monkeypatch.setenv("NANOGPT_TG_CPU", "0")
    assert cpu.target("CPU") == "CPU"
    monkeypatch.delenv("NANOGPT_TG_CPU")
    monkeypatch.setattr(kernels, "VECTOR_FLOATS", 8)
    assert cpu.target("CPU") == "CPU" and kernels.clang_target() is None


TUNE_RUN = """
import json, os, sys
import numpy as np
from nanogpt_tg.device import set_device
from nanogpt_tg.cpu import kernels, tune
tune.MIN_FLOPS = 1e6
calls = []
search = tune.search
tune.search = lambda *a: calls.append(1) or search(*a)
set_device("cpu")
from tinygrad import Tensor
rng = np.random.default_rng(3)
a, b = rng.standard_normal((128, 256)).astype(np.float32), rng.standard_normal((256, 256)).astype(np.float32)
err = float(np.abs((Tensor(a) @ Tensor(b)).numpy() - a.astype(np.float64) @ b).max())
tune.deadline = 0  # past: a kernel after it is not searched
c = rng.standard_normal((256, 128)).astype(np.float32)
err2 = float(np.abs((Tensor(b) @ Tensor(c)).numpy() - b.astype(np.float64) @ c).max())
print(json.dumps({"searched": [[list(s[1]), s[2]] for s in tune.searched], "calls": len(calls), "err": err, "err2": err2,
                  "generation": tune.generation(), "status": __import__("nanogpt_tg.cpu", fromlist=["x"]).status}))
"""


def test_the_tile_search_runs_once_per_kernel_and_machine(tmp_path):
    """NANOGPT_TG_TUNE=1: a matmul of at least MIN_FLOPS gets its candidate tiles timed, the fastest is kept in the disk
    cache, and the product equals numpy's (float32 sums of 256 terms, 1e-3 absolute); once past the deadline no kernel
    is searched. A later process without the switch reads the kept tile back and searches nothing."""
    env = {**os.environ, "CACHEDB": str(tmp_path / "cache.db"), "DEV": "CPU"}
    first = subprocess.run([sys.executable, "-c", TUNE_RUN], capture_output=True, text=True, cwd=str(ROOT),
                           env={**env, "NANOGPT_TG_TUNE": "1"}, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    got = json.loads(first.stdout.splitlines()[-1])
    assert got["calls"] == 1 and len(got["searched"]) == 1, got
    tile, seconds = got["searched"][0]
    assert tuple(tile) in kernels.tune.candidates(kernels.VECTOR_FLOATS) and 0 < seconds < 1, got
    assert got["err"] < 1e-3 and got["err2"] < 1e-3 and got["generation"] != "0", got
    assert got["status"]["program_cache"].startswith("off"), got  # a search must see every kernel
    assert "tune: kernel 1 " in first.stderr and "-> " in first.stderr, first.stderr[-2000:]
    again = subprocess.run([sys.executable, "-c", TUNE_RUN], capture_output=True, text=True, cwd=str(ROOT), env=env,
                           timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    later = json.loads(again.stdout.splitlines()[-1])
    assert later["calls"] == 0 and later["searched"] == [] and later["err"] < 1e-3, later
    assert later["generation"] == got["generation"] and later["status"]["program_cache"] == "on", later
