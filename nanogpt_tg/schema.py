"""The metadata a checkpoint or dataset carries (model_args, iteration, config, vocabulary), checked in one place.

Every loader hands what it read here before using it, so a wrong type, a value out of range or a size that does
not fit the file's real weights ends in a CheckpointError that names the file and the field, before any allocation.
"""
import json
import math
from dataclasses import fields
from pathlib import Path
from typing import Any

from .fsio import not_a_file
from .model import GPTConfig

MAX_JSON_BYTES = 256 << 20  # a GPT-2 BPE meta.json is ~2 MB; more is not metadata
# bounds on model_args: far above any model this package trains, far below what would exhaust memory by itself
MODEL_ARGS = {"n_layer": (int, 1, 1024), "n_head": (int, 1, 4096), "n_embd": (int, 1, 1 << 16),
              "block_size": (int, 1, 1 << 17), "vocab_size": (int, 1, 1 << 20), "dropout": (float, 0.0, 1.0),
              "bias": (bool, None, None), "activation": (str, None, None)}
ACTIVATIONS = ("gelu", "gelu_new")


class CheckpointError(ValueError):
    """A checkpoint, vocabulary or dataset file that cannot be used; the message names the file and the problem."""


def _fail(path, field: str, why: str):
    raise CheckpointError(f"{path}: {field} {why}")


def check_value(value: Any, kind: type, lo=None, hi=None, *, path="", field="") -> Any:
    """value if it is a kind (an int is a float too, a bool is not a number) within [lo, hi]; else a CheckpointError."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        _fail(path, field, f"is {type(value).__name__} {str(value)[:40]!r}, expected {kind.__name__}")
    if kind is float and not math.isfinite(value):
        _fail(path, field, f"is {value}, expected a finite number")
    if lo is not None and not lo <= value <= hi:
        _fail(path, field, f"is {value}, expected {lo} to {hi}")
    return value


def read_json(path: str | Path) -> Any:
    """A JSON file's value; a CheckpointError naming the file for one that is missing, too large, or not JSON."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} {not_a_file(path)}")
    if path.stat().st_size > MAX_JSON_BYTES:
        raise CheckpointError(f"{path} is {path.stat().st_size:,} bytes, too large for a metadata file")
    return parse_json(path.read_bytes(), path)


def parse_json(raw: bytes | str, path) -> Any:
    """json.loads, with every way it can fail (bad syntax, bad UTF-8, nesting too deep) a CheckpointError."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        why = "nested too deeply" if isinstance(e, RecursionError) else str(e)[:120]
        raise CheckpointError(f"{path} is not valid JSON metadata ({why}); it may be truncated or corrupt") from None


def check_model_args(model_args: Any, path, arrays: dict | None = None, model: str = "gpt") -> dict:
    """model_args with every field typed and in range, and, given the weights (model.* arrays), matching their shapes.

    Checked before the model is built: a block_size or n_layer that the weights do not have would allocate first."""
    if not isinstance(model_args, dict):
        _fail(path, "model_args", f"is {type(model_args).__name__}, expected an object")
    known = {f.name for f in fields(GPTConfig)}
    for k, v in model_args.items():
        if k not in known or k not in MODEL_ARGS:
            _fail(path, f"model_args.{k}", "is not a model setting this version knows")
        kind, lo, hi = MODEL_ARGS[k]
        model_args[k] = check_value(v, kind, lo, hi, path=path, field=f"model_args.{k}")
    # a bigram is a vocab_size x vocab_size table; block_size is its sampler's window
    required = ("block_size", "vocab_size") + (() if model == "bigram" else ("n_layer", "n_head", "n_embd"))
    for k in required:
        if k not in model_args:
            _fail(path, f"model_args.{k}", "is missing")
    if model != "bigram" and model_args["n_embd"] % model_args["n_head"]:
        _fail(path, "model_args.n_embd", f"{model_args['n_embd']} is not divisible by n_head {model_args['n_head']}")
    if model_args.get("activation", "gelu") not in ACTIVATIONS:
        _fail(path, "model_args.activation", f"is {model_args['activation']!r}, expected one of {ACTIVATIONS}")
    if model_args.get("dropout", 0.0) >= 1.0:
        _fail(path, "model_args.dropout", f"is {model_args['dropout']}, expected below 1")
    if arrays is not None:
        _check_shapes(model_args, arrays, path, model)
    return model_args


def _check_shapes(model_args: dict, arrays: dict, path, model: str):
    """The sizes model_args gives against the shapes of the weights in the file."""
    V, C = model_args["vocab_size"], model_args.get("n_embd")
    expected = {"model.token_embedding_table.weight": (V, V)} if model == "bigram" else {
        "model.transformer.wte.weight": (V, C), "model.transformer.wpe.weight": (model_args["block_size"], C)}
    for name, shape in expected.items():
        if name not in arrays:
            _fail(path, name, "is missing")
        if tuple(arrays[name].shape) != shape:
            _fail(path, "model_args", f"give {name} the shape {shape}, but the file holds {tuple(arrays[name].shape)}")
    if model != "bigram":
        layers = {k.split(".")[3] for k in arrays if k.startswith("model.transformer.h.")}
        if layers != {str(i) for i in range(model_args["n_layer"])}:
            _fail(path, "model_args.n_layer", f"is {model_args['n_layer']}, but the file holds {len(layers)} layers")


# the arrays a checkpoint holds besides weights and moments: (dtype kind, shape or None for any 1-D length)
EXTRA_ARRAYS = {"rng.batches": ("u", (628,)), "rng.state": ("u", None), "amp.scale": ("f", (1,)),
                "amp.good_steps": ("i", (1,))}


def check_arrays(arrays: dict, path):
    """Weights and AdamW moments are floats; the random streams' and loss scale's arrays have their saved shapes."""
    for name, a in arrays.items():
        if name.startswith(("model.", "optimizer.")) and a.dtype.kind != "f":
            _fail(path, name, f"has dtype {a.dtype}, expected a float type")
        if name in EXTRA_ARRAYS:
            kind, shape = EXTRA_ARRAYS[name]
            fits = a.shape == shape if shape else (a.ndim == 1 and 2 <= a.size <= 64)
            if a.dtype.kind != kind or not fits:
                _fail(path, name, f"has dtype {a.dtype} and shape {a.shape}, not what train.py saves")


def check_info(info: Any, path, arrays: dict | None = None) -> dict:
    """A checkpoint's info: model_args (checked against arrays), iter_num, best_val_loss, config, and meta if any."""
    if not isinstance(info, dict):
        _fail(path, "metadata", f"is {type(info).__name__}, expected an object")
    config = info.get("config", {})
    if not isinstance(config, dict):
        _fail(path, "config", f"is {type(config).__name__}, expected an object")
    info["config"] = config
    model = config.get("model", "gpt")
    if model not in ("gpt", "bigram"):
        _fail(path, "config.model", f"is {str(model)[:40]!r}, expected 'gpt' or 'bigram'")
    for k, kind in {"dataset": str, "beta1": float, "beta2": float, "weight_decay": float, "learning_rate": float}.items():
        if k in config:
            config[k] = check_value(config[k], kind, path=path, field=f"config.{k}")
    if "model_args" not in info:
        _fail(path, "model_args", "is missing")
    check_model_args(info["model_args"], path, arrays, model)
    if arrays is not None:
        check_arrays(arrays, path)
    info["iter_num"] = check_value(info.get("iter_num", 0), int, 0, 1 << 62, path=path, field="iter_num")
    info["best_val_loss"] = check_value(info.get("best_val_loss", 1e9), float, path=path, field="best_val_loss")
    if info.get("meta") is not None:
        info["meta"] = check_vocabulary(info["meta"], path)
    return info


def check_vocabulary(meta: Any, path) -> dict:
    """A tokenizer's meta (tokenizer.meta(): char or bpe) with its fields typed; a char itos as a list."""
    if not isinstance(meta, dict):
        _fail(path, "vocabulary", f"is {type(meta).__name__}, expected an object")
    kind = meta.get("tokenizer", "char")
    if kind == "bpe":
        for k, t in {"merges": list, "byte_ids": list, "special_tokens": dict}.items():
            if not isinstance(meta.get(k), t):
                _fail(path, k, f"is {type(meta.get(k)).__name__}, expected {t.__name__}")
        if not all(isinstance(m, list) and len(m) == 3 and all(type(i) is int and 0 <= i < 1 << 20 for i in m)
                   for m in meta["merges"]):
            _fail(path, "merges", "is not a list of [a, b, new] token ids")
        if not all(type(i) is int and 0 <= i < 1 << 20 for i in meta["byte_ids"] + list(meta["special_tokens"].values())):
            _fail(path, "byte_ids", "or special_tokens hold something other than token ids")
        if not all(isinstance(s, str) for s in meta["special_tokens"]):
            _fail(path, "special_tokens", "has a name that is not a string")
        return meta
    if kind != "char":
        raise CheckpointError(f"{path}: unknown tokenizer {str(kind)[:40]!r}; this version reads 'char' and 'bpe': "
                              "prepare the dataset again")
    itos = meta.get("itos")
    if isinstance(itos, dict):  # nanoGPT's {int: char}; in JSON the ids are strings
        try:
            by_id = {int(i): c for i, c in itos.items() if type(i) in (int, str)}
        except ValueError:
            by_id = {}
        if sorted(by_id) != list(range(len(itos))):
            _fail(path, "itos", "keys are not the ids 0 to n-1")
        itos = [by_id[i] for i in range(len(itos))]
    if not isinstance(itos, list) or not all(isinstance(c, str) for c in itos):
        _fail(path, "itos", "is not a list of strings")
    if len(set(itos)) != len(itos):
        _fail(path, "itos", "repeats a character")
    if not itos:
        _fail(path, "itos", "is empty")
    vocab_size = meta.get("vocab_size", len(itos))
    if type(vocab_size) is not int or vocab_size != len(itos):
        _fail(path, "vocab_size", f"is {str(vocab_size)[:40]}, but itos has {len(itos)} characters")
    return {**meta, "vocab_size": len(itos), "itos": itos}
