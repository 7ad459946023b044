"""Device choice: nanoGPT's --device names (cpu, cuda, mps...) mapped onto tinygrad's (CPU, CUDA, METAL, CL)."""
import numpy as np
from tinygrad import Device, Tensor
from tinygrad.dtype import _to_np_dtype
from tinygrad.helpers import DEV
from tinygrad.uop.ops import Ops

from . import cpu_runtime, kernels, program_cache

ALIASES = {"cpu": "CPU", "cuda": "CUDA", "gpu": "CUDA", "metal": "METAL", "mps": "METAL", "cl": "CL",
           "opencl": "CL", "amd": "AMD", "nv": "NV"}

NOT_FOR_COMPUTE = {"NULL", "NPY", "DISK", "PYTHON"}  # placeholders, file access, and a very slow emulator


def set_device(name: str) -> str:
    """Make `name` tinygrad's default device ('auto' keeps tinygrad's choice) and return its tinygrad name.

    Raises a ValueError that lists the devices tinygrad can open here when the device is unknown or unusable.
    Also installs the CPU matmul kernel options (kernels.py) before anything compiles, and on the CPU the runtime
    that runs a kernel's thread parts on all cores at once and a jitted step in one call (cpu_runtime.py), and keeps
    generated kernels on disk between runs (program_cache.py).
    """
    kernels.install()
    program_cache.install()
    previous = DEV.value
    if name != "auto":
        base, _, index = name.partition(":")
        DEV.value = ALIASES.get(base.lower(), base.upper()) + (f":{index}" if index else "")
    try:
        device = Device.DEFAULT
        Device[device]  # opens it: fails here, not deep inside the first kernel
        if device.split(":")[0] == "CPU":
            cpu_runtime.install(device)
    except Exception as e:
        DEV.value = previous
        raise ValueError(f"--device={name}: tinygrad cannot open it ({type(e).__name__}: {e}); "
                         f"devices that work here: {', '.join(available_devices()) or 'none'}"
                         f"{' (the CPU device needs clang on PATH)' if name in ('auto', 'cpu') else ''}") from None
    return device


def available_devices() -> list[str]:
    """The tinygrad devices that open on this machine, e.g. ['CPU'] or ['CUDA', 'CPU']."""
    found = []
    for dev in Device._devices:
        if dev in NOT_FOR_COMPUTE:
            continue
        try:
            Device[dev]
            found.append(dev)
        except Exception:
            pass
    return found


def _cpu_buffer(t: Tensor):
    """t's realized CPU buffer when t is all of it (or a reshape of all of it), else None."""
    base = t.uop.base  # a realized buffer, or (more than 1-D) a reshape of one
    whole = t.uop is base or (t.uop.op is Ops.RESHAPE and t.uop.src[0] is base)
    if isinstance(t.device, str) and t.device.startswith("CPU") and whole and base.op is Ops.BUFFER and base.is_realized:
        Device[t.device].synchronize()  # no kernel still writes or reads it
        return base.buffer
    return None


def read(t: Tensor) -> np.ndarray:
    """t's values as a numpy array: a jitted step's output. On the CPU a copy straight from its memory (Tensor.numpy
    goes through tinygrad's scheduler: ~0.2 ms, a sixth of a sampled token)."""
    buf = _cpu_buffer(t)
    if buf is None:
        return t.numpy()
    return np.frombuffer(buf.as_memoryview(force_zero_copy=True), dtype=_to_np_dtype(t.dtype)).reshape(t.shape).copy()


def write(t: Tensor, values: np.ndarray):
    """Copy values into t's realized buffer: an input a jitted step reads on every replay (a Python value would be
    baked in at capture). On the CPU straight into its memory, once no kernel may still read it (an assign is
    scheduled by tinygrad: ~1 ms a call)."""
    buf = _cpu_buffer(t)
    if buf is not None:
        np.frombuffer(buf.as_memoryview(force_zero_copy=True), dtype=_to_np_dtype(t.dtype))[:] = values.ravel()
    else:
        t.assign(Tensor(values.reshape(t.shape), dtype=t.dtype, device=t.device)).realize()
