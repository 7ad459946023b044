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


def test_options_are_applied(applied):
    """A Linear-shaped product gets the 8 x 4 upcast and the unroll of 4, not tinygrad's 3 x 3."""
    rng = np.random.default_rng(8)
    a, w = rng.standard_normal((48, 32)).astype(np.float32), rng.standard_normal((80, 32)).astype(np.float32)
    (Tensor(a) @ Tensor(w).T).realize()
    upcasts = sorted(o.arg for opts in applied for o in opts if o.op is OptOps.UPCAST)
    unrolls = [o.arg for opts in applied for o in opts if o.op is OptOps.UNROLL]
    assert upcasts == [kernels.UPCAST_M, kernels.UPCAST_N] and unrolls == [kernels.UNROLL_K], applied


def test_odd_sizes_get_the_tiles_that_divide_them(applied):
    """A 65-word vocabulary: the logits (768 x 65) and the tied weight's gradient (65 x 128, over 768 tokens) get
    tiles of divisors (13 or 5 for 65), not tinygrad's heuristic, which ran them at ~15 GFLOP/s here."""
    assert [kernels.fit(65, 16), kernels.fit(65, 8), kernels.fit(768, 16), kernels.fit(7, 4)] == [13, 5, 16, 1]
    rng = np.random.default_rng(9)
    x, w = rng.standard_normal((96, 32)).astype(np.float32), rng.standard_normal((65, 32)).astype(np.float32)
    g = rng.standard_normal((96, 65)).astype(np.float32)
    (Tensor(x) @ Tensor(w).T).realize()
    (Tensor(g).T @ Tensor(x)).realize()
    upcasts = [sorted(o.arg for o in opts if o.op is OptOps.UPCAST) for opts in applied]
    logits = sorted([kernels.fit(65, kernels.UPCAST_N), kernels.fit(96, kernels.UPCAST_M)])  # 65 the contiguous axis
    gradient = sorted([kernels.fit(32, kernels.UPCAST_N), kernels.fit(65, kernels.UPCAST_M)])
    assert logits in upcasts and gradient in upcasts, applied


def test_off_switch(monkeypatch):
    """NANOGPT_TG_MATMUL_OPTS=0: install() leaves tinygrad's heuristic in place."""
    monkeypatch.setenv("NANOGPT_TG_MATMUL_OPTS", "0")
    monkeypatch.setattr(heuristic, "hand_coded_optimizations", kernels._tinygrad_heuristic)
    kernels.install()
    assert heuristic.hand_coded_optimizations is kernels._tinygrad_heuristic


@pytest.mark.parametrize("floats, want", [("16", (16, 8, [16, 8, 4, 2])), ("8", (8, 4, [8, 4, 2])), ("4", (8, 4, [4, 2]))])
def test_tiles_follow_the_vector_width(floats, want):
    """16x8 tiles and 16-float loads only where a register holds 16 floats (AVX-512); narrower CPUs keep 8x4 tiles
    (128 accumulators would spill their 16 registers). Checked in a fresh process, as the module reads it at import."""
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


def test_one_row_products_are_vectorized_along_their_outputs(applied):
    """A matrix-vector product (a sampler's last position): the outputs upcast by the vector tile, the reduction
    unrolled; tinygrad's heuristic ran these at ~2 GFLOP/s here. Equal to numpy's to 1e-5."""
    rng = np.random.default_rng(11)
    x, w = rng.standard_normal((1, 24)).astype(np.float32), rng.standard_normal((24, 72)).astype(np.float32)
    got = (Tensor(x) @ Tensor(w)).numpy()
    np.testing.assert_allclose(got, x.astype(np.float64) @ w, rtol=1e-5, atol=1e-5)
    upcasts = [o.arg for opts in applied for o in opts if o.op is OptOps.UPCAST]
    assert upcasts == [kernels.fit(72, kernels.UPCAST_N)], applied
