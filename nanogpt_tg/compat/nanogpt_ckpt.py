"""PyTorch nanoGPT files: read ckpt.pt and meta.pkl safely without torch, and write a ckpt.pt nanoGPT's sample.py loads.

nanoGPT's train.py saves ckpt.pt with torch.save: a zip of data.pkl (a pickle) and raw tensor storages. torch.load,
pickle.load and tinygrad's nn.state.torch_load call whatever globals the pickle names, so a stranger's file could run
code. Here the unpickler admits only the globals a real nanoGPT checkpoint holds, and only as stand-ins that build
numpy arrays: nothing is imported, nothing else is called. Sizes are bounded before anything is built: opcodes,
memo indices, objects and nesting, and every tensor against the real size of its storage in the zip.
"""
import io
import math
import os
import pickle
import pickletools
import sys
import warnings
import zipfile
import zlib
from collections import OrderedDict
from dataclasses import fields
from pathlib import Path

import numpy as np

from ..checkpoint import CKPT_NAME, CheckpointError, check_finite, load_checkpoint
from ..fsio import atomic_write, not_a_file
from ..model import GPTConfig, decays
from ..schema import check_info, check_vocabulary, read_json

PT_NAME, META_NAME = "ckpt.pt", "meta.pkl"
# storage types torch 1.6 to 2.x write for float32, float16 and bfloat16 tensors; bfloat16 is read as raw uint16
_STORAGES = {"FloatStorage": np.dtype("<f4"), "HalfStorage": np.dtype("<f2"), "BFloat16Storage": np.dtype("<u2")}
_MODEL_ARGS = [f.name for f in fields(GPTConfig)]
# nanoGPT's GPTConfig has these fields only: GPTConfig(**model_args) raises on any other (ours has activation too)
NANOGPT_MODEL_ARGS = ("block_size", "vocab_size", "n_layer", "n_head", "n_embd", "dropout", "bias")
# bounds on a pickle: a nanoGPT data.pkl of GPT-2 124M with its optimizer is ~100 KB of ~20k opcodes
MAX_PICKLE_BYTES, MAX_OPCODES, MAX_OBJECTS, MAX_DEPTH = 64 << 20, 1 << 22, 1 << 20, 64
MAX_INFLATE = 64  # torch.save stores tensors uncompressed; a storage that inflates more than this is a zip bomb


class UnsafeCheckpointError(CheckpointError):
    """A pickle names a global that no nanoGPT file contains; nothing in it was called."""


class _StorageType:
    """Stand-in for torch.FloatStorage and friends: only its name is used."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name


class _Storage:
    """One tensor storage from the zip, as a flat float32 array."""

    __slots__ = ("data",)

    def __init__(self, data: np.ndarray):
        self.data = data


def _bfloat16_to_float32(raw: np.ndarray) -> np.ndarray:
    """bfloat16 is the top half of a float32: shift the 16 bits up."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles data.pkl; find_class hands out stand-ins for an allow-list and refuses every other global."""

    def __init__(self, file, path: Path, zf: zipfile.ZipFile | None = None, prefix: str = "", allow_torch: bool = True):
        super().__init__(file)
        self.path, self.zf, self.prefix, self.storages = path, zf, prefix, {}
        self.zip_size = os.path.getsize(path) if zf is not None else 0
        self.stored = self.built = 0  # elements read from storages, and in tensors built from them
        self.allowed = {("collections", "OrderedDict"): OrderedDict} if allow_torch else {}
        if allow_torch:
            self.allowed[("torch._utils", "_rebuild_tensor_v2")] = self._rebuild_tensor_v2
            self.allowed[("torch._utils", "_rebuild_parameter")] = self._rebuild_parameter
            self.allowed.update({("torch", name): _StorageType(name) for name in _STORAGES})

    def find_class(self, module: str, name: str):
        if (module, name) not in self.allowed:
            kind = "checkpoint" if self.zf is not None else "vocabulary file"
            raise UnsafeCheckpointError(f"{self.path}: refused to load global '{module}.{name}' — a nanoGPT {kind} "
                                        "never contains it; this file may be malicious, do not open it with torch.load")
        return self.allowed[(module, name)]

    def persistent_load(self, pid):
        # torch.save writes ('storage', storage_type, key, location, numel) for every tensor storage
        if self.zf is None or not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(f"{self.path}: unexpected persistent id {pid!r:.80}; not a nanoGPT checkpoint")
        _, storage_type, key, _location, numel = pid  # the location (cpu, cuda:0) does not matter here
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str) or type(numel) is not int:
            raise CheckpointError(f"{self.path}: malformed storage record {pid!r:.80}")
        if key not in self.storages:
            dtype = _STORAGES[storage_type.name]
            try:
                member = self.zf.getinfo(f"{self.prefix}data/{key}")
            except KeyError:
                raise CheckpointError(f"{self.path}: storage {key} is missing; the file may be truncated") from None
            nbytes = numel * dtype.itemsize
            # sizes the zip claims, checked against the file's real size before a byte is inflated
            if numel < 0 or member.file_size < nbytes or member.header_offset + member.compress_size > self.zip_size:
                raise CheckpointError(f"{self.path}: storage {key} holds {member.file_size} bytes, {numel} elements "
                                      "expected; the file may be truncated or corrupt")
            if member.compress_type != zipfile.ZIP_STORED and nbytes > MAX_INFLATE * max(member.compress_size, 1):
                raise CheckpointError(f"{self.path}: storage {key} inflates {member.compress_size} bytes to {nbytes}; "
                                      "torch.save stores tensors uncompressed, so this is refused as a zip bomb")
            with self.zf.open(member) as f:
                raw = f.read(nbytes)  # never more than the record asks for
            if len(raw) < nbytes:
                raise CheckpointError(f"{self.path}: storage {key} holds {len(raw)} bytes, {numel} elements expected")
            self.stored += numel
            data = np.frombuffer(raw, dtype=dtype, count=numel)
            data = _bfloat16_to_float32(data) if storage_type.name == "BFloat16Storage" else data.astype(np.float32)
            self.storages[key] = _Storage(data)
        return self.storages[key]

    def _rebuild_tensor_v2(self, storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                           metadata=None) -> np.ndarray:
        """torch._utils._rebuild_tensor_v2, as a bounds-checked strided view of the storage, copied."""
        data = getattr(storage, "data", None)
        ok = (isinstance(storage, _Storage) and isinstance(data, np.ndarray) and data.dtype == np.float32
              and data.ndim == 1 and data.flags.c_contiguous and type(storage_offset) is int and storage_offset >= 0
              and isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)
              and len(size) <= 8 and all(type(n) is int and n >= 0 for n in size + stride) and not backward_hooks
              and not metadata)
        if not ok:
            raise CheckpointError(f"{self.path}: malformed tensor record (offset {storage_offset!r:.40}, "
                                  f"size {size!r:.40}, stride {stride!r:.40})")
        if 0 in size:
            return np.zeros(size, dtype=np.float32)
        last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= data.size:
            raise CheckpointError(f"{self.path}: tensor of size {size} reads past the end of its storage ({data.size})")
        # a stride of 0 would make a huge tensor of one stored number: no tensor holds more elements than its
        # storage, and all of them together at most twice what the storages hold (nanoGPT's tied lm_head is one)
        numel = math.prod(size)
        self.built += numel
        if numel > data.size - storage_offset or self.built > 2 * self.stored:
            raise CheckpointError(f"{self.path}: tensor of size {size} and stride {stride} has more elements than "
                                  "its storage holds; not a checkpoint torch.save wrote")
        strides = tuple(s * data.itemsize for s in stride)
        return np.lib.stride_tricks.as_strided(data[storage_offset:], shape=size, strides=strides).copy()

    def _rebuild_parameter(self, data, requires_grad=False, backward_hooks=None) -> np.ndarray:
        """torch._utils._rebuild_parameter: an nn.Parameter is its tensor here."""
        if not isinstance(data, np.ndarray) or backward_hooks:
            raise CheckpointError(f"{self.path}: malformed parameter record")
        return data


def _scan(raw: bytes, path: Path):
    """Walk a pickle's opcodes without running any: refuse too many, and memo indices beyond them (a 12-byte
    pickle that PUTs at index 2**32 makes the unpickler allocate its memo that large)."""
    for n, (op, arg, _) in enumerate(pickletools.genops(io.BytesIO(raw))):  # a ValueError for a cut or garbled one
        if n > MAX_OPCODES:
            raise CheckpointError(f"{path}: the pickle has more than {MAX_OPCODES:,} opcodes; refused")
        if op.name in ("PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET") and arg > n:
            raise CheckpointError(f"{path}: the pickle uses memo index {arg} after {n} opcodes; refused as malformed")


def _check_size(obj, path: Path):
    """Refuse a result too large to walk: more than MAX_OBJECTS objects counted as a reader meets them (a shared
    tuple counts each time: a "billion laughs" of nested shared tuples is a few opcodes), or nested deeper than
    MAX_DEPTH."""
    todo, seen = [(obj, 0)], 0
    while todo:
        x, depth = todo.pop()
        seen += 1
        if seen > MAX_OBJECTS or depth > MAX_DEPTH:
            raise CheckpointError(f"{path}: the pickle holds more than {MAX_OBJECTS:,} objects or nests deeper than "
                                  f"{MAX_DEPTH}; not a nanoGPT file")
        if isinstance(x, dict):
            todo.extend((v, depth + 1) for kv in x.items() for v in kv)
        elif isinstance(x, (list, tuple, set, frozenset)):
            todo.extend((v, depth + 1) for v in x)


def _load_pickle(f, path: Path, zf: zipfile.ZipFile | None = None, prefix: str = "", allow_torch: bool = True):
    """Unpickle at most MAX_PICKLE_BYTES from f with the restricted unpickler, after _scan, then _check_size."""
    raw = f.read(MAX_PICKLE_BYTES + 1)
    if len(raw) > MAX_PICKLE_BYTES:
        raise CheckpointError(f"{path}: the pickle is larger than {MAX_PICKLE_BYTES >> 20} MB; not a nanoGPT file")
    _scan(raw, path)
    obj = _RestrictedUnpickler(io.BytesIO(raw), path, zf, prefix, allow_torch).load()
    _check_size(obj, path)
    return obj


def _plain(x):
    """A JSON-able copy: 0-d arrays (nanoGPT's best_val_loss is a tensor) and numpy scalars become Python numbers."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray) and x.size == 1:
        return x.item()
    if isinstance(x, np.generic):
        return x.item()
    return x


def _unpickle_checkpoint(path: Path) -> dict:
    """The object torch.save wrote into path, tensors as float32 numpy arrays."""
    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path} not found") from None
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a PyTorch zip checkpoint ({e}); it may be truncated, or saved by "
                              "torch < 1.6, which this reader does not support") from None
    with zf:
        pkls = sorted((n for n in zf.namelist() if n == "data.pkl" or n.endswith("/data.pkl")), key=len)
        if not pkls:
            raise CheckpointError(f"{path} is a zip but not a PyTorch checkpoint (no data.pkl inside)")
        prefix = pkls[0][: -len("data.pkl")]
        try:
            if f"{prefix}byteorder" in zf.namelist():
                with zf.open(f"{prefix}byteorder") as f:
                    if f.read(16).strip() != b"little":
                        raise CheckpointError(f"{path} was saved on a big-endian machine; this reader supports "
                                              "little-endian only")
            with zf.open(pkls[0]) as f:
                obj = _load_pickle(f, path, zf, prefix)
        except CheckpointError:
            raise
        except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, TypeError, KeyError, IndexError,
                AttributeError, OverflowError, MemoryError, RecursionError, zlib.error, NotImplementedError) as e:
            raise CheckpointError(f"{path}: data.pkl is not a valid checkpoint pickle ({type(e).__name__}: {e}); "
                                  "the file may be truncated or corrupt") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("model"), dict):
        raise CheckpointError(f"{path} holds no 'model' state_dict; it is not a nanoGPT checkpoint saved by train.py")
    return obj


def _require(ok: bool, why: str):
    """A check that holds under python -O too (an assert would vanish)."""
    if not ok:
        raise ValueError(why)


def _adam_state(optimizer, names: list[str], model: dict[str, np.ndarray], path: Path) -> dict[str, np.ndarray]:
    """torch AdamW's state_dict as optimizer_state()'s arrays; {} (and a warning) if it does not fit nanoGPT's groups."""
    # nanoGPT's configure_optimizers: group 0 the >=2-D parameters, group 1 the rest, each in named_parameters order
    groups = [[n for n in names if decays(model[n].shape)], [n for n in names if not decays(model[n].shape)]]
    try:
        state, param_groups = optimizer["state"], optimizer["param_groups"]
        if not state:
            return {}  # saved before the first step
        _require(len(param_groups) == len(groups), f"{len(param_groups)} parameter groups, nanoGPT has {len(groups)}")
        arrays = {}
        for g, (group, group_names) in enumerate(zip(param_groups, groups)):
            _require(len(group["params"]) == len(group_names), f"group {g} has {len(group['params'])} parameters")
            beta1, beta2 = group["betas"]
            steps = {float(_plain(state[i]["step"])) for i in group["params"]}
            _require(len(steps) == 1, f"group {g}'s parameters were stepped {sorted(steps)} times")
            step = steps.pop()
            for i, name in zip(group["params"], group_names):
                for k in ("exp_avg", "exp_avg_sq"):
                    a = state[i][k]
                    _require(isinstance(a, np.ndarray) and a.shape == model[name].shape,
                             f"{k} of {name} is not a tensor of shape {model[name].shape}")
                    arrays[f"optimizer.{name}.{k}"] = a.astype(np.float32)
            arrays[f"optimizer.group{g}.b1_t"] = np.array([float(beta1) ** step], dtype=np.float32)
            arrays[f"optimizer.group{g}.b2_t"] = np.array([float(beta2) ** step], dtype=np.float32)
        return arrays
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as e:
        warnings.warn(f"{path}: the optimizer state does not match nanoGPT's AdamW groups ({e}); "
                      "it is left out, so resuming starts AdamW's moments from zero")
        return {}


def read_nanogpt_checkpoint(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """Read a nanoGPT ckpt.pt into this project's format: float32 'model.*' and 'optimizer.*' arrays, and info.

    info holds model_args, iter_num, best_val_loss and config as nanoGPT saved them; no vocabulary (see
    load_any_checkpoint). Never imports torch and never calls anything the file names.
    """
    path = Path(path)
    obj = _unpickle_checkpoint(path)
    model = {}
    for k, v in obj["model"].items():
        if not isinstance(k, str) or not isinstance(v, np.ndarray):
            raise CheckpointError(f"{path}: model entry {k!r:.60} is not a tensor; not a nanoGPT checkpoint")
        k = k.removeprefix("_orig_mod.")  # torch.compile'd models save their weights under _orig_mod.
        if k.endswith(".attn.bias"):
            continue  # the causal mask buffer of nanoGPT before torch 2.0, not a weight
        model[k] = v
    if "transformer.wte.weight" not in model:
        raise CheckpointError(f"{path}: no transformer.wte.weight; not a nanoGPT GPT checkpoint")
    lm_head = model.pop("lm_head.weight", None)
    if lm_head is not None and not np.array_equal(lm_head, model["transformer.wte.weight"]):
        warnings.warn(f"{path}: lm_head.weight differs from transformer.wte.weight; nanoGPT ties them and so does this "
                      "model, which uses transformer.wte.weight for both")
    names = list(model)  # state_dict order is nanoGPT's named_parameters order
    arrays = {f"model.{k}": v for k, v in model.items()}
    if isinstance(obj.get("optimizer"), dict):
        arrays.update(_adam_state(obj["optimizer"], names, model, path))

    model_args = _plain(obj.get("model_args") or {})
    missing = [k for k in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", "bias") if k not in model_args]
    if missing:
        raise CheckpointError(f"{path}: model_args lacks {missing}; not a nanoGPT checkpoint saved by train.py")
    info = {
        "model_args": {k: model_args[k] for k in _MODEL_ARGS if k in model_args},
        "iter_num": _plain(obj.get("iter_num", 0)),
        "best_val_loss": _plain(obj.get("best_val_loss", 1e9)),
        "config": _plain(obj.get("config") or {}),
    }
    if "activation" not in info["model_args"] and isinstance(info["config"], dict) and "activation" in info["config"]:
        info["model_args"]["activation"] = info["config"]["activation"]  # where write_nanogpt_checkpoint keeps it
    return arrays, check_info(info, path, arrays)


def _normalize_meta(meta, path: Path) -> dict:
    """{vocab_size, itos (list), stoi} from nanoGPT's {int: char} itos or this project's list (schema.check_vocabulary)."""
    if isinstance(meta, dict) and meta.get("tokenizer", "char") != "char":
        raise CheckpointError(f"{path} is not a character vocabulary like nanoGPT's meta.pkl "
                              f"(tokenizer {str(meta.get('tokenizer'))[:40]!r})")
    itos = check_vocabulary(meta, path)["itos"]
    return {"vocab_size": len(itos), "itos": itos, "stoi": {c: i for i, c in enumerate(itos)}}


def read_meta_pkl(path: str | Path) -> dict:
    """Read nanoGPT's meta.pkl (a pickle of plain dicts, no globals allowed): {vocab_size, itos (list), stoi}."""
    path = Path(path)
    try:
        if not path.is_file():
            raise CheckpointError(f"{path} {not_a_file(path)}")
        with open(path, "rb") as f:
            meta = _load_pickle(f, path, allow_torch=False)
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            OverflowError, MemoryError, RecursionError) as e:
        raise CheckpointError(f"{path} is not a valid meta.pkl ({type(e).__name__}: {e}); it may be truncated"
                              ) from None
    return _normalize_meta(meta, path)


def read_vocabulary(path: str | Path) -> dict:
    """A meta.pkl (nanoGPT) or meta.json (this project's prepare) as {vocab_size, itos, stoi}."""
    path = Path(path)
    if path.suffix != ".json":
        return read_meta_pkl(path)
    return _normalize_meta(read_json(path), path)


def find_vocabulary(out_dir: str | Path, info: dict, meta_path: str | Path | None = None) -> dict:
    """The vocabulary of a nanoGPT checkpoint: meta_path, else data/<config['dataset']>/meta.pkl as nanoGPT's sample.py
    looks for it (relative to the working directory), or meta.json there, or meta.pkl beside the checkpoint."""
    if meta_path is not None:
        tried = [Path(meta_path)]
    else:
        dataset = info.get("config", {}).get("dataset")
        tried = [Path("data") / dataset / n for n in ("meta.pkl", "meta.json")] if dataset else []
        tried.append(Path(out_dir) / META_NAME)
    for path in tried:
        if path.is_file():
            meta = read_vocabulary(path)
            vocab_size = info["model_args"]["vocab_size"]
            if meta["vocab_size"] != vocab_size:
                raise CheckpointError(f"{path} has {meta['vocab_size']} characters but the model in {out_dir} has "
                                      f"vocab_size={vocab_size}; give the vocabulary it was trained with "
                                      "(--meta=PATH). GPT-2 BPE checkpoints are not supported")
            return meta
    raise CheckpointError(f"no vocabulary for the checkpoint in {out_dir}: tried {', '.join(map(str, tried))}; "
                          "give the dataset's meta.pkl with --meta=PATH (character-level vocabularies only)")


def load_any_checkpoint(out_dir: str | Path, meta_path: str | Path | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """out_dir/ckpt.safetensors, else a nanoGPT out_dir/ckpt.pt with its vocabulary in info['meta']."""
    out_dir = Path(out_dir)
    if (out_dir / CKPT_NAME).is_file():
        arrays, info = load_checkpoint(out_dir)
        if meta_path is not None:
            info["meta"] = read_vocabulary(meta_path)
            if info["meta"]["vocab_size"] != info["model_args"]["vocab_size"]:
                raise CheckpointError(f"{meta_path} has {info['meta']['vocab_size']} characters but the model in "
                                      f"{out_dir} has vocab_size={info['model_args']['vocab_size']}; give the "
                                      "vocabulary it was trained with (--meta=PATH), or leave --meta out")
        return arrays, info
    if (out_dir / PT_NAME).is_file():
        arrays, info = read_nanogpt_checkpoint(out_dir / PT_NAME)
        info["meta"] = find_vocabulary(out_dir, info, meta_path)
        return arrays, info
    raise CheckpointError(f"no checkpoint in {out_dir}: neither {out_dir / CKPT_NAME} nor {out_dir / PT_NAME} exists; "
                          f"train one first: python train.py config/train_shakespeare_char.py --out_dir={out_dir}")


def _adam_steps(b_t: float, beta: float, fallback: int) -> int:
    """How many steps made beta**steps == b_t; fallback (iter_num) once b_t has underflowed in float32."""
    if b_t >= 1.0:
        return 0
    return round(math.log(b_t) / math.log(beta)) if b_t > 1e-30 else fallback


def write_nanogpt_checkpoint(path: str | Path, arrays: dict[str, np.ndarray], info: dict):
    """Write arrays and info as nanoGPT's train.py saves ckpt.pt, for nanoGPT's sample.py and train.py. Needs torch."""
    try:
        import torch
    except ImportError:
        raise ImportError("converting to ckpt.pt needs torch: pip install torch==2.13.0") from None
    path = Path(path)
    check_finite(arrays, path)
    model = OrderedDict((k[len("model."):], torch.from_numpy(np.array(v, dtype=np.float32)))
                        for k, v in arrays.items() if k.startswith("model."))
    if "transformer.wte.weight" not in model:
        raise CheckpointError(f"no model.transformer.wte.weight among the arrays; nothing to write to {path}")
    model["lm_head.weight"] = model["transformer.wte.weight"]  # tied: one storage under both names, as nanoGPT saves
    config = dict(info.get("config") or {})
    activation = info["model_args"].get("activation", "gelu")
    if activation != "gelu":  # kept beside the training config, which nanoGPT ignores, for the way back
        config["activation"] = activation
        print(f"note: this model computes GPT-2's tanh GELU ({activation}); nanoGPT's GPT computes the exact GELU, so "
              "its logits there differ slightly from ours", file=sys.stderr)
    checkpoint = {
        "model": model,
        "optimizer": None,
        "model_args": {k: info["model_args"][k] for k in NANOGPT_MODEL_ARGS if k in info["model_args"]},
        "iter_num": int(info.get("iter_num", 0)),
        "best_val_loss": float(info.get("best_val_loss", 1e9)),
        "config": config,
    }
    names = [k for k in model if k != "lm_head.weight"]
    if all(f"optimizer.{n}.exp_avg" in arrays for n in names):
        # a real AdamW over stand-in parameters gives this torch version's param_groups; nanoGPT's two groups
        params = {n: torch.nn.Parameter(torch.empty(model[n].shape)) for n in names}
        groups = [[n for n in names if model[n].dim() >= 2], [n for n in names if model[n].dim() < 2]]
        betas = (config.get("beta1", 0.9), config.get("beta2", 0.95))
        weight_decay = config.get("weight_decay", 0.1)
        opt = torch.optim.AdamW([{"params": [params[n] for n in groups[0]], "weight_decay": weight_decay},
                                 {"params": [params[n] for n in groups[1]], "weight_decay": 0.0}],
                                lr=config.get("learning_rate", 6e-4), betas=betas)
        state_dict = opt.state_dict()
        order = groups[0] + groups[1]
        for g, group in enumerate(groups):
            b2_t = float(arrays.get(f"optimizer.group{g}.b2_t", np.ones(1))[0])
            step = _adam_steps(b2_t, betas[1], int(info.get("iter_num", 0)))
            if step == 0:
                continue
            for n in group:
                state_dict["state"][order.index(n)] = {
                    "step": torch.tensor(float(step)),
                    "exp_avg": torch.from_numpy(np.array(arrays[f"optimizer.{n}.exp_avg"], dtype=np.float32)),
                    "exp_avg_sq": torch.from_numpy(np.array(arrays[f"optimizer.{n}.exp_avg_sq"], dtype=np.float32)),
                }
        checkpoint["optimizer"] = state_dict
    with atomic_write(path) as f:  # a file object: the zip's folder is named "archive", as for any torch.save to one
        torch.save(checkpoint, f)


def write_meta_pkl(path: str | Path, meta: dict):
    """Write a vocabulary as nanoGPT's prepare.py does: a pickle of {vocab_size, itos {int: char}, stoi {char: int}}."""
    itos = _normalize_meta(meta, Path(path))["itos"]
    meta = {"vocab_size": len(itos), "itos": dict(enumerate(itos)), "stoi": {c: i for i, c in enumerate(itos)}}
    with atomic_write(path) as f:
        pickle.dump(meta, f)
