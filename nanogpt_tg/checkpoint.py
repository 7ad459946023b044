"""Checkpoints: one safetensors file per run, weights and optimizer moments, with the run's metadata as JSON.

nanoGPT pickles {model, optimizer, model_args, iter_num, best_val_loss, config} into ckpt.pt; here the same content
lives in out_dir/ckpt.safetensors: tensors as raw little-endian arrays, the rest as a JSON string in the header's
__metadata__, so loading never executes code. The file is written beside its final name, fsynced, then renamed
over it, so a crash mid-write leaves the previous checkpoint whole.
"""
import json
import os
import struct
from pathlib import Path

import numpy as np
from tinygrad import Tensor

CKPT_NAME = "ckpt.safetensors"
FORMAT, VERSION = "nanogpt-tg", 1
_DTYPES = {"F32": np.float32, "F16": np.float16, "I32": np.int32, "I64": np.int64, "U32": np.uint32, "U16": np.uint16,
           "U8": np.uint8}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


def write_safetensors(path: str | Path, arrays: dict[str, np.ndarray], metadata: dict[str, str]):
    """Write a safetensors file atomically: temporary file in the same directory, fsync, rename."""
    path = Path(path)
    header, offset = {"__metadata__": metadata}, 0
    for name, a in arrays.items():
        header[name] = {"dtype": _NAMES[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(blob)) + blob)
            for a in arrays.values():
                f.write(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<"), copy=False).tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise OSError(f"could not write checkpoint {path}: {e.strerror or e}; the previous checkpoint is intact. "
                          "Free disk space or choose another --out_dir") from e
        raise


def read_safetensors(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a safetensors file into numpy arrays and its metadata; a CheckpointError for anything malformed."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path} not found") from None
    try:
        (n,) = struct.unpack("<Q", raw[:8])
        if n > len(raw) - 8:
            raise ValueError(f"header of {n} bytes in a file of {len(raw)}")
        header = json.loads(raw[8 : 8 + n])
        metadata = header.pop("__metadata__", {}) or {}
        data = memoryview(raw)[8 + n :]
        arrays = {}
        for name, info in header.items():
            start, end = info["data_offsets"]
            dtype = np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<")
            if end > len(data) or start > end:
                raise ValueError(f"tensor {name} lies past the end of the file")
            arrays[name] = np.frombuffer(data[start:end], dtype=dtype).reshape(info["shape"]).astype(dtype.newbyteorder("="))
    except (ValueError, KeyError, TypeError, struct.error) as e:
        raise CheckpointError(f"{path} is not a valid safetensors file ({e}); it may be truncated or corrupt") from None
    return arrays, metadata


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
    try:
        info = json.loads(metadata[FORMAT])
    except (KeyError, json.JSONDecodeError):
        raise CheckpointError(f"{path} has no nanogpt-tg metadata; it was not written by this project") from None
    if info.get("version") != VERSION:
        raise CheckpointError(f"{path} has format version {info.get('version')}; this version reads {VERSION}")
    return arrays, info


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
        p.replace(_on(saved[k].astype(np.float32), p.device))
    Tensor.realize(*state.values())


def load_optimizer(model, optimizer, arrays: dict[str, np.ndarray], path: str | Path = CKPT_NAME):
    """Restore AdamW's moments and beta powers saved by save_checkpoint."""
    for k, t in optimizer_state(model, optimizer).items():
        if k not in arrays:
            raise CheckpointError(f"{path}: optimizer state {k} is missing; resume needs a checkpoint saved by train.py")
        t.replace(_on(arrays[k].astype(np.float32).reshape(t.shape), t.device))
    Tensor.realize(*optimizer_state(model, optimizer).values())
