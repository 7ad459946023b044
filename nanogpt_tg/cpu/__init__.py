"""The CPU speed layer: four patches of tinygrad 0.14's CPU backend, the package's only changes to tinygrad itself.

- kernels: matmul tiles, wide vector loads and plain exp loops in place of tinygrad's kernel heuristic;
- runtime: a kernel's thread parts on all cores at once, and a jitted step as one call into a small C runtime;
- program_cache: generated kernels and jitted steps' schedules kept on disk, so a second run starts in seconds;
- scratch: every jitted step's scratch memory in one range, faulted in ahead on an idle core.

Each changes speed only (tests/test_cpu_layer.py compares losses and sampled tokens with the layer on and off).
`install()` checks the tinygrad version they were written for and, for each patch, the tinygrad internals it
replaces or reads (its REQUIRES); a patch that cannot apply is skipped with a one-line warning, and tinygrad's own
code runs in its place. NANOGPT_TG_CPU=0 turns the whole layer off; each patch has its own switch too.
"""
import contextlib
import importlib
import importlib.metadata
import os
import sys

WRITTEN_FOR = "0.14"  # the tinygrad minor version whose internals the patches replace
PATCHES = ("kernels", "program_cache", "runtime", "scratch")  # in the order they are applied
status: dict[str, str] = {}  # patch -> "on", or why it is off (filled by install)


def tinygrad_version() -> str:
    try:
        return importlib.metadata.version("tinygrad")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def compatible(version: str) -> bool:
    """Whether the patches were written for this tinygrad version (same major.minor)."""
    return version == WRITTEN_FOR or version.startswith(WRITTEN_FOR + ".")


def missing(requires: tuple[str, ...]) -> list[str]:
    """The names in requires ('module:attr.attr') that this tinygrad lacks."""
    gone = []
    for name in requires:
        module, _, path = name.partition(":")
        try:
            obj = importlib.import_module(module)
            for attr in filter(None, path.split(".")):
                obj = getattr(obj, attr)
        except (ImportError, AttributeError):
            gone.append(name)
    return gone


def tune_requested() -> bool:
    """NANOGPT_TG_TUNE=1: search the matmul tiles of kernels compiled from now on (cpu/tune.py)."""
    return os.environ.get("NANOGPT_TG_TUNE", "0") not in ("", "0")


def _warn(message: str):
    print(f"warning: {message}", file=sys.stderr)


def install(device: str | None = None) -> dict[str, str]:
    """Apply the patches (idempotent); the runtime only when device is a CPU device. Returns status."""
    version = tinygrad_version()
    if os.environ.get("NANOGPT_TG_CPU", "1") == "0":
        status.update({name: "off (NANOGPT_TG_CPU=0)" for name in PATCHES})
        return status
    if not compatible(version):
        if not status:
            _warn(f"nanogpt_tg's CPU speed layer was written for tinygrad {WRITTEN_FOR}, this is {version}: it is off "
                  f"and tinygrad's own CPU code runs (slower, same results)")
        status.update({name: f"off (tinygrad {version})" for name in PATCHES})
        return status
    for name in PATCHES:
        if name in ("runtime", "scratch") and (device is None or device.split(":")[0] != "CPU"):
            continue
        if status.get(name, "").startswith("off (cannot apply"):
            continue  # warned once already
        try:
            patch = importlib.import_module(f".{name}", __name__)
            gone = missing(patch.REQUIRES)
            if gone:
                raise AttributeError(f"tinygrad has no {', '.join(gone)}")
            status[name] = "on" if patch.install(device) else "off (its switch, or not supported here)"
        except Exception as e:  # a patch must never stop the package: tinygrad's own code runs instead
            status[name] = f"off (cannot apply: {type(e).__name__})"
            _warn(f"nanogpt_tg.cpu.{name} cannot apply to tinygrad {version} ({type(e).__name__}: {e}); "
                  f"tinygrad's own code runs in its place (same results, slower)")
    return status


def target(device: str) -> str:
    """tinygrad's DEV string for device: for "CPU", with the compiler flags kernels.py asks for (its clang_target),
    unless the layer or that patch is off; any other device as it is."""
    if device != "CPU" or os.environ.get("NANOGPT_TG_CPU", "1") == "0" or not compatible(tinygrad_version()):
        return device
    if os.environ.get("NANOGPT_TG_MATMUL_OPTS", "1") == "0" or os.environ.get("NANOGPT_TG_VECTOR_WIDTH", "1") == "0":
        return device
    try:
        from .kernels import clang_target
        return clang_target() or device
    except Exception as e:  # as in install: never stop the package
        _warn(f"nanogpt_tg.cpu: cannot pick the CPU compiler's target ({type(e).__name__}: {e}); tinygrad's default is used")
        return device


def describe() -> str:
    """One line: which patches are on."""
    on = [name for name in PATCHES if status.get(name) == "on"]
    off = [f"{name} {status[name]}" for name in PATCHES if name in status and status[name] != "on"]
    return "CPU speed layer: " + ", ".join([f"{' '.join(on)} on"] * bool(on) + off) + " (NANOGPT_TG_CPU=0 turns it off)"


def scratch_lane(k: int):
    """A context in which captured jits take scratch range k of their own (scratch.lane): calls that run at once
    (runtime.on_cores) need it. A no-op where that patch is off."""
    if status.get("scratch") != "on":
        return contextlib.nullcontext()
    from .scratch import lane
    return lane(k)


def expect_scratch(key: str):
    """A training run's shape, for the scratch patch to fault in ahead what its steps needed last time (scratch.expect)."""
    if status.get("scratch") == "on":
        from .scratch import expect
        expect(key)


def replica(jit, k: int, swap: dict | None = None):
    """A copy of the captured jit with scratch range k of its own that reads and writes swap's values (Tensors) in
    place of its keys, to run at once with it (scratch.replica), without capturing again; None where the scratch
    patch is off or the copy would share memory both write: capture another jit under scratch_lane(k) then."""
    if status.get("scratch") != "on":
        return None
    from .scratch import replica
    return replica(jit, k, swap)
