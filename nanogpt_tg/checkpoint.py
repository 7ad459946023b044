"""Checkpoints: one safetensors file per run, weights and optimizer moments, with the run's metadata as JSON.

nanoGPT pickles {model, optimizer, model_args, iter_num, best_val_loss, config} into ckpt.pt; here the same content
lives in out_dir/ckpt.safetensors: tensors as raw little-endian arrays, the rest as a JSON string in the header's
__metadata__, so loading never executes code. The file is written beside its final name, fsynced, then renamed
over it, so a crash mid-write leaves the previous checkpoint whole; weights that are not finite are never written.
"""
import json
import math
import os
import struct
from pathlib import Path

import numpy as np
from tinygrad import Tensor

from .fsio import atomic_write, not_a_file
from .schema import CheckpointError, check_info, parse_json

CKPT_NAME = "ckpt.safetensors"
FORMAT, VERSION = "nanogpt-tg", 1
_DTYPES = {"F32": np.float32, "F16": np.float16, "I32": np.int32, "I64": np.int64, "U32": np.uint32, "U16": np.uint16,
           "U8": np.uint8}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}


MAX_HEADER = 100 << 20  # bytes of JSON before the tensors; ours is a few KB, a GPT-2's a few hundred


def write_safetensors(path: str | Path, arrays: dict[str, np.ndarray], metadata: dict[str, str]):
    """Write a safetensors file atomically (fsio.atomic_write: a unique temporary file beside it, fsync, rename).
    Float arrays holding inf or nan are refused (check_finite): no path writes them over a checkpoint."""
    path = Path(path)
    check_finite(arrays, path)
    header, offset = {"__metadata__": metadata}, 0
    for name, a in arrays.items():
        header[name] = {"dtype": _NAMES[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    existed = path.is_file()
    try:
        with atomic_write(path) as f:
            f.write(struct.pack("<Q", len(blob)) + blob)
            for a in arrays.values():
                f.write(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<"), copy=False).tobytes())
    except OSError as e:
        kept = "the previous checkpoint is intact" if existed else "no checkpoint was written"
        raise OSError(f"could not write checkpoint {path}: {e.strerror or e}; {kept}. "
                      "Free disk space or choose another --out_dir") from e


def read_safetensors(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a safetensors file into numpy arrays (read-only, mapped from the file) and its metadata.

    The header is checked against the file's size before anything else is read (every tensor's dtype, shape and
    byte range), and the tensors are mapped, not read: no size in the header makes this allocate, and the caller
    can check the shapes before it copies anything. Anything malformed is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} {not_a_file(path)}")
    with open(path, "rb") as f:  # one open file for the header and the tensors: a concurrent replace cannot mix two
        return _read_safetensors(f, path)


def _read_safetensors(f, path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    size = os.fstat(f.fileno()).st_size
    try:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{size} bytes, too short for a header")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, MAX_HEADER):
            raise ValueError(f"header of {n} bytes in a file of {size}")
        header = json.loads(f.read(n))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        metadata = header.pop("__metadata__", None) or {}
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise ValueError("__metadata__ is not an object of strings")
        data_size, layout = size - 8 - n, {}
        for name, info in header.items():
            if not isinstance(info, dict) or not isinstance(info.get("dtype"), str) or info["dtype"] not in _DTYPES:
                raise ValueError(f"tensor {name[:60]} has no known dtype")
            shape, offsets = info.get("shape"), info.get("data_offsets")
            if not (isinstance(shape, list) and len(shape) <= 8 and all(type(d) is int and 0 <= d < 1 << 40 for d in shape)):
                raise ValueError(f"tensor {name[:60]} has shape {str(shape)[:60]}")
            if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
                raise ValueError(f"tensor {name[:60]} has data_offsets {str(offsets)[:60]}")
            start, end = offsets
            dtype = np.dtype(_DTYPES[info["dtype"]])
            if not 0 <= start <= end <= data_size:
                raise ValueError(f"tensor {name[:60]} lies past the end of the file")
            if end - start != math.prod(shape) * dtype.itemsize:
                raise ValueError(f"tensor {name[:60]} of shape {shape} has {end - start} bytes")
            layout[name] = (dtype, shape, start, end)
    except (ValueError, RecursionError, struct.error) as e:
        why = "nested too deeply" if isinstance(e, RecursionError) else e
        raise CheckpointError(f"{path} is not a valid safetensors file ({why}); it may be truncated or corrupt") from None
    used = max((end for *_, end in layout.values()), default=0)  # map only what the tensors cover
    data = np.asarray(np.memmap(f, dtype=np.uint8, mode="r", offset=8 + n, shape=(used,))) if used else np.zeros(0, np.uint8)
    arrays = {}
    for name, (dtype, shape, start, end) in layout.items():
        a = data[start:end].view(dtype.newbyteorder("<")).reshape(shape)
        arrays[name] = a if dtype.newbyteorder("<") == dtype else a.astype(dtype)  # big-endian machines: swap
    return arrays, metadata


def check_finite(arrays: dict[str, np.ndarray], path: str | Path):
    """Refuse weights that hold inf or nan: saved, they would replace a good checkpoint with a useless one."""
    for name, a in arrays.items():
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            kept = f"{path} is left as it was" if Path(path).is_file() else "no checkpoint was written"
            raise FloatingPointError(f"{name} holds non-finite values (inf or nan), so it was not saved; {kept}. "
                                     "Lower --learning_rate or --grad_clip")


def _gathered(t: Tensor) -> np.ndarray:
    """A tensor as numpy; a replicated one (data parallel) from its first device, so the file is the same as from one."""
    return (t.to(t.device[0]) if isinstance(t.device, tuple) else t).numpy()


def _on(a: np.ndarray, device: str | tuple[str, ...]) -> Tensor:
    """An array on device, or replicated on each device of a tuple: a checkpoint loads onto any number of devices."""
    return Tensor(a).shard(device) if isinstance(device, tuple) else Tensor(a, device=device)


def optimizer_state(model, optimizer) -> dict[str, Tensor]:
    """AdamW's moments by parameter name (torch's exp_avg / exp_avg_sq), and each group's running beta powers."""
    names = {id(p): k for k, p in model.state_dict().items()}
    state = {}
    for g, opt in enumerate(optimizer.optimizers):
        for p, m, v in zip(opt.params, opt.m, opt.v):
            state[f"optimizer.{names[id(p)]}.exp_avg"] = m
            state[f"optimizer.{names[id(p)]}.exp_avg_sq"] = v
        state[f"optimizer.group{g}.b1_t"], state[f"optimizer.group{g}.b2_t"] = opt.b1_t, opt.b2_t
    return state


def save_checkpoint(out_dir: str | Path, model, optimizer, info: dict, extra: dict[str, np.ndarray] | None = None) -> Path:
    """Save weights, optimizer state, extra arrays (e.g. the RNG state) and info (model_args, iter_num,
    best_val_loss, config, vocabulary)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if optimizer is not None:
        tensors.update(optimizer_state(model, optimizer))
    arrays = {k: _gathered(v) for k, v in tensors.items()} | (extra or {})
    path = out_dir / CKPT_NAME
    write_safetensors(path, arrays, {FORMAT: json.dumps({"format": FORMAT, "version": VERSION, **info})})
    return path


def load_checkpoint(out_dir: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """Read out_dir/ckpt.safetensors: the arrays and the info dict saved with them."""
    path = Path(out_dir) / CKPT_NAME
    if not path.is_file():
        raise CheckpointError(f"no checkpoint in {out_dir} ({path} not found); train one first: "
                              f"python train.py config/train_shakespeare_char.py --out_dir={out_dir}")
    arrays, metadata = read_safetensors(path)
    if FORMAT not in metadata:
        raise CheckpointError(f"{path} has no nanogpt-tg metadata; it was not written by this project")
    info = parse_json(metadata[FORMAT], path)
    if not isinstance(info, dict) or info.get("version") != VERSION:
        version = info.get("version") if isinstance(info, dict) else None
        raise CheckpointError(f"{path} has format version {str(version)[:20]}; this version reads {VERSION}")
    return arrays, check_info(info, path, arrays)


def load_weights(model, arrays: dict[str, np.ndarray], path: str | Path = CKPT_NAME):
    """Copy the model.* arrays into the model; missing, extra or misshapen weights raise a CheckpointError."""
    state = model.state_dict()
    saved = {k[len("model.") :]: v for k, v in arrays.items() if k.startswith("model.")}
    missing, extra = sorted(set(state) - set(saved)), sorted(set(saved) - set(state))
    if missing or extra:
        raise CheckpointError(f"{path}: weights do not match the model (missing: {missing[:3]}, extra: {extra[:3]})")
    for k, p in state.items():
        if tuple(saved[k].shape) != tuple(p.shape):
            raise CheckpointError(f"{path}: {k} has shape {tuple(saved[k].shape)}, the model expects {tuple(p.shape)}")
        if not np.isfinite(saved[k]).all():
            raise CheckpointError(f"{path}: {k} holds non-finite values (inf or nan); the checkpoint cannot be used")
        p.replace(_on(saved[k].astype(np.float32), p.device))
    Tensor.realize(*state.values())


def load_optimizer(model, optimizer, arrays: dict[str, np.ndarray], path: str | Path = CKPT_NAME):
    """Restore AdamW's moments and beta powers saved by save_checkpoint."""
    for k, t in optimizer_state(model, optimizer).items():
        if k not in arrays:
            raise CheckpointError(f"{path}: optimizer state {k} is missing; resume needs a checkpoint saved by train.py")
        if arrays[k].size != t.numel():
            raise CheckpointError(f"{path}: optimizer state {k} has shape {arrays[k].shape}, the model expects {t.shape}")
        t.replace(_on(arrays[k].astype(np.float32).reshape(t.shape), t.device))
    Tensor.realize(*optimizer_state(model, optimizer).values())
