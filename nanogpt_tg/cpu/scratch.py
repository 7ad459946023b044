"""Jitted calls' scratch memory: every CPU jit's arena at the start of one reserved range, faulted in ahead.

tinygrad's memory planner gives each jit an arena for the buffers that live only within one call of it (at the
preset's size the eval's is 378 MiB and the train step's 987 MiB), and a new process touches every page of each
for the first time in its first calls. On the VMs this was measured on that costs 0.5-2.5 s of system time per GiB
(they hand freed memory back to their host, Firecracker's free page reporting: BENCHMARKS.md), the largest part of a
warm start's time after Python.

Two jitted calls never run at once, and an arena holds nothing from one call to the next (what outlives a call, its
inputs, outputs and state, is outside it), so here every CPU jit's arena begins at the same address: the start of a
range of the machine's memory size, reserved but not committed. Its pages are touched once, for the largest arena.
Calls that run at once (cpu.runtime.on_cores) each need their own: a jit captured under `lane(k)` gets range k, and
`replica(jit, k, swap)` is a captured jit again with its arenas in range k, for the same calls on other buffers
without capturing them again (a capture is the slowest Python of a start).

The range is faulted in ahead by a thread at idle priority (SCHED_IDLE: it runs only on a core nothing else wants)
with MADV_POPULATE_WRITE, which leaves whatever is written there as it is: up to what the arenas planned so far need,
and, for a run that says its shape (`expect(key)`), to what they needed in the last run of that shape (kept in
tinygrad's disk cache beside the compiled kernels), while Python builds the steps and the other core is idle.
NANOGPT_TG_CPU_SCRATCH=0 turns this off; on Linux only (elsewhere tinygrad allocates its arenas as it does).
"""
import contextlib
import ctypes
import mmap
import os
import sys
import threading

import tinygrad.engine.jit as jit
from tinygrad.device import Buffer, BufferSpec
from tinygrad.dtype import dtypes
from tinygrad.engine.realize import get_call_arg_uops, get_call_outs_ins
from tinygrad.helpers import diskcache_get, diskcache_put, mv_address
from tinygrad.uop.ops import Ops, UOp, buffers

# the tinygrad internals this patch replaces or reads (checked by nanogpt_tg.cpu.install before it applies)
REQUIRES = ("tinygrad.engine.jit:memory_plan_rewrite", "tinygrad.uop.ops:buffers", "tinygrad.device:BufferSpec",
            "tinygrad.device:Buffer.ref", "tinygrad.helpers:mv_address", "tinygrad.helpers:diskcache_get",
            "tinygrad.helpers:diskcache_put", "tinygrad.engine.realize:get_call_arg_uops",
            "tinygrad.engine.realize:get_call_outs_ins",
            "tinygrad.engine.jit:CapturedJit._written_uops", "tinygrad.engine.jit:_TinyJit", "tinygrad.uop.ops:UOp.new_buffer",
            "tinygrad.uop.ops:UOp.substitute")

MAP_NORESERVE = 0x4000  # Linux's: reserve the range without committing memory for it
MADV_POPULATE_WRITE = 23  # Linux 5.14+: fault pages in as if written, their contents unchanged
CHUNK = 8 << 20  # faulted in per call, so that a page fault of the main thread never waits long behind one
TABLE = "nanogpt_tg_scratch"

_tinygrad_plan = jit.memory_plan_rewrite
_ranges: dict[tuple[str, int, int], "Range"] = {}  # (device, the arena's rank in its jit, lane) -> its range
_lane = 0  # the lane jits captured now take (lane())
_key: str | None = None  # the run shape given to expect()
_need: dict[tuple[str, int, int], int] = {}  # range -> the largest arena placed in it


class Range:
    """A reserved range of memory arenas start at, and the idle-priority thread that faults it in ahead."""

    def __init__(self, size: int):
        self.mem = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_NORESERVE)
        self.addr, self.size = mv_address(self.mem), size
        self.target = self.done = 0  # bytes asked for, bytes faulted in
        self.wanted = threading.Condition()
        threading.Thread(target=self._fault_in, daemon=True, name="nanogpt_tg scratch").start()

    def want(self, nbytes: int):
        """Fault the range in up to nbytes, in the background."""
        with self.wanted:
            self.target = max(self.target, min(nbytes, self.size))
            self.wanted.notify()

    def _fault_in(self):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # this thread only
        madvise = ctypes.CDLL(None, use_errno=True).madvise
        madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        while True:
            with self.wanted:
                while self.done >= self.target:
                    self.wanted.wait()
                start, end = self.done, self.target
            for offset in range(start, end, CHUNK):
                n = min(CHUNK, end - offset)
                if madvise(self.addr + offset, n, MADV_POPULATE_WRITE) != 0:
                    return  # an older kernel: the kernels fault the pages in themselves, as without this
                self.done = offset + n


def _range(key: tuple[str, int, int]) -> Range:
    if key not in _ranges:
        _ranges[key] = Range(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    return _ranges[key]


@contextlib.contextmanager
def lane(k: int):
    """Jits captured inside take scratch range k: calls run at once each need their own (cpu.runtime.on_cores)."""
    global _lane
    before, _lane = _lane, k
    try:
        yield
    finally:
        _lane = before


def expect(key: str):
    """This run's shape is key: fault in now what its arenas needed last time, and remember what they need."""
    global _key
    _key = key
    _need.clear()  # what this run's arenas need, from now on
    for range_key, nbytes in (diskcache_get(TABLE, key) or {}).items():
        _range(range_key).want(nbytes)


def _arena(u):
    """The buffer a planned argument (a view of an arena, or a buffer) is a view of."""
    while u.op is not Ops.BUFFER and u.src:
        u = u.src[0]
    return u


def _place(arena: UOp, device: str, rank: int, lane_k: int) -> bool:
    """Make arena a view of the start of scratch range (device, rank, lane_k), and remember that it needs its size.
    True if the range grew past what this run had asked of it (to be written back)."""
    key, nbytes = (device, rank, lane_k), arena.max_numel()
    try:
        scratch = _range(key)
    except OSError:  # no room to reserve it (a strict overcommit policy): tinygrad allocates this one
        return False
    if nbytes > scratch.size:
        return False
    buffers[arena] = Buffer(device, nbytes, dtypes.int8, options=BufferSpec(external_ptr=scratch.addr)).ref(1)
    scratch.want(nbytes)
    grew = nbytes > _need.get(key, 0)
    if grew:
        _need[key] = nbytes
    return grew


def _remember():
    if _key is not None:
        diskcache_put(TABLE, _key, dict(_need))


def memory_plan_rewrite(linear, held_bufs=None):
    """tinygrad's memory plan of a jit, with each CPU arena placed at the start of its scratch range."""
    planned = _tinygrad_plan(linear, held_bufs)
    before = {_arena(s) for call in linear.src for s in call.src[1:]}
    arenas = {u for call in planned.src for s in call.src[1:] if (u := _arena(s)).op is Ops.BUFFER} - before
    grew = False
    for device in {a.device for a in arenas if isinstance(a.device, str) and a.device.startswith("CPU")}:
        ranked = sorted((a for a in arenas if a.device == device and a.dtype == dtypes.int8 and a not in buffers),
                        key=lambda a: -a.max_numel())
        for rank, arena in enumerate(ranked):
            grew |= _place(arena, device, rank, _lane)
    if grew:
        _remember()
    return planned


def _written(linear) -> set:
    """The buffers (BUFFER or PARAM uops) the calls of a captured linear write."""
    out = set()
    for call in linear.toposort():
        if call.op is Ops.CALL:
            args = get_call_arg_uops(call)
            for k in get_call_outs_ins(call)[0]:
                u = args[k]
                while u.op not in (Ops.BUFFER, Ops.PARAM) and u.src:
                    u = u.src[0]
                out.add(u)
    return out


def replica(tiny_jit, lane_k: int, swap: dict | None = None):
    """A copy of the captured tiny_jit whose scratch arenas are in lane lane_k's ranges, and that reads and writes
    swap's values (realized Tensors) where tiny_jit reads and writes its keys: to be called at once with it
    (cpu.runtime.on_cores), as tiny_jit would run on other buffers, without a capture. None where the two would
    share memory both write: tiny_jit writes a buffer that is neither an input, an arena in a scratch range nor in
    swap. Its calls return tiny_jit's return value: read the results from its own buffers."""
    captured = tiny_jit.captured
    lane_of = {(r.addr, key[0]): key for key, r in _ranges.items()}
    swap = {a.uop.base: b.uop.base for a, b in (swap or {}).items()}
    grew = False
    for u in _written(captured.linear):
        if u.op is Ops.PARAM or u in swap:
            continue  # an input, which each caller passes, or a buffer of the copy's own
        b = buffers.get(u)
        key = lane_of.get((b.options.external_ptr, b.device)) if isinstance(b, Buffer) and b.options else None
        if key is None:
            return None
        device, rank, _ = key
        swap[u] = UOp.new_buffer(device, u.max_numel(), dtypes.int8)
        grew |= _place(swap[u], device, rank, lane_k)
    if grew:
        _remember()
    linear = captured._linear.substitute(swap, walk=True, enter_calls=True)
    copy = jit.CapturedJit(captured.ret, linear, captured.expected_names, captured.expected_input_info)
    # the buffers its calls write besides inputs, which tinygrad would walk the whole copy for on its first call:
    # the original's, swapped
    copy.__dict__["_written_uops"] = {swap.get(u, u) for u in captured._written_uops}
    return jit._TinyJit(None, captured=copy)


def install(device: str | None = None) -> bool:
    """Place CPU jits' arenas in the shared scratch ranges from now on (idempotent). False off Linux."""
    if os.environ.get("NANOGPT_TG_CPU_SCRATCH", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    jit.memory_plan_rewrite = memory_plan_rewrite
    return True
