"""--device=auto: tinygrad's own order of devices (a GPU first, then the CPU), except that an OpenCL driver which
runs on the CPU itself (PoCL, which some distributions install) comes after the CPU device: it is much slower."""
from tinygrad import Device

from .tg import auto_order, opencl_device_is_cpu


def kind(device: str) -> str:
    """'cpu' for the CPU device and for an OpenCL device whose device type is CPU, else 'gpu'. Opens the device."""
    base = device.split(":")[0]
    if base == "CPU":
        return "cpu"
    if base == "CL":
        return "cpu" if opencl_device_is_cpu(device) else "gpu"
    return "gpu"  # METAL, AMD, NV, CUDA, QCOM, WEBGPU: tinygrad has no other CPU backend


def choose(found: list[tuple[str, str]]) -> tuple[str, str]:
    """(device, why) from the devices that open, given as (name, kind) in tinygrad's order: the first one that is
    not an OpenCL device on the CPU, else the first one."""
    assert found, "no device opens"
    skipped = [name for name, k in found if k == "cpu" and name.split(":")[0] != "CPU"]
    device = next((name for name, _ in found if name not in skipped), found[0][0])
    if device in skipped:
        return device, "no GPU and no CPU device opens here (the CPU device needs clang on PATH)"
    why = "a GPU" if dict(found)[device] == "gpu" else "no GPU found"
    if skipped:
        why += f"; {', '.join(skipped)} skipped: an OpenCL driver on the CPU, slower than the CPU device"
    return device, why


def pick() -> tuple[str, str]:
    """Open tinygrad's devices in its order until one that is not an OpenCL device on the CPU opens; return
    choose()'s (device, why)."""
    found = []
    for dev in auto_order():
        try:
            name = Device[dev].device
            found.append((name, kind(name)))
        except Exception:  # not on this machine: a missing driver or library raises anything
            continue
        if found[-1][1] == "gpu" or dev == "CPU":  # nothing later in the order is preferred
            break
    if not found:
        raise RuntimeError("no usable devices")
    return choose(found)
