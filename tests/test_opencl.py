"""Another device than the CPU: tinygrad's OpenCL device (on a GPU, or on this CPU through PoCL) trains the tiny
model and samples to the CPU device's numbers. This is the GPUs' code path (local memory, OpenCL C), which the CPU
speed layer must leave alone. Skipped where no OpenCL device opens (`apt-get install -y pocl-opencl-icd` gives one)."""
import numpy as np
import pytest
from tinygrad import Device

from tiny_run import run_elsewhere


def cl_opens() -> str | None:
    """None when tinygrad's CL device opens here, else why not."""
    try:
        Device["CL"]
        return None
    except Exception as e:
        return f"{type(e).__name__}: {e}"


@pytest.mark.opencl
@pytest.mark.skipif(cl_opens() is not None, reason=f"no OpenCL device opens here ({cl_opens()}); "
                    "apt-get install -y pocl-opencl-icd gives one on the CPU")
def test_opencl_trains_and_samples_as_the_cpu(tiny_cpu_run, tmp_path):
    # PoCL compiles each kernel through LLVM, slowly: 10 new tokens, not 50
    cl, _ = run_elsewhere(tmp_path, device="cl", new_tokens=10, timeout=900)
    assert "runtime" not in cl["status"] or cl["status"]["runtime"] != "on"  # the CPU runtime stays off CL
    cpu = tiny_cpu_run
    # the first loss is a forward pass of the same weights on the same batch: OpenCL's own exp and log apart, equal
    # (PoCL: 2e-5 off on one batch, 1.1e-4 on another, of 2.32; a wrong kernel is off by far more)
    np.testing.assert_allclose(cl["losses"][0], cpu["losses"][0], rtol=0, atol=3e-4)
    # then 20 AdamW steps grow the rounding differences (PoCL: losses up to 1.1e-3 off, logits up to 5.4e-3, all O(1));
    # a wrong kernel is off by far more, and the greedy tokens must be the same
    np.testing.assert_allclose(cl["losses"], cpu["losses"], rtol=0, atol=5e-3)
    np.testing.assert_allclose(cl["logits"], cpu["logits"], rtol=0, atol=2e-2)
    assert cl["tokens"] == cpu["tokens"][: len(cl["tokens"])]
