"""A faster tinygrad CPU runtime: a kernel's thread parts on all cores at once, a jitted batch of kernels in one call.

tinygrad 0.14 splits big CPU kernels into NUM_CPU_THREADS parts (its THREAD option: the kernel takes a `core_id`),
but calls the parts one after another from Python, so one core does all the work; and it has no graph for the CPU,
so a jitted step calls every kernel through Python, tens of microseconds each. Here:
- a kernel with parts is one call of `run_parts` (C below, built once with clang and cached): a pool of
  NUM_CPU_THREADS - 1 threads plus the caller run the parts, and it returns when all are done, so kernels still run
  in order and every result is the same. Pool threads spin briefly between kernels, then sleep.
- `CPUGraph` is a tinygrad graph runner for the CPU: the jitted batch's kernels, addresses and variables in one table
  that `run_list` runs in a single call.
- `on_cores(fns)` runs jitted calls at once, one per core, each kernel's parts on its own thread (`run_list_alone`):
  train.py's step on the CPU, each core a share of the batch. Split across the cores, each kernel hands its output
  to the other core's next kernel; this VM's two vCPUs move between sharing a cache and not, and in the second
  state a handoff is 2.7x slower (BENCHMARKS.md), the whole step 1.45x.

`install()` is called by nanogpt_tg.cpu.install for the CPU; NANOGPT_TG_CPU_THREADS=0 leaves tinygrad's runtime.
Without a C compiler with pthreads, or on Windows, tinygrad's runtime is kept too.
"""
import ctypes
import hashlib
import os
import subprocess
import sys
import tempfile
import threading
import time

import tinygrad.runtime.ops_cpu as ops_cpu
from tinygrad.engine.jit import GraphException, GraphRunner
from tinygrad import Device
from tinygrad.helpers import NUM_CPU_THREADS, cache_dir, getenv

# the tinygrad internals this patch replaces or reads (checked by nanogpt_tg.cpu.install before it applies)
REQUIRES = ("tinygrad.runtime.ops_cpu:MAX_ARGS", "tinygrad.runtime.ops_cpu:CPUProgram.__call__",
            "tinygrad.engine.jit:GraphRunner.updated_vars", "tinygrad.engine.jit:GraphRunner.updated_launch_dims",
            "tinygrad.engine.jit:GraphException", "tinygrad.helpers:NUM_CPU_THREADS", "tinygrad.helpers:cache_dir")

KERNEL_ARGS = ops_cpu.MAX_ARGS  # the most arguments tinygrad passes a CPU kernel
MAX_PARTS = 0xffff  # the most parts run_parts splits a kernel into (the ticket's field); tinygrad's own runtime beyond
_CALL = ", ".join(f"a[{i}]" for i in range(KERNEL_ARGS))
SOURCE = r"""
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
typedef uint64_t u64;
typedef void (*kernel_t)(%(types)s);  /* called with every slot; a kernel reads the arguments it has */
enum { SPINS = 20000 };               /* polls before a pool thread sleeps: about 0.1 ms */

static struct { kernel_t kernel; u64 slot, args[%(n)d]; } job;
/* generation << 32 | parts << 16 | next part to run: a claim reads the part count with the generation it
   belongs to (read from job, a thread late from a finished kernel could claim a part of the next one mid-write) */
static _Atomic u64 ticket;
static _Atomic u64 finished;          /* parts of this generation done */
static _Atomic int sleepers;
static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;

static inline void relax(void) {
#if defined(__x86_64__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ volatile("yield");
#endif
}

/* run parts of generation gen until none is left; a thread late from an older generation claims nothing */
static void work(u64 gen) {
  for (;;) {
    u64 t = atomic_load(&ticket);
    if ((t >> 32) != gen || (t & 0xffff) >= ((t >> 16) & 0xffff)) return;
    if (!atomic_compare_exchange_weak(&ticket, &t, t + 1)) continue;
    u64 a[%(n)d];  /* the claim succeeded, so this generation is not done: job is still its own */
    for (int i = 0; i < %(n)d; i++) a[i] = job.args[i];
    a[job.slot] = t & 0xffff;
    job.kernel(%(call)s);
    atomic_fetch_add(&finished, 1);
  }
}

static void *pool_thread(void *unused) {
  (void)unused;
  u64 seen = 0;
  for (;;) {
    for (int i = 0; (atomic_load(&ticket) >> 32) == seen; i++) {
      if (i < SPINS) { relax(); continue; }
      pthread_mutex_lock(&mutex);
      sleepers++;
      while ((atomic_load(&ticket) >> 32) == seen) pthread_cond_wait(&wake, &mutex);
      sleepers--;
      pthread_mutex_unlock(&mutex);
    }
    seen = atomic_load(&ticket) >> 32;
    work(seen);
  }
  return 0;
}

int start_pool(int threads) {
  for (int i = 0; i < threads; i++) {
    pthread_t t;
    if (pthread_create(&t, 0, pool_thread, 0) != 0) return i;
    pthread_detach(t);
  }
  return threads;
}

/* run parts 0..parts-1 (at most MAX_PARTS) of kernel, each with its part number in args[slot]; return when all are done */
void run_parts(u64 kernel, u64 parts, u64 slot, const u64 *args, u64 nargs) {
  job.kernel = (kernel_t)kernel; job.slot = slot;
  for (u64 i = 0; i < %(n)d; i++) job.args[i] = i < nargs ? args[i] : 0;
  atomic_store(&finished, 0);
  u64 gen = (atomic_load(&ticket) >> 32) + 1;
  atomic_store(&ticket, gen << 32 | parts << 16);
  pthread_mutex_lock(&mutex);
  if (sleepers) pthread_cond_broadcast(&wake);
  pthread_mutex_unlock(&mutex);
  work(gen);
  while (atomic_load(&finished) < parts) relax();
}

/* a jitted batch run wholly by the calling thread, each kernel's parts in turn; it shares nothing, so threads can
   each run their own batch at once (on_cores) */
void run_list_alone(const u64 *table, u64 count) {
  for (u64 e = 0; e < count; e++, table += %(entry)d) {
    u64 a[%(n)d];
    for (int i = 0; i < %(n)d; i++) a[i] = table[4 + i];
    for (u64 p = 0; p < (table[1] > 1 ? table[1] : 1); p++) {
      if (table[1] > 1) a[table[2]] = p;
      ((kernel_t)table[0])(%(call)s);
    }
  }
}

/* a jitted batch of kernels: count entries of ENTRY words each: kernel, parts, slot, nargs, then the arguments */
void run_list(const u64 *table, u64 count) {
  for (u64 e = 0; e < count; e++, table += %(entry)d) {
    if (table[1] > 1) { run_parts(table[0], table[1], table[2], table + 4, table[3]); continue; }
    const u64 *a = table + 4;
    ((kernel_t)table[0])(%(call)s);
  }
}
""" % {"types": ", ".join(["u64"] * KERNEL_ARGS), "n": KERNEL_ARGS, "call": _CALL, "entry": 4 + KERNEL_ARGS}
ENTRY = 4 + KERNEL_ARGS

_run_parts = _run_list = _run_list_alone = None  # the library's functions, once loaded
_threads = 1  # the pool's threads with the caller, once installed
_here = threading.local()  # .alone: this thread runs every part of its kernels itself (on_cores)
_tinygrad_call = ops_cpu.CPUProgram.__call__


def _library() -> ctypes.CDLL:
    """Build (once; cached by the source's hash beside tinygrad's cache) and load the pool library."""
    key = hashlib.sha256((SOURCE + sys.platform).encode()).hexdigest()[:16]
    path = os.path.join(cache_dir, "nanogpt_tg", f"cpu_runtime_{key}.so")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".so")
        os.close(fd)
        try:
            subprocess.run([getenv("CC", "clang"), "-O2", "-shared", "-fPIC", "-pthread", "-x", "c", "-", "-o", tmp],
                           input=SOURCE.encode(), check=True, capture_output=True)
            os.replace(tmp, path)  # atomic: a process beside this one loads a whole library or builds its own
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    return ctypes.CDLL(path)


def call_parts(self, *bufs, global_size=(1, 1, 1), local_size=(1, 1, 1), vals=(), wait=False, timeout=None):
    """CPUProgram.__call__, with a thread-split kernel's parts run by the pool at once."""
    if self.lvp or "core_id" not in self.runtimevars or not 2 <= global_size[0] <= MAX_PARTS or getattr(_here, "alone", 0):
        return _tinygrad_call(self, *bufs, global_size=global_size, local_size=local_size, vals=vals, wait=wait,
                              timeout=timeout)
    st = time.perf_counter()
    args = [b.va_addr for b in bufs] + [v or 0 for v in vals]  # the core_id slot is filled in per part
    _run_parts(self.addr, global_size[0], self.runtimevars["core_id"], (ctypes.c_uint64 * len(args))(*args), len(args))
    return time.perf_counter() - st if wait else None


def _address(buf) -> int:
    return buf.get_buf(buf.device).va_addr


class CPUGraph(GraphRunner):
    """A jitted batch of CPU kernels as one table, run by one call of run_list: no Python between kernels.

    Built like tinygrad's CUDA graph: each call's buffer addresses and variables go into its entry once; a call with
    other input buffers or variable values rewrites only those words."""

    def __init__(self, linear, input_uops=()):
        super().__init__(linear, input_uops)
        self.table = (ctypes.c_uint64 * (ENTRY * len(self.calls)))()
        self.arg_pos: list[dict[int, int]] = []  # per call: its argument list's position of each call argument
        var_vals = {v: 0 for v in self.vars}
        for j, ((_, prg, bufs, device_vars), runtime) in enumerate(zip(self.calls, self.runtimes)):
            info = prg.arg
            args = [_address(bufs[i]) for i in info.globals] + [v or 0 for v in info.vals({**var_vals, **device_vars})]
            if len(args) > KERNEL_ARGS:
                raise GraphException(f"{info.function_name}: {len(args)} arguments")
            self.arg_pos.append({g: i for i, g in enumerate(info.globals)})
            parts = info.launch_dims(var_vals)[0][0] if "core_id" in runtime.runtimevars else 1
            if parts > MAX_PARTS:
                raise GraphException(f"{info.function_name}: {parts} parts")
            self.table[ENTRY * j:ENTRY * j + 4 + len(args)] = [runtime.addr, parts, runtime.runtimevars.get("core_id", 0),
                                                               len(args), *args]

    def __call__(self, input_uops, var_vals, wait=False):
        for j, replace in enumerate(self.uop_replace):
            for pos, slot in replace:
                if pos in self.arg_pos[j]:
                    self.table[ENTRY * j + 4 + self.arg_pos[j][pos]] = _address(input_uops[slot].buffer)
        for j, i, v in self.updated_vars(var_vals):
            self.table[ENTRY * j + 4 + len(self.calls[j][1].arg.globals) + i] = v
        for j, global_size, _ in self.updated_launch_dims(var_vals):
            if self.table[ENTRY * j + 1] > 1:
                self.table[ENTRY * j + 1] = global_size[0]
        st = time.perf_counter()
        (_run_list_alone if getattr(_here, "alone", False) else _run_list)(self.table, len(self.calls))
        return time.perf_counter() - st if wait else None


def cores() -> int:
    """How many calls on_cores runs at once: the pool's threads (with the caller), or 1 where it is not installed."""
    return _threads if _run_list_alone is not None else 1


class _Worker:
    """A thread that runs the calls on_cores gives it, each kernel's parts on this thread alone."""

    def __init__(self, cpu: int | None):
        self.go, self.done = threading.Event(), threading.Event()
        self.fn = self.result = self.error = None
        self.cpu = cpu
        threading.Thread(target=self.loop, daemon=True, name="nanogpt_tg core").start()

    def loop(self):
        _here.alone = True
        if self.cpu is not None:
            os.sched_setaffinity(0, {self.cpu})  # this thread only (Linux)
        while True:
            self.go.wait()
            self.go.clear()
            try:
                self.result, self.error = self.fn(), None
            except BaseException as e:  # raised again in the caller's thread
                self.result, self.error = None, e
            self.done.set()


_workers: list[_Worker] = []


def _cpus() -> list[int] | None:
    """The CPUs this process may run on, where the OS says (Linux): on_cores's threads each take one. Left to the
    scheduler, a woken worker was at times put beside the caller on one CPU for the first steps (1-core speed)."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def on_cores(fns: list) -> list:
    """fns() at once, the first in this thread and each other in a worker thread of its own (at most cores()), every
    kernel they launch run wholly by its thread; their results, in order, once all are done.

    For jitted calls on distinct buffers (tinygrad's Python part of each replay runs under the GIL, its kernels on
    a core each). The pool stays idle meanwhile: its threads are the same cores."""
    assert 1 <= len(fns) <= cores(), f"{len(fns)} calls for {cores()} cores"
    cpus = _cpus()
    pin = cpus is not None and len(cpus) >= len(fns)
    while len(_workers) < len(fns) - 1:
        _workers.append(_Worker(cpus[len(_workers) + 1] if pin else None))
    for w, fn in zip(_workers, fns[1:]):
        w.fn = fn
        w.go.set()
    _here.alone = True
    if pin:
        os.sched_setaffinity(0, {cpus[0]})  # this thread, until the calls are done
    try:
        first = fns[0]()
    finally:
        _here.alone = False
        if pin:
            os.sched_setaffinity(0, cpus)
        for w in _workers[:len(fns) - 1]:
            w.done.wait()
            w.done.clear()
    for w in _workers[:len(fns) - 1]:
        if w.error is not None:
            raise w.error
    return [first] + [w.result for w in _workers[:len(fns) - 1]]


def install(device: str = "CPU") -> bool:
    """Run thread-split CPU kernels on the pool, and jitted batches on the tinygrad CPU device `device` as CPUGraphs,
    from now on (idempotent). False where tinygrad's runtime is kept."""
    global _run_parts, _run_list, _run_list_alone, _threads
    if _run_parts is not None:
        Device[device].graph = CPUGraph
        return True
    if os.environ.get("NANOGPT_TG_CPU_THREADS", "1") == "0" or sys.platform == "win32" or NUM_CPU_THREADS.value < 2:
        return False
    try:
        lib = _library()
    except (OSError, subprocess.CalledProcessError):
        return False
    lib.start_pool(NUM_CPU_THREADS.value - 1)
    lib.run_parts.argtypes = [ctypes.c_uint64] * 3 + [ctypes.c_void_p, ctypes.c_uint64]
    lib.run_parts.restype = None
    lib.run_list.argtypes = [ctypes.c_void_p, ctypes.c_uint64]
    lib.run_list.restype = None
    lib.run_list_alone.argtypes = [ctypes.c_void_p, ctypes.c_uint64]
    lib.run_list_alone.restype = None
    _run_parts, _run_list, _run_list_alone = lib.run_parts, lib.run_list, lib.run_list_alone
    _threads = NUM_CPU_THREADS.value
    ops_cpu.CPUProgram.__call__ = call_parts
    Device[device].graph = CPUGraph
    return True
