"""Mixed precision: nanoGPT's --dtype (torch autocast + GradScaler) in tinygrad.

Master weights and AdamW moments stay float32; the forward and backward passes compute with float16/bfloat16 copies
of the weights (the float32 LayerNorm statistics, softmax and loss are in model.py). float16 gradients get torch's
dynamic loss scaling, and a step whose gradients overflowed is skipped whole (tg.SkippingAdamW).
"""
import os
from contextlib import contextmanager

import numpy as np

from tinygrad import Device, Tensor, dtypes
from tinygrad.dtype import DType

from .config import ConfigError
from .tg import emulate_dtype

DTYPES = {"float32": dtypes.float32, "bfloat16": dtypes.bfloat16, "float16": dtypes.float16}


def _compiles(dt: DType, device: str) -> bool:
    """Whether device can store and compute dt: one tiny kernel, clang's complaints kept off the terminal."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            return (Tensor.full((4,), 1.5, dtype=dt, device=device) * 2).float().tolist() == [3.0] * 4
    except Exception:
        return False
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def resolve_dtype(name: str, device: str) -> tuple[str, str | None]:
    """The compute dtype for --dtype=name on device, and a note to print (or None).

    'auto' is nanoGPT's default: bfloat16 where the device has it, else float16; float32 on the CPU, where nanoGPT
    does not autocast either. bfloat16 on a CPU whose clang cannot compile it (clang 14) is emulated by tinygrad:
    bfloat16 storage and rounding, float32 arithmetic.
    """
    if name not in DTYPES and name != "auto":
        raise ConfigError(f"--dtype={name} is not known; use float32, bfloat16, float16 or auto")
    base = device.split(":")[0]
    if name == "auto":
        if base == "CPU":
            return "float32", None
        name = "bfloat16" if _compiles(dtypes.bfloat16, device) else "float16"
        return name, f"--dtype=auto: computing in {name} on {device}"
    if name == "float32" or _compiles(DTYPES[name], device):
        return name, None
    if name == "bfloat16" and base == "CPU":
        if emulate_dtype("bfloat16") and _compiles(dtypes.bfloat16, device):
            return name, ("note: this CPU's clang cannot compile bfloat16 (clang 14 lacks __bf16 for this target); "
                          "tinygrad emulates it: bfloat16 storage and rounding, float32 arithmetic, slower")
    raise ConfigError(f"--dtype={name}: {Device[device].renderer.__class__.__name__} on {device} cannot compile "
                      f"{name} kernels; use --dtype=float32")


def _tensor_slots(obj, seen=None):
    """(owner, attribute name, tensor) for every Tensor attribute in a model's tree of objects, dicts and lists."""
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, Tensor):
        return
    seen.add(id(obj))
    children = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else None
    if children is None:
        if not hasattr(obj, "__dict__"):
            return
        for name, value in vars(obj).items():
            if isinstance(value, Tensor):
                yield obj, name, value
        children = vars(obj).values()
    for child in children:
        yield from _tensor_slots(child, seen)


@contextmanager
def autocast(model, dtype: DType):
    """Inside the block the model computes with dtype copies of its float32 weights; gradients reach the float32
    masters through the casts (torch.autocast's effect, done by swapping the weights). Tied weights share one copy."""
    if dtype == dtypes.float32:
        yield
        return
    slots = [(owner, name, t) for owner, name, t in _tensor_slots(model) if dtypes.is_float(t.dtype)]
    copies: dict[int, Tensor] = {}
    for owner, name, t in slots:
        setattr(owner, name, copies.setdefault(id(t), t.cast(dtype)))
    try:
        yield
    finally:
        for owner, name, t in slots:
            setattr(owner, name, t)


def placed(t: Tensor, device: str | tuple[str, ...]) -> Tensor:
    """t on device, or replicated on every device of a tuple (data parallel)."""
    return t.shard(device) if isinstance(device, tuple) else t.to(device)


class LossScaler:
    """Dynamic loss scaling for float16, torch's GradScaler defaults: start at 2**16, halve the scale and skip the
    step when a gradient is inf or nan, double it after 2000 steps in a row without."""

    def __init__(self, device: str | tuple[str, ...], init_scale: float = 2.0**16, growth_interval: int = 2000):
        self.device, self.growth_interval = device, growth_interval
        self.scale = placed(Tensor([init_scale], dtype=dtypes.float32), device).contiguous().realize()
        self.good_steps = placed(Tensor([0], dtype=dtypes.int32), device).contiguous().realize()
        self.skipped = placed(Tensor([False], dtype=dtypes.bool), device).contiguous().realize()

    def state(self) -> dict[str, np.ndarray]:
        """The scale and the count of clean steps, for a checkpoint."""
        return {"amp.scale": self.scale.numpy(), "amp.good_steps": self.good_steps.numpy()}

    def load_state(self, arrays: dict[str, np.ndarray]):
        """Continue from state() where a checkpoint has it."""
        for name, t in (("amp.scale", self.scale), ("amp.good_steps", self.good_steps)):
            if name in arrays:
                t.assign(placed(Tensor(arrays[name].reshape(1), dtype=t.dtype), self.device)).realize()

    def scale_loss(self, loss: Tensor) -> Tensor:
        return loss * self.scale.reshape(())

    def unscale_(self, params: list[Tensor]) -> Tensor:
        """Divide every gradient by the scale; returns ok, a (1,) bool: all gradients finite."""
        inv = 1.0 / self.scale
        for p in params:
            p.grad = p.grad.float() * inv
        return Tensor.stack(*[p.grad.square().sum() for p in params]).sum().isfinite().reshape(1)

    def update(self, ok: Tensor) -> list[Tensor]:
        """Schedule the next scale; returns the state tensors to realize with the step."""
        good = ok.where(self.good_steps + 1, 0)
        grow = good >= self.growth_interval
        self.scale.assign(ok.where(grow.where(self.scale * 2.0, self.scale), self.scale * 0.5))
        self.good_steps.assign(grow.where(0, good).cast(dtypes.int32))
        self.skipped.assign(ok.logical_not())
        return [self.scale, self.good_steps, self.skipped]
