"""Keep tinygrad's generated kernels on disk between runs, so a warm start skips code generation.

tinygrad 0.14 caches compiled binaries on disk, but the code generation in front of them (optimizing, expanding and
rendering each kernel: most of the time before a training step's first iteration) runs again in every
process: its cache of finished programs (`to_program_cache`) is a dict in memory. `install()` puts a dict in its place
that also reads and writes tinygrad's own disk cache (the same sqlite file and format as its compiled binaries, in
tinygrad's cache directory: nothing from outside this machine), under a key that includes this package's kernel
options, so a change of options never reuses a stale program. CPU (clang) programs only, stored without the parts
that running them does not need.

The scheduling in front of code generation (splitting a jitted step's graph into kernels: most of what was left of
a warm start) is cached the same way. tinygrad keeps a graph's schedule in memory (`schedule_cache`), keyed by the
graph with its buffers as numbered parameters, so a schedule serves any buffers of the same shapes; here it is also
read from and written to the disk cache. One part of that key named a Python object's address (a custom gradient's
`id()` in `CallInfo`'s repr); it names a module-level function by its import path instead, so the key is the same
in the next process. NANOGPT_TG_PROGRAM_CACHE=0 turns both off.
"""
import hashlib
import os
from pathlib import Path

import tinygrad.codegen as codegen
import tinygrad.engine.realize as realize
from tinygrad.helpers import CACHELEVEL, diskcache_get, diskcache_put
from tinygrad.renderer.cstyle import ClangRenderer
import tinygrad.schedule as schedule
from tinygrad.uop.ops import CallInfo, Ops, UOp

from . import status, tinygrad_version, tune_requested

# the tinygrad internals this patch replaces or reads (checked by nanogpt_tg.cpu.install before it applies)
REQUIRES = ("tinygrad.engine.realize:to_program_cache", "tinygrad.codegen:to_program_cache",
            "tinygrad.schedule:schedule_cache", "tinygrad.uop.ops:CallInfo.__repr__", "tinygrad.helpers:diskcache_get",
            "tinygrad.helpers:diskcache_put", "tinygrad.helpers:CACHELEVEL", "tinygrad.renderer.cstyle:ClangRenderer")

TABLE = "nanogpt_tg_program_slim"
_options = ""  # what picks each kernel's options, set by install(): part of every disk key


def kernel_options() -> str:
    """tinygrad's version, and kernels.py's options and source when that patch is on: a change of either must not find
    the programs of the old code."""
    if status.get("kernels") != "on":
        return f"tinygrad {tinygrad_version()}, its own heuristic"
    from . import kernels
    source = hashlib.sha256(Path(kernels.__file__).read_bytes()).hexdigest()
    tuned = kernels.tune.generation() if kernels.tune is not None else "no tune"
    return repr((tinygrad_version(), kernels.UPCAST_N, kernels.UPCAST_M, kernels.UNROLL_K, kernels.WIDE_LOADS,
                 kernels.THREAD_MIN_OPS, source, tuned))


def _disk_key(key: tuple) -> str:
    """tinygrad's in-memory key (the kernel's AST hash, renderer, target, codegen settings) plus kernel_options()."""
    ast_key, renderer, *rest = key
    text = repr((ast_key, f"{renderer.__module__}.{renderer.__qualname__}", rest, _options))
    return hashlib.sha256(text.encode()).hexdigest()


class DiskBackedPrograms(dict):
    """tinygrad's to_program_cache, falling back to (and filling) the disk cache."""

    def _load(self, key):
        if CACHELEVEL.value < 1 or not _cached(key):
            return None
        prg = diskcache_get(TABLE, _disk_key(key))
        if prg is not None:
            dict.__setitem__(self, key, prg)
        return prg

    def __contains__(self, key):
        return dict.__contains__(self, key) or self._load(key) is not None

    def get(self, key, default=None):
        prg = dict.get(self, key)
        return prg if prg is not None else (self._load(key) or default)

    def __getitem__(self, key):
        prg = self.get(key)
        if prg is None:
            raise KeyError(key)
        return prg

    def __setitem__(self, key, prg):
        dict.__setitem__(self, key, prg)
        if CACHELEVEL.value >= 1 and _cached(key) and prg.op is Ops.PROGRAM and len(prg.src) == 4:
            diskcache_put(TABLE, _disk_key(key), slim(prg))


def _cached(key: tuple) -> bool:
    """Only the CPU's clang programs go to disk: the ones this package changes and tests (GPUs keep tinygrad's)."""
    return key[1] is ClangRenderer


def slim(prg: UOp) -> UOp:
    """The program without its optimized kernel graph and linearized instructions, which running it does not read
    (the kernel's name and estimates, its parameters, source and binary stay): about 25x smaller, loaded that much faster."""
    sink, linear, source, binary = prg.src
    params = tuple(u for u in linear.src if u.op is Ops.PARAM)
    return prg.replace(src=(sink.replace(src=()), linear.replace(src=params), source, binary))


class DiskBackedSchedules(dict):
    """tinygrad's schedule_cache (a graph's key -> its kernels, in order), falling back to (and filling) the disk cache."""

    def get(self, key, default=None):
        linear = dict.get(self, key)
        if linear is None and CACHELEVEL.value >= 1:
            linear = diskcache_get(SCHEDULE_TABLE, _schedule_key(key))
            if linear is not None:
                dict.__setitem__(self, key, linear)
        return linear if linear is not None else default

    def __setitem__(self, key, linear):
        dict.__setitem__(self, key, linear)
        if CACHELEVEL.value >= 1:
            diskcache_put(SCHEDULE_TABLE, _schedule_key(key), linear)


SCHEDULE_TABLE = "nanogpt_tg_schedule"


def _schedule_key(key: bytes) -> str:
    return hashlib.sha256(key + tinygrad_version().encode()).hexdigest()


def _call_info_repr(self) -> str:
    """CallInfo's repr, with a module-level grad_fxn named by its import path instead of its id() (which changes from
    one process to the next); lambdas and nested functions keep the id, so two of them never share a key."""
    gf = self.grad_fxn
    if gf is not None and "<" not in getattr(gf, "__qualname__", "<"):
        gf = f"{gf.__module__}.{gf.__qualname__}"
    elif gf is not None:
        gf = id(gf)
    return f"CallInfo({gf}, {self.name!r}, {self.precompile}, {self.precompile_backward})"


def install(device: str | None = None) -> bool:
    """Use the disk-backed program and schedule caches from now on (idempotent)."""
    global _options
    if os.environ.get("NANOGPT_TG_PROGRAM_CACHE", "1") == "0" or tune_requested():
        return False  # a search (NANOGPT_TG_TUNE) must see every kernel it tunes, not a program kept from before
    if isinstance(realize.to_program_cache, DiskBackedPrograms):
        return True
    _options = kernel_options()
    programs = DiskBackedPrograms(realize.to_program_cache)
    realize.to_program_cache = codegen.to_program_cache = programs
    CallInfo.__repr__ = _call_info_repr
    schedule.schedule_cache = DiskBackedSchedules(schedule.schedule_cache)
    return True
