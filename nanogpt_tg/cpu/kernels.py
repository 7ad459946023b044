"""Matmul kernels for tinygrad's CPU backend, where its hand-coded heuristic leaves most of the speed unused.

tinygrad 0.14 picks each kernel's optimizations (upcasts, unrolls) with `hand_coded_optimizations`. For a matmul on
a device without local memory (the CPU's clang backend) it upcasts the two output axes by 3 and 3 and unrolls the
reduction by 4, and it groups at most 4 floats into one vector load, so clang emits 128-bit FMAs on CPUs that have
256- or 512-bit ones. Here: upcasts of 16 (the contiguous output axis) by 8, an unroll of 4, loads and stores of up
to 16 floats, and the output split into one part per CPU thread as tinygrad does (cpu_runtime.py runs the parts at
once). Same numbers to rounding, several times tinygrad's speed on a matmul (figures per machine: BENCHMARKS.md).
Tiles and load widths follow the CPU's vector width (vector_floats): the 16-float ones are for AVX-512.
One-row products get their outputs in vectors too, and elementwise kernels with exp, log or sin are left as plain
loops, which clang vectorizes (vectorizable_loop).

tinygrad has no per-kernel hook that survives scheduling in 0.14 (`contiguous(arg=opts)` is dropped when buffers are
allocated), and BEAM search takes tens of minutes for a whole training step on two cores. So `install()` wraps the
heuristic itself, in this process and in tinygrad's compile worker processes (started with spawn, they import this
module through the pool initializer). Devices with local memory (GPUs) are left to tinygrad.
NANOGPT_TG_MATMUL_OPTS=0 turns it off, e.g. to compare. Measured figures: BENCHMARKS.md.
"""
import inspect
import os
import platform
import sys

import tinygrad.codegen as codegen
import tinygrad.codegen.late.coalesce as coalesce
import tinygrad.codegen.opt.heuristic as heuristic
import tinygrad.engine.worker as worker
from tinygrad.codegen.opt import KernelOptError, Opt, OptOps
from tinygrad.helpers import prod
from tinygrad.uop.ops import AxisType, Ops

from . import missing, tune_requested

try:  # tiles measured on this CPU (tune.py), optional: without the tinygrad internals it reads, kernels.py's tiles
    from . import tune
    tune = None if missing(tune.REQUIRES) else tune
except ImportError:
    tune = None

# the tinygrad internals this patch replaces or reads (checked by nanogpt_tg.cpu.install before it applies)
REQUIRES = ("tinygrad.codegen.opt.heuristic:hand_coded_optimizations", "tinygrad.codegen:memory_coalescing",
            "tinygrad.codegen.late.coalesce:memory_coalescing", "tinygrad.engine.worker:_init_worker",
            "tinygrad.codegen.opt.postrange:Scheduler.upcastable_dims", "tinygrad.codegen.opt.postrange:Scheduler.unrollable_dims",
            "tinygrad.codegen.opt.postrange:Scheduler.axes_of", "tinygrad.codegen.opt.postrange:Scheduler.apply_opt",
            "tinygrad.codegen.opt.postrange:Scheduler.copy", "tinygrad.uop.ops:AxisType.WEAK", "tinygrad.codegen.opt:OptOps.THREAD",
            "tinygrad.uop.ops:UOp.get_idx", "tinygrad.uop.ops:UOp.split_uop")

def vector_floats() -> int:
    """Floats in one SIMD register of this CPU: 16 with AVX-512, 8 with AVX2, else 4 (SSE, NEON on ARM).
    NANOGPT_TG_VECTOR_FLOATS=16|8|4 overrides it."""
    if os.environ.get("NANOGPT_TG_VECTOR_FLOATS"):
        return int(os.environ["NANOGPT_TG_VECTOR_FLOATS"])
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return 4
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(next((line for line in f if line.startswith("flags")), "").split())
    except OSError:
        return 8  # x86 without /proc (macOS): AVX2 on every Intel Mac since 2013
    return 16 if "avx512f" in flags else 8 if "avx2" in flags else 4


def clang_target() -> str | None:
    """tinygrad's DEV target for the CPU device when clang should be told the vector width, else None.

    On AVX-512 CPUs clang prefers 256-bit vectors (-mprefer-vector-width=256, against the clock slowdown of early
    AVX-512 Intel CPUs), so it splits the kernels' 16-float vectors in two and spills accumulators; asked for 512, a
    matmul tile's inner loop is zmm FMAs without spills (BENCHMARKS.md). The target's arch is tinygrad's own default
    (x86_64,native) plus that one flag, which tinygrad passes to clang and puts in its compile cache key."""
    if VECTOR_FLOATS < 16 or platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    return "CPU:CLANG:x86_64,native,prefer-vector-width=512"


# 16x8 tiles (128 accumulators, 8 of AVX-512's 32 registers) were timed best with AVX-512; with AVX2's 16 registers of
# 8 floats they would spill, and 16x4 (8 registers of accumulators) was timed best there (Zen 3; BENCHMARKS.md). With
# 4-float registers, 8x4.
VECTOR_FLOATS = vector_floats()
UPCAST_N, UPCAST_M, UNROLL_K = {16: (16, 8, 4), 8: (16, 4, 4)}.get(VECTOR_FLOATS, (8, 4, 4))
# A 2-D product under SMALL_MACS multiply-adds (a toy model's, as in the tests) gets SMALL_TILE: it takes a fraction
# of a millisecond with any tile, and a big tile's unrolled code is what makes a toy model's step slow to compile
# (same sums in the same order either way; BENCHMARKS.md).
SMALL_MACS, SMALL_TILE = 1 << 18, (4, 4, 4)
THREAD_MIN_OPS = 16 << 10  # split a kernel into threads when each part gets this many operations (tinygrad: 128K)
WIDE_LOADS = [n for n in (16, 8, 4, 2) if n <= VECTOR_FLOATS]  # float accesses clang may make one vector access
_tinygrad_heuristic = heuristic.hand_coded_optimizations
_tinygrad_init_worker = worker._init_worker
_tinygrad_coalescing = codegen.memory_coalescing


def _wide_coalescing():
    """tinygrad's memory_coalescing, but on renderers without local memory float accesses group up to WIDE_LOADS[0].

    tinygrad 0.14 groups at most 4 floats into one vector access on the CPU, so clang emits 128-bit loads and FMAs
    even where the CPU has 256- or 512-bit ones; the function has no parameter for it, so its source is rebuilt with
    the one line changed. None when that line is not found (another tinygrad version): then tinygrad's is kept."""
    line = 'lengths = [8,4,2] if buf.dtype == dtypes.half and getenv("ALLOW_HALF8") else [4,2]'
    source = inspect.getsource(coalesce.memory_coalescing)
    if source.count(line) != 1:
        return None
    wide = f"lengths = {WIDE_LOADS} if buf.dtype == dtypes.float and not ctx.has_local else {line[len('lengths = '):]}"
    namespace = dict(vars(coalesce))
    exec(compile(source.replace(line, wide), coalesce.__file__, "exec"), namespace)
    return namespace["memory_coalescing"]


def cpu_sum(k) -> bool:
    """k (a tinygrad Scheduler) is a sum-reduce with a reduction to unroll, for a renderer without local memory."""
    return not k.ren.has_local and k.reduceop is not None and k.reduceop.arg[0] is Ops.ADD and bool(k.unrollable_dims)


def matmul_opts(k, tile: tuple[int, int, int] | None = None) -> list[Opt] | None:
    """The options for a sum-reduce kernel k (a tinygrad Scheduler), or None to leave it to tinygrad. tile: the upcasts
    (contiguous output axis, other output axis) and the unroll; unless given, (UPCAST_N, UPCAST_M, UNROLL_K), or
    SMALL_TILE for a 2-D product under SMALL_MACS.

    The output axes to upcast are those some input does not depend on (a matmul's M and N: A has no N, B no M), so
    each loaded value is reused across the upcast; with one such axis, the innermost other output axis joins it."""
    if not cpu_sum(k):
        return None
    upcast_n, upcast_m, unroll_k = tile or (UPCAST_N, UPCAST_M, UNROLL_K)
    free = [a for a in k.upcastable_dims if any(k.rngs[a] not in b.src[1].get_idx().backward_slice for b in k.bufs)]
    if not free:
        return None
    k_axis = k.unrollable_dims[-1]
    unroll = Opt(OptOps.UNROLL, len(k.unrollable_dims) - 1, fit(k.full_shape[k_axis], unroll_k))
    if len(free) == 1:
        rest = [a for a in k.upcastable_dims if a != free[0]]
        if not rest:  # a matrix-vector product (one row, as a sampler's last position): its outputs in vectors
            return [o for o in [Opt(OptOps.UPCAST, free[0], fit(k.full_shape[free[0]], upcast_n)), unroll] if o.arg > 1]
        free = sorted([free[0], rest[-1]])
    m, n = free[-2], free[-1]
    if tile is None and prod(k.full_shape) < SMALL_MACS:
        upcast_n, upcast_m, unroll_k = SMALL_TILE
    opts = [Opt(OptOps.UPCAST, n, fit(k.full_shape[n], upcast_n)), Opt(OptOps.UPCAST, m, fit(k.full_shape[m], upcast_m)),
            unroll]
    return [o for o in opts if o.arg > 1] or None


def unit_stride(buf, rng) -> bool:
    """rng is a term of its own in buffer buf's index: consecutive values of rng are consecutive elements of buf."""
    return any(term is rng for term in buf.src[1].get_idx().split_uop(Ops.ADD))


def sum_opts(k) -> list[Opt] | None:
    """The options for a sum-reduce kernel k that is no matmul (every input depends on every output axis) and sums
    along a strided axis, e.g. the sum of dW's partial products over token chunks or a bias gradient; else None.

    The output axis contiguous in every buffer goes in vectors and the reduction is unrolled, so each step reads a
    vector from each summand. tinygrad's heuristic left the preset's dW sums scalar, one float of each of 64 partials
    at a time (~1.4 GB/s on Zen 4; BENCHMARKS.md). Sums along a contiguous axis (softmax's, LayerNorm's) are not
    this case."""
    if not cpu_sum(k):
        return None
    reduce_axis = k.unrollable_dims[-1]
    if any(unit_stride(b, k.rngs[reduce_axis]) for b in k.bufs):
        return None
    contiguous = [a for a in k.upcastable_dims if all(unit_stride(b, k.rngs[a]) for b in k.bufs)]
    if not contiguous:
        return None
    opts = [Opt(OptOps.UPCAST, contiguous[-1], fit(k.full_shape[contiguous[-1]], VECTOR_FLOATS)),
            Opt(OptOps.UNROLL, len(k.unrollable_dims) - 1, fit(k.full_shape[reduce_axis], UNROLL_K))]
    return [o for o in opts if o.arg > 1] or None


def fit(size: int, want: int) -> int:
    """The largest divisor of size up to want: a tile of the axis (a 65-token vocabulary: 13 for 16, 5 for 8)."""
    return next(d for d in range(min(want, size), 0, -1) if size % d == 0)


# ops that tinygrad writes out as polynomials (no instruction on the CPU)
TRANSCENDENTAL = {Ops.EXP2, Ops.LOG2, Ops.SIN}


def vectorizable_loop(k) -> bool:
    """An elementwise kernel k with exp, log or sin in it: left as a plain loop, which clang vectorizes to the CPU's
    width; tinygrad's upcast of 4 makes it scalar code per lane, several times slower, same results (BENCHMARKS.md)."""
    return not k.ren.has_local and k.reduceop is None and any(u.op in TRANSCENDENTAL for u in k.ast.toposort())


def with_tile(k, tile: tuple[int, int, int] | None = None):
    """A copy of k with matmul_opts(k, tile) applied (without the unroll if the reduction does not divide) and split
    into threads; None when k is no matmul or the tile does not fit its shape."""
    opts = matmul_opts(k, tile)
    return with_opts(k, opts, opts[:2]) if opts else None


def with_opts(k, *candidates: list[Opt]):
    """A copy of k with the first of the candidate option lists that fits its shape applied, split into threads; None
    when none fits."""
    for candidate in candidates:
        tried = k.copy()
        try:
            for opt in candidate:
                tried.apply_opt(opt)
            return split_into_threads(tried)
        except KernelOptError:
            pass
    return None


def with_sum_opts(k):
    """A copy of k with sum_opts(k) applied (without the unroll if it does not fit), split into threads; else None."""
    opts = sum_opts(k)
    return with_opts(k, opts, opts[:1]) if opts else None


def hand_coded_optimizations(k):
    """tinygrad's heuristic, with matmul_opts first (with the tile measured on this CPU where tune.py has one); an
    option that does not fit the kernel's shape falls back."""
    if vectorizable_loop(k):
        return split_into_threads(k)
    tuned = tune.tile_for(k, with_tile, VECTOR_FLOATS) if tune is not None and matmul_opts(k) else None
    tiled = (tuned and with_tile(k, tuned)) or with_tile(k) or with_sum_opts(k)
    if tiled is not None:
        return tiled
    k = _tinygrad_heuristic(k)
    return k if any(o.op is OptOps.THREAD for o in k.applied_opts) else split_into_threads(k)


def split_into_threads(k):
    """tinygrad's heuristic ends by splitting an output axis into one part per CPU thread; the same after ours.

    The parts run on all cores at once with cpu_runtime.install(); tinygrad's own runtime runs them in turn."""
    threads = k.ren.global_max[0] if k.ren.has_threads and k.ren.global_max else 1
    if threads < 2 or prod(k.full_shape) // THREAD_MIN_OPS < threads:
        return k
    for axis in k.axes_of(AxisType.WEAK):
        if k.full_shape[axis] % threads == 0:
            try:
                k.apply_opt(Opt(OptOps.THREAD, axis, threads))
                return k
            except KernelOptError:
                pass
    return k


def _init_worker():
    """tinygrad's compile worker initializer, then install() in the worker."""
    _tinygrad_init_worker()
    install()


def install(device: str | None = None) -> bool:
    """Use hand_coded_optimizations above from now on (idempotent); NANOGPT_TG_MATMUL_OPTS=0 leaves tinygrad's."""
    if os.environ.get("NANOGPT_TG_MATMUL_OPTS", "1") == "0":
        return False
    wide = _wide_coalescing()
    if wide is None and codegen.memory_coalescing is _tinygrad_coalescing:
        print("warning: nanogpt_tg.cpu.kernels: tinygrad's memory_coalescing has changed; vector loads stay at "
              "tinygrad's 4 floats", file=sys.stderr)
    if tune is not None and tune_requested() and not tune.searching:
        tune.start(float(os.environ.get("NANOGPT_TG_TUNE_MINUTES", "10")))
    heuristic.hand_coded_optimizations = hand_coded_optimizations
    codegen.memory_coalescing = wide or _tinygrad_coalescing
    worker._init_worker = _init_worker  # pools started after this run it; one started before keeps tinygrad's
    return True
