"""Data parallel over several devices: what nanoGPT does with torch DDP, done by tinygrad's multi-device tensors.

Parameters and AdamW moments are replicated on every device, each batch is split along its first axis, and the
gradients are summed across devices inside the one jitted step (tinygrad inserts the all-reduce).
"""
from tinygrad import Device, Tensor

from .config import ConfigError


def parse_devices(spec: str, default: str) -> tuple[str, ...]:
    """--devices: '' (one device), a count N (N devices of the default device's kind) or a list 'CUDA:0,CUDA:1'.

    Returns tinygrad's device names (CPU:0 is 'CPU'), or () for one device."""
    from .device import ALIASES

    spec = spec.strip()
    if not spec or spec == "1":
        return ()
    if spec.isdigit():
        kind = default.split(":")[0]
        names = [f"{kind}:{i}" for i in range(int(spec))]
    else:
        names = []
        for name in spec.split(","):
            base, _, index = name.strip().partition(":")
            names.append(ALIASES.get(base.lower(), base.upper()) + (f":{index}" if index else ""))
    devices = tuple(Device.canonicalize(n) for n in names)
    if len(devices) < 2:
        raise ConfigError(f"--devices={spec} names one device; use --device={spec} for one device, or list two or more")
    if len(set(devices)) != len(devices):
        raise ConfigError(f"--devices={spec} names a device twice ({', '.join(devices)})")
    for d in devices:
        try:
            Device[d]
        except Exception as e:
            raise ConfigError(f"--devices={spec}: tinygrad cannot open {d} ({type(e).__name__}: {e})") from None
    return devices


def check_batch(batch_size: int, devices: tuple[str, ...]):
    """Each device gets an equal slice of every micro-batch."""
    if devices and batch_size % len(devices):
        raise ConfigError(f"--batch_size={batch_size} does not divide over {len(devices)} devices (--devices); use a "
                          f"multiple of {len(devices)}, e.g. --batch_size={(batch_size // len(devices) + 1) * len(devices)}")


def replicate(params: list[Tensor], devices: tuple[str, ...]):
    """Copy every parameter to all devices, in place (the model object keeps its tensors)."""
    for p in params:
        p.shard_(devices)
    Tensor.realize(*params)


def split_batch(t: Tensor, devices: tuple[str, ...]) -> Tensor:
    """(B, ...) -> B / len(devices) rows on each device; unchanged with one device."""
    return t.shard(devices, axis=0) if devices else t
