"""Every use of a private tinygrad name outside the CPU speed layer (nanogpt_tg/cpu/), in one place, for tinygrad 0.14.

When tinygrad renames one of these, this module is the one to change: the devices' order and OpenCL device types
(--device=auto), the compile worker pool (interrupt.py), the RNG's per-device state (exact resume), TinyJit's call
counter, raw CPU buffers (the sampler's and the train step's inputs and outputs), custom gradients (layers.py),
bfloat16 emulation and the optimizer's step (precision.py).
"""
from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING

import numpy as np
from tinygrad import Device, Tensor, TinyJit, dtypes
from tinygrad.nn.optim import LAMB

# internals with a public fallback: without them read/write take tinygrad's own path, and bfloat16 is not emulated
try:
    from tinygrad.dtype import _to_np_dtype
    from tinygrad.uop.ops import Ops
except ImportError:
    _to_np_dtype = Ops = None
try:
    from tinygrad.helpers import EMULATED_DTYPES
except ImportError:
    EMULATED_DTYPES = None
if TYPE_CHECKING:
    from tinygrad.uop.ops import UOp


# --- devices
def device_names() -> list[str]:
    """The device names tinygrad knows (whether or not they open here)."""
    return list(Device._devices)


def auto_order() -> list[str]:
    """The devices in the order tinygrad's own auto-detection tries them (GPUs first, the CPU after OpenCL)."""
    from tinygrad.device import ALL_DEVICES

    return list(ALL_DEVICES)


def opencl_device_is_cpu(device: str) -> bool:
    """Whether an OpenCL device (opened here) is a CPU by its OpenCL device type, as PoCL's is."""
    from tinygrad.runtime.autogen import opencl as cl

    device_type = ctypes.c_uint64()
    cl.clGetDeviceInfo(Device[device].cl_dev, cl.CL_DEVICE_TYPE, ctypes.sizeof(device_type), ctypes.byref(device_type),
                       None)
    return bool(device_type.value & cl.CL_DEVICE_TYPE_CPU)


def emulate_dtype(name: str) -> bool:
    """Have tinygrad store `name` (e.g. bfloat16) and compute it in float32, where the compiler lacks the type;
    False where this tinygrad cannot."""
    if EMULATED_DTYPES is None:
        return False
    EMULATED_DTYPES.value = ",".join(filter(None, [EMULATED_DTYPES.value, name]))
    return True


# --- tinygrad's compile workers (a spawn Pool, started by its first parallel compile)
def compile_pool_terminator():
    """tinygrad's function that terminates its compile worker pool, or None when no pool is running (or this tinygrad
    lacks the names: then it is left to tinygrad's own exit). interrupt.stop_pool calls it."""
    import tinygrad.engine.worker as worker

    terminate = getattr(worker, "terminate_worker_pool", None)
    return terminate if getattr(worker, "worker_pool", None) is not None and callable(terminate) else None


# --- the RNG: tinygrad keeps a seed and a counter tensor per device
def rng_state(device: str) -> np.ndarray | None:
    """tinygrad's RNG position on device: its seed and the counter every random op advances (uint32), or None."""
    if device not in Tensor._device_rng_counters:
        return None
    return np.concatenate([Tensor._device_seeds[device].numpy(), Tensor._device_rng_counters[device].numpy()])


def realize_rng(device: str):
    """Create and realize tinygrad's RNG seed and counter on device, so a jit capturing its first call reads them
    as buffers (captured before they exist, their initial values would be written again on every replay)."""
    Tensor._next_counter(device, 0)
    Tensor.realize(Tensor._device_seeds[device], Tensor._device_rng_counters[device])


def set_rng_state(device: str, state: np.ndarray):
    """Put tinygrad's RNG on device back where rng_state() found it, so dropout continues exactly."""
    Tensor.manual_seed(int(state[1]))
    Tensor._next_counter(device, 0)  # creates the seed and counter tensors
    seeds, counter = Tensor._device_seeds[device], Tensor._device_rng_counters[device]
    if int(seeds[0].item()) != int(state[0]):
        raise ValueError("the saved dropout RNG stream belongs to another device order; resume on the same devices")
    counter.assign(Tensor(state[2:].astype(np.uint32), dtype=dtypes.uint32, device=device)).realize()


# --- TinyJit
def capture_on_first_call(jit: TinyJit) -> TinyJit:
    """Make jit capture its graph on its first call (tinygrad 0.14: call 0 runs eagerly, 1 captures, 2+ replay).
    The eager first call only serves lazy state, and a step whose state is realized beforehand has none."""
    jit.cnt = 1
    return jit


# --- raw CPU buffers
def cpu_buffer(t: Tensor):
    """t's realized CPU buffer when t is all of it (or a reshape of all of it), else None (also where this tinygrad
    lacks the names it reads: callers then take tinygrad's own path)."""
    if Ops is None or _to_np_dtype is None:
        return None
    base = t.uop.base  # a realized buffer, or (more than 1-D) a reshape of one
    whole = t.uop is base or (t.uop.op is Ops.RESHAPE and t.uop.src[0] is base)
    if isinstance(t.device, str) and t.device.startswith("CPU") and whole and base.op is Ops.BUFFER and base.is_realized:
        Device[t.device].synchronize()  # no kernel still writes or reads it
        return base.buffer
    return None


def buffer_array(buf, dtype) -> np.ndarray:
    """A numpy view of a CPU buffer's memory (no copy)."""
    return np.frombuffer(buf.as_memoryview(force_zero_copy=True), dtype=_to_np_dtype(dtype))


# --- custom gradients: a tinygrad function call whose backward is given (layers.py)
def call(fxn, grad_fxn, *args: Tensor) -> Tensor:
    """fxn(*args) as one tinygrad call whose gradient is grad_fxn(grad, call): fxn builds the body from placeholder
    parameters. grad_fxn must be a module-level function (the program cache names it by its import path)."""
    params = [Tensor(t.as_param(i).uop, device=t.device) for i, t in enumerate(args)]
    return args[0].call(*args[1:], fxn=fxn(*params), grad_fxn=grad_fxn)


def call_inputs(call_uop: UOp) -> list[Tensor]:
    """Inside a grad_fxn: the call's arguments, as Tensors."""
    return [Tensor(u) for u in call_uop.src[1:]]


def call_output(call_uop: UOp) -> Tensor:
    """Inside a grad_fxn: the call's (first) output."""
    return Tensor(call_uop.gettuple(0))


def grads(*ts: Tensor | None) -> tuple[UOp | None, ...]:
    """A grad_fxn's return value: one gradient (or None) per argument of the call."""
    return tuple(None if t is None else t.uop for t in ts)


# --- the optimizer
class SkippingAdamW(LAMB):
    """tinygrad's AdamW (LAMB with adam=True, same arithmetic), but where `ok` is False the whole update (weights,
    moments, beta powers) is left out, as torch's GradScaler skips optimizer.step(). Set `ok` before schedule_step().
    It overrides LAMB._step, tinygrad's private per-step function."""

    def __init__(self, params: list[Tensor], lr: float, b1: float, b2: float, eps: float, weight_decay: float):
        super().__init__(params, lr, b1, b2, eps, weight_decay, adam=True)
        self.ok: Tensor | None = None

    def _step(self, params: list[Tensor], grads: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        ok = self.ok
        assert ok is not None, "set SkippingAdamW.ok (gradients finite) before schedule_step()"
        self.b1_t.assign(ok.where(self.b1_t * self.b1, self.b1_t))
        self.b2_t.assign(ok.where(self.b2_t * self.b2, self.b2_t))
        updates = []
        for i, (t, g) in enumerate(zip(params, grads)):
            g = ok.where(g, 0.0)  # keep inf/nan out of the arithmetic; the result is discarded anyway
            self.m[i].assign(ok.where(self.b1 * self.m[i] + (1.0 - self.b1) * g, self.m[i]))
            self.v[i].assign(ok.where(self.b2 * self.v[i] + (1.0 - self.b2) * (g * g), self.v[i]))
            m_hat, v_hat = self.m[i] / (1.0 - self.b1_t), self.v[i] / (1.0 - self.b2_t)
            up = m_hat / (v_hat.sqrt() + self.eps) + self.wd * t.detach()
            updates.append(ok.where(self.lr * up, 0.0).cast(t.dtype))
        return updates, [self.b1_t, self.b2_t] + self.m + self.v
