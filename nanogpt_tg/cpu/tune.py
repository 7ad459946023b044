"""Matmul tiles measured on the CPU they run on: a bounded search for the heaviest kernels, paid once per machine.

kernels.py's tiles (UPCAST_N x UPCAST_M outputs, reduction unrolled by UNROLL_K) were timed on a few CPUs. With
NANOGPT_TG_TUNE=1 (`python -m nanogpt_tg.tune` sets it), each matmul kernel of at least MIN_FLOPS that has no
measured tile yet gets a handful of candidate tiles (candidates(): kernels.py's first), each compiled and timed here
with tinygrad's own BEAM timer on scratch buffers; the fastest is kept in tinygrad's disk cache under the kernel's
graph, this CPU and tinygrad's version. Every later process (and tinygrad's compile workers) reads it back when it
picks that kernel's options. The search compiles in this process (tinygrad's worker pool cannot time), shows one line
per kernel, and stops searching at its deadline (the kernels left keep kernels.py's tiles and are searched next time).
Measured figures: BENCHMARKS.md.
"""
import functools
import hashlib
import os
import platform
import sys
import time

from tinygrad.helpers import CACHELEVEL, PARALLEL, Context, diskcache_get, diskcache_put, prod
from tinygrad.codegen.opt.postrange import args_from_ast
from tinygrad.codegen.opt.search import _time_program, _try_compile

from . import tinygrad_version

# the tinygrad internals this module reads (checked with kernels.py's by nanogpt_tg.cpu.install)
REQUIRES = ("tinygrad.codegen.opt.search:_time_program", "tinygrad.codegen.opt.search:_try_compile",
            "tinygrad.codegen.opt.postrange:args_from_ast", "tinygrad.helpers:PARALLEL")

TABLE = "nanogpt_tg_tiles"
MIN_FLOPS = 100e6  # smaller kernels are not worth a search
MIN_GAIN = 0.05  # another tile than kernels.py's is kept only when this much faster (timings move by a few %)
searching = False  # set by start(): search kernels that have no measured tile
deadline = float("inf")  # time.monotonic() after which no new search starts
searched: list[tuple[str, tuple, float, float]] = []  # (kernel, best tile, its time, kernels.py's tile's time)


def candidates(vector_floats: int) -> list[tuple[int, int, int]]:
    """(upcast of the contiguous output axis, of the other output axis, unroll of the reduction), kernels.py's first."""
    if vector_floats >= 16:
        return [(16, 8, 4), (16, 4, 4), (16, 12, 4), (16, 16, 4), (16, 8, 2), (16, 8, 8), (8, 8, 4)]
    if vector_floats >= 8:
        return [(16, 4, 4), (8, 4, 4), (8, 8, 4), (16, 2, 4), (16, 6, 4), (16, 4, 2), (16, 4, 8)]
    return [(8, 4, 4), (8, 2, 4), (8, 8, 4), (16, 4, 4), (8, 4, 2), (8, 4, 8), (4, 4, 4)]


@functools.cache
def cpu_id() -> str:
    """This CPU: its model name and feature flags (two machines with the same model and flags share tiles)."""
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    text = f"{platform.machine()} {info.get('model name', platform.processor())} {info.get('flags', '')}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _key(k, vector_floats: int) -> str:
    return repr((k.ast.key.hex(), k.ren.target.arch, cpu_id(), tinygrad_version(), candidates(vector_floats)))


def generation() -> str:
    """Changes whenever a search stores a tile here: part of the program cache's key (kernel_options), so programs
    built before a search are not reused for the kernels it tuned."""
    return str(diskcache_get(TABLE, f"generation {cpu_id()}") or 0) if CACHELEVEL.value >= 1 else "0"


def start(minutes: float):
    """Search from now on, for at most `minutes`; kernels compile in this process (a search must time them here)."""
    global searching, deadline
    searching, deadline = True, time.monotonic() + minutes * 60
    PARALLEL.value = 0
    os.environ.setdefault("BEAM_UOPS_MAX", "20000")  # tinygrad's compile check drops kernels over 3000 (16x16 tiles)


def tile_for(k, build, vector_floats: int) -> tuple[int, int, int] | None:
    """The measured tile of matmul kernel k (a tinygrad Scheduler), searching for it when searching; None: no
    measurement (kernels.py's tile is used). build(k, tile) is k with that tile applied, or None if it does not fit."""
    if CACHELEVEL.value < 1 or prod(k.full_shape) * 2 < MIN_FLOPS:
        return None
    key = _key(k, vector_floats)
    found = diskcache_get(TABLE, key)
    if found is not None:
        return tuple(found)
    if not searching or time.monotonic() > deadline:
        return None
    best = search(k, build, vector_floats)
    if best is not None:
        diskcache_put(TABLE, key, best)
        diskcache_put(TABLE, f"generation {cpu_id()}", time.time())
    return best


def search(k, build, vector_floats: int) -> tuple[int, int, int] | None:
    """Compile and time k with each candidate tile; the fastest, with a progress line on stderr."""
    rawbufs, var_vals = args_from_ast(k.ast, k.ren.target.device)
    times = {}
    t0 = time.monotonic()
    with Context(ALLOW_DEVICE_USAGE=1):
        rawbufs = [b.ensure_allocated() for b in rawbufs]
        for tile in candidates(vector_floats):
            s = build(k, tile)
            if s is None:
                continue
            _, compiled = _try_compile((0, s))
            if compiled is None:
                continue
            try:
                times[tile] = min(_time_program(compiled[0], var_vals, rawbufs, allow_test_size=False, cnt=3))
            except Exception:  # a candidate that fails to run is no candidate
                continue
    if not times:
        return None
    default_tile = candidates(vector_floats)[0]
    best = min(times, key=times.get)
    if default_tile in times and times[best] > times[default_tile] * (1 - MIN_GAIN):
        best = default_tile
    name = "x".join(str(d) for d in k.full_shape)
    default = times.get(default_tile, float("nan"))
    searched.append((name, best, times[best], default))
    tiles = ", ".join(f"{n}x{m}/{u} {t * 1e3:.1f} ms" for (n, m, u), t in times.items())
    print(f"tune: kernel {len(searched)} {prod(k.full_shape) * 2 / 1e9:.2f} GFLOP shape {name}: {tiles} -> "
          f"{best[0]}x{best[1]}/{best[2]} ({time.monotonic() - t0:.1f} s)", file=sys.stderr, flush=True)
    return best
