"""Device choice: nanoGPT's --device names (cpu, cuda, mps...) mapped onto tinygrad's (CPU, CUDA, METAL, CL)."""
import os

import numpy as np
from tinygrad import Device, Tensor, dtypes
from tinygrad.helpers import DEV

from . import auto_device, cpu
from .tg import buffer_array, cpu_buffer, device_names

ALIASES = {"cpu": "CPU", "cuda": "CUDA", "gpu": "CUDA", "metal": "METAL", "mps": "METAL", "cl": "CL",
           "opencl": "CL", "amd": "AMD", "nv": "NV"}

NOT_FOR_COMPUTE = {"NULL", "NPY", "DISK", "PYTHON"}  # placeholders, file access, and a very slow emulator
ENV_DEV = os.environ.get("DEV", "")  # the user's: read before tinygrad sets it for its worker processes


def set_device(name: str) -> str:
    """Make `name` tinygrad's default device and return its tinygrad name. 'auto' keeps DEV from the environment,
    else takes a GPU, else the CPU device (auto_device.py), and prints which and why.

    Raises a ValueError that lists the devices tinygrad can open here when the device is unknown or unusable.
    Also installs the CPU speed layer (nanogpt_tg/cpu/) before anything compiles.
    """
    previous = DEV.value
    try:
        if name != "auto":
            base, _, index = name.partition(":")
            DEV.value = cpu.target(ALIASES.get(base.lower(), base.upper()) + (f":{index}" if index else ""))
        elif ENV_DEV:
            DEV.value = ENV_DEV
            print(f"--device=auto: computing on {Device.DEFAULT} (DEV={ENV_DEV} in the environment)")
        else:
            device, why = auto_device.pick()
            DEV.value = os.environ["DEV"] = cpu.target(device)  # the environment too, for tinygrad's compile workers (as tinygrad)
            print(f"--device=auto: computing on {device} ({why})")
        device = Device.DEFAULT
        Device[device]  # opens it: fails here, not deep inside the first kernel
    except Exception as e:
        DEV.value = previous
        raise ValueError(f"--device={name}: tinygrad cannot open it ({type(e).__name__}: {e}); "
                         f"devices that work here: {', '.join(available_devices()) or 'none'}"
                         f"{' (the CPU device needs clang on PATH)' if name in ('auto', 'cpu') else ''}") from None
    cpu.install(device)
    return device


def available_devices() -> list[str]:
    """The tinygrad devices that open on this machine, e.g. ['CPU'] or ['CUDA', 'CPU']."""
    found = []
    for dev in device_names():
        if dev in NOT_FOR_COMPUTE:
            continue
        try:
            Device[dev]
            found.append(dev)
        except Exception:
            pass
    return found


def read(t: Tensor) -> np.ndarray:
    """t's values as a numpy array: a jitted step's output. On the CPU a copy straight from its memory (Tensor.numpy
    goes through tinygrad's scheduler, a large part of a sampled token's time)."""
    buf = cpu_buffer(t)
    if buf is None:
        return t.numpy()
    return buffer_array(buf, t.dtype).reshape(t.shape).copy()


def item(t: Tensor) -> float:
    """t.item() for a one-element float tensor (a step's loss), read as read() does: Tensor.item schedules a copy
    through tinygrad, ~1.5 ms a call on a 2-core CPU, a few percent of a small model's step."""
    buf = cpu_buffer(t) if t.dtype in (dtypes.float32, dtypes.float16, dtypes.float64) else None
    return t.item() if buf is None else float(buffer_array(buf, t.dtype)[0])


def write(t: Tensor, values: np.ndarray):
    """Copy values into t's realized buffer: an input a jitted step reads on every replay (a Python value would be
    baked in at capture). On the CPU straight into its memory, once no kernel may still read it (an assign
    is scheduled by tinygrad, slower than the step it feeds)."""
    buf = cpu_buffer(t)
    if buf is not None:
        buffer_array(buf, t.dtype)[:] = values.ravel()
    else:
        t.assign(Tensor(values.reshape(t.shape), dtype=t.dtype, device=t.device)).realize()
