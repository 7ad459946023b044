"""Matmul kernel options for tinygrad's CPU backend, where its hand-coded heuristic leaves most of the speed unused.

tinygrad 0.14 picks each kernel's optimizations (upcasts, unrolls) with `hand_coded_optimizations`. For a matmul on
a device without local memory (the CPU's clang backend) it upcasts the two output axes by 3 and 3 and unrolls the
reduction by 4. Upcasting them by 8 and 4 (32 accumulators) and unrolling 4 made the README CPU config's training step
1.9x faster here (278 -> 148 ms per step; BENCHMARKS.md), with the same numbers to float rounding.

tinygrad has no per-kernel hook that survives scheduling in 0.14 (`contiguous(arg=opts)` is dropped when buffers are
allocated), and BEAM search takes tens of minutes for a whole training step on two cores. So `install()` wraps the
heuristic itself, in this process and in tinygrad's compile worker processes (started with spawn, they import this
module through the pool initializer). Reduce kernels on devices with local memory (GPUs) are left to tinygrad.
NANOGPT_TG_MATMUL_OPTS=0 turns it off, e.g. to compare.
"""
import os

import tinygrad.codegen.opt.heuristic as heuristic
import tinygrad.engine.worker as worker
from tinygrad.codegen.opt import KernelOptError, Opt, OptOps
from tinygrad.uop.ops import Ops

UPCAST_N, UPCAST_M, UNROLL_K = 8, 4, 4  # the best of 15 combinations timed on the README CPU config's step
_tinygrad_heuristic = heuristic.hand_coded_optimizations
_tinygrad_init_worker = worker._init_worker


def matmul_opts(k) -> list[Opt] | None:
    """The options for a sum-reduce kernel k (a tinygrad Scheduler), or None to leave it to tinygrad.

    The output axes to upcast are those some input does not depend on (a matmul's M and N: A has no N, B no M), so
    each loaded value is reused across the upcast; with one such axis, the innermost other output axis joins it."""
    if k.ren.has_local or k.reduceop is None or k.reduceop.arg[0] is not Ops.ADD or not k.unrollable_dims:
        return None
    free = [a for a in k.upcastable_dims if any(k.rngs[a] not in b.src[1].get_idx().backward_slice for b in k.bufs)]
    if not free:
        return None
    if len(free) == 1:
        rest = [a for a in k.upcastable_dims if a != free[0]]
        if not rest:
            return None
        free = sorted([free[0], rest[-1]])
    m, n = free[-2], free[-1]
    return [Opt(OptOps.UPCAST, n, UPCAST_N), Opt(OptOps.UPCAST, m, UPCAST_M),
            Opt(OptOps.UNROLL, len(k.unrollable_dims) - 1, UNROLL_K)]


def hand_coded_optimizations(k):
    """tinygrad's heuristic, with matmul_opts first; an option that does not fit the kernel's shape falls back."""
    opts = matmul_opts(k)
    for candidate in ([opts, opts[:2]] if opts else []):  # without the unroll if the reduction does not divide
        tried = k.copy()
        try:
            for opt in candidate:
                tried.apply_opt(opt)
            return tried
        except KernelOptError:
            pass
    return _tinygrad_heuristic(k)


def _init_worker():
    """tinygrad's compile worker initializer, then install() in the worker."""
    _tinygrad_init_worker()
    install()


def install():
    """Use hand_coded_optimizations above from now on (idempotent); NANOGPT_TG_MATMUL_OPTS=0 leaves tinygrad's."""
    if os.environ.get("NANOGPT_TG_MATMUL_OPTS", "1") == "0":
        return
    heuristic.hand_coded_optimizations = hand_coded_optimizations
    worker._init_worker = _init_worker  # pools started after this run it; one started before keeps tinygrad's
