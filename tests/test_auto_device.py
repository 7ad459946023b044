"""--device=auto: a GPU first, then the CPU device; an OpenCL driver that runs on the CPU (PoCL) only when nothing
else opens. The choice is a pure function of what opens, so it is tested without a GPU."""
import pytest
from tinygrad import Device

from nanogpt_tg.auto_device import choose, kind, pick


@pytest.mark.parametrize("found, device", [
    ([("CL", "cpu"), ("CPU", "cpu")], "CPU"),  # PoCL installed, no GPU: what issue 17 hit
    ([("CUDA", "gpu"), ("CL", "cpu"), ("CPU", "cpu")], "CUDA"),
    ([("CL", "gpu"), ("CPU", "cpu")], "CL"),  # an OpenCL GPU comes before the CPU, as in tinygrad's order
    ([("CPU", "cpu"), ("WEBGPU", "gpu")], "CPU"),  # otherwise tinygrad's order stands
    ([("CL", "cpu")], "CL"),  # no clang for the CPU device: PoCL is better than nothing
])
def test_auto_prefers_a_gpu_then_the_cpu_device(found, device):
    assert choose(found)[0] == device


def test_auto_says_why():
    assert choose([("CL", "cpu"), ("CPU", "cpu")])[1] == \
        "no GPU found; CL skipped: an OpenCL driver on the CPU, slower than the CPU device"
    assert choose([("NV", "gpu"), ("CPU", "cpu")])[1] == "a GPU"


def test_pocl_here_counts_as_a_cpu_and_auto_takes_the_cpu_device():
    try:
        name = Device["CL"].device_name
    except Exception:
        pytest.skip("no OpenCL driver on this machine")
    if not name.startswith(("pthread", "cpu")):  # PoCL names its CPU devices so (pthread-skylake-avx512, cpu-...)
        pytest.skip(f"the OpenCL device here is {name}, not PoCL's CPU device")
    assert kind("CL") == "cpu" and kind("CPU") == "cpu"
    assert pick()[0] == "CPU"
