"""Run configuration: nanoGPT's knobs as frozen dataclasses, set by a preset file then `--key=value` overrides.

Replaces nanoGPT's configurator.py, which exec()s the preset and the command line; here nothing is executed:
a preset is a Python file of `key = literal` lines, read with the ast module.
"""
import ast
import difflib
import math
import operator
import sys
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from .fsio import not_a_file

T = TypeVar("T")


class ConfigError(ValueError):
    """A user mistake in a preset or on the command line; the message says what to change."""


GPT2_MODELS = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")  # OpenAI's GPT-2 sizes, for --init_from (gpt2.py)


@dataclass(frozen=True)
class TrainConfig:
    # I/O
    out_dir: str = "out"
    eval_interval: int = 2000
    log_interval: int = 1
    eval_iters: int = 200
    eval_only: bool = False  # if True, script exits right after the first eval
    always_save_checkpoint: bool = True  # if True, always save a checkpoint after each eval
    init_from: str = "scratch"  # 'scratch', 'resume', or OpenAI's 'gpt2*' (or a Hugging Face GPT-2 directory)
    # wandb logging (accepted for nanoGPT compatibility; not used)
    wandb_log: bool = False
    wandb_project: str = "owt"
    wandb_run_name: str = "gpt2"
    # data
    dataset: str = "openwebtext"
    gradient_accumulation_steps: int = 5 * 8  # used to simulate larger batch sizes
    batch_size: int = 12  # if gradient_accumulation_steps > 1, this is the micro-batch size
    block_size: int = 1024
    # model
    model: str = "gpt"  # 'gpt', or 'bigram': a vocab_size x vocab_size table of next-token logits, the baseline
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0  # for pretraining 0 is good, for finetuning try 0.1+
    bias: bool = False  # do we use bias inside LayerNorm and Linear layers?
    # adamw optimizer
    learning_rate: float = 6e-4  # max learning rate
    max_iters: int = 600000  # total number of training iterations
    weight_decay: float = 1e-1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # clip gradients at this value, or disable if == 0.0
    # learning rate decay settings
    decay_lr: bool = True  # whether to decay the learning rate
    warmup_iters: int = 2000  # how many steps to warm up for
    lr_decay_iters: int = 600000  # should be ~= max_iters per Chinchilla
    min_lr: float = 6e-5  # minimum learning rate, should be ~= learning_rate/10 per Chinchilla
    # system
    backend: str = "nccl"  # torch DDP only; not used
    device: str = "auto"  # auto (what tinygrad finds), cpu, cuda, metal, cl, or any tinygrad device name
    # float32, bfloat16 or float16 compute (float32 master weights); auto: bfloat16 where supported, else float16,
    # and float32 on CPU, as nanoGPT
    dtype: str = "auto"
    compile: bool = True  # torch.compile only; tinygrad always compiles
    seed: int = 1337
    devices: str = ""  # data parallel: "" one device, N (N devices of --device's kind), or a list "CUDA:0,CUDA:1"


@dataclass(frozen=True)
class SampleConfig:
    init_from: str = "resume"  # either 'resume' (from an out_dir) or a gpt2 variant (e.g. 'gpt2-xl'), or a directory
    out_dir: str = "out"  # ignored if init_from is not 'resume'
    start: str = "\n"  # or "<|endoftext|>" etc. Can also specify a file, use as: "FILE:prompt.txt"
    num_samples: int = 10  # number of samples to draw
    max_new_tokens: int = 500  # number of tokens generated in each sample
    temperature: float = 0.8  # 1.0 = no change, < 1.0 = less random, > 1.0 = more random; 0 = greedy
    top_k: int = 200  # retain only the top_k most likely tokens, clamp others to have 0 probability
    seed: int = 1337
    device: str = "auto"
    meta: str = ""  # vocabulary of a nanoGPT ckpt.pt (meta.pkl or meta.json); default: data/<dataset>/meta.pkl
    dtype: str = "float32"  # torch autocast only; sampling here is float32
    compile: bool = False  # torch.compile only; tinygrad always compiles
    # sampling extras
    repetition_penalty: float = 1.0  # > 1 makes tokens already in the text less likely (CTRL's penalty); 1.0 = off
    stop: str = ""  # end a sample where the model writes this text, left out of the output; "" = never
    stream: bool = False  # print each sample as it is generated, one sample at a time


# sample.py computes in float32 whatever --dtype says; train.py's --dtype is real (nanogpt_tg/precision.py)
SAMPLE_NOTES = {"dtype": "note: --dtype is train.py's compute precision; sample.py computes in float32"}

# what nanoGPT's torch-only keys mean here, printed once when a run sets them
TORCH_ONLY_NOTES = {
    "compile": "note: --compile is torch.compile's switch; tinygrad always compiles its kernels, so it changes nothing here",
    "backend": "note: --backend selects torch DDP's backend; tinygrad reduces gradients itself (see --devices)",
    "wandb_log": "note: wandb logging is not supported; the log lines print to the terminal",
    "wandb_project": "note: wandb logging is not supported; --wandb_project is ignored",
    "wandb_run_name": "note: wandb logging is not supported; --wandb_run_name is ignored",
}

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Pow: operator.pow}
MAX_INT = 2**63  # every config value fits in an int64; past it an expression like 9**9**9 would run for hours
MAX_STR = 4096


def _literal(node: ast.AST) -> Any:
    """A constant, or arithmetic on numbers (nanoGPT presets write `gradient_accumulation_steps = 5 * 8`).

    Nothing unbounded is evaluated: strings and True/False only as literals, ints within +-2**63, floats finite
    (1e999 is inf), and a power is refused before it is computed if its result would be out of range."""
    if isinstance(node, ast.Constant) and type(node.value) in (bool, str):
        if isinstance(node.value, str) and len(node.value) > MAX_STR:
            raise ValueError(f"a string of {len(node.value):,} characters")
        return node.value
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return _bounded(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _number(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        a, b = _number(node.left), _number(node.right)
        if isinstance(node.op, ast.Pow) and abs(a) > 1 and abs(b) * math.log2(abs(a)) > 64:
            raise ValueError("a power out of range")
        try:
            return _bounded(_BINOPS[type(node.op)](a, b))
        except OverflowError:
            raise ValueError("a result out of range") from None
    raise ValueError("not a literal")


def _number(node: ast.AST) -> int | float:
    value = _literal(node)
    if type(value) not in (int, float):
        raise ValueError("arithmetic on something other than numbers")
    return value


def _bounded(value):
    """value, if it is a finite float or an int within +-MAX_INT (a complex power is refused too)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("not finite")
    if (isinstance(value, int) and abs(value) > MAX_INT) or type(value) not in (int, float):
        raise ValueError("out of range")
    return value


def read_preset(path: str | Path) -> dict[str, Any]:
    """Read a nanoGPT-style preset file (`key = value` lines) without executing it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} {not_a_file(path)}; presets live in config/, e.g. "
                          "config/train_shakespeare_char.py")
    if path.stat().st_size > 1 << 20:
        raise ConfigError(f"config file {path} is {path.stat().st_size:,} bytes; a preset is a few `key = value` lines")
    try:
        source = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        tree = ast.parse(source, filename=str(path))
    except (SyntaxError, ValueError) as e:  # a ValueError for a NUL byte
        raise ConfigError(f"{path}:{getattr(e, 'lineno', '?')}: not a valid preset ({getattr(e, 'msg', e)}); "
                          "write one `key = value` per line") from None
    except (RecursionError, MemoryError):
        raise ConfigError(f"{path}: not a valid preset (nested too deeply); write one `key = value` per line") from None
    values = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue  # a docstring
        ok = isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
        try:
            value = _literal(stmt.value) if ok else None
        except (ValueError, TypeError, SyntaxError, ZeroDivisionError, RecursionError, MemoryError):
            ok = False
        if not ok:
            line = ast.get_source_segment(source, stmt) or ""
            raise ConfigError(f"{path}:{stmt.lineno}: `{line.strip()}` is not a `key = literal` line; presets are read, "
                              "never executed, so write plain values (numbers, strings, True/False)")
        values[stmt.targets[0].id] = value
    return values


def _parse_bool(key: str, text: str) -> bool:
    low = text.strip().lower()
    if low in ("true", "1", "yes"):
        return True
    if low in ("false", "0", "no"):
        return False
    raise ConfigError(f"--{key}={text} is not a valid bool (use True or False)")


def _coerce(key: str, kind: type, value: Any) -> Any:
    """Convert a preset value or command-line text to the field's type, or raise a ConfigError naming the key."""
    if isinstance(value, str) and kind is not str:
        if kind is bool:
            return _parse_bool(key, value)
        try:
            value = _literal(ast.parse(value.strip(), mode="eval").body)
        except (ValueError, TypeError, SyntaxError, ZeroDivisionError, RecursionError, MemoryError):
            raise ConfigError(f"--{key}={value[:80]} is not a valid {kind.__name__} (a number, finite, within "
                              "+-2**63; arithmetic on numbers only)") from None
    if kind is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}={value!r} must be a string (in a preset, put it in quotes)")
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}={value!r} is not a valid bool (use True or False)")
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is int and isinstance(value, float) and value.is_integer() and abs(value) <= MAX_INT:
        return int(value)
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise ConfigError(f"{key}={value!r} is not a valid {kind.__name__}")


def _unknown_key(key: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else "; run with --help to list the keys"
    return ConfigError(f"unknown config key '{key}'{hint}")


def help_text(cls: type, prog: str, usage: str) -> str:
    """The --help page: usage, then every key with its default."""
    lines = [f"usage: {prog} {usage}", "", "keys (nanoGPT's names and defaults):"]
    for f in fields(cls):
        lines.append(f"  --{f.name}={f.default!r}")
    return "\n".join(lines)


def parse_args(cls: type[T], argv: list[str], defaults: dict[str, Any] | None = None) -> tuple[T, list[str]]:
    """Apply presets and --key=value overrides left to right over cls's defaults (and `defaults`).

    Returns the config and the notes to print for nanoGPT's torch-only keys that were set.
    """
    known = {f.name: f.type for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in (defaults or {}).items():
        values[key] = _coerce(key, known[key], value)
    notes = []
    for arg in argv:
        if arg.startswith("--"):
            key, eq, text = arg[2:].partition("=")
            if not eq:
                raise ConfigError(f"{arg}: write overrides as --key=value (e.g. --{key or 'batch_size'}=32)")
            items = [(key, text)]
        else:
            items = list(read_preset(arg).items())
            print(f"Overriding config with {arg}:")
            print(Path(arg).read_text(encoding="utf-8"))
        for key, value in items:
            if key not in known:
                raise _unknown_key(key, list(known))
            values[key] = _coerce(key, known[key], value)
            if arg.startswith("--"):
                print(f"Overriding: {key} = {values[key]!r}")
                table = TORCH_ONLY_NOTES | (SAMPLE_NOTES if cls is SampleConfig else {})
                if key in table:
                    notes.append(table[key])
    return cls(**values), list(dict.fromkeys(notes))


def _check_finite(cfg):
    """Refuse inf and nan in every float key (the parser refuses them; a config built in Python may hold them)."""
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"--{f.name}={value} must be a finite number")


def check_train_config(cfg: TrainConfig):
    """Refuse values that cannot train, before anything compiles; each ConfigError names the key."""
    _check_finite(cfg)
    for key in ["out_dir", "dataset"]:
        if not getattr(cfg, key).strip():
            raise ConfigError(f"--{key}= is empty; give a name, e.g. --{key}={TrainConfig.__dataclass_fields__[key].default}")
    positive = ["eval_interval", "log_interval", "eval_iters", "gradient_accumulation_steps", "batch_size",
                "block_size", "n_layer", "n_head", "n_embd", "learning_rate"]
    for key in positive:
        if getattr(cfg, key) <= 0:
            raise ConfigError(f"--{key}={getattr(cfg, key)} must be positive")
    for key in ["max_iters", "weight_decay", "grad_clip", "warmup_iters", "min_lr"]:
        if getattr(cfg, key) < 0:
            raise ConfigError(f"--{key}={getattr(cfg, key)} must be zero or more")
    if cfg.n_embd % cfg.n_head:
        raise ConfigError(f"--n_embd={cfg.n_embd} is not divisible by --n_head={cfg.n_head}; "
                          f"pick n_embd a multiple of n_head, e.g. --n_embd={cfg.n_embd // cfg.n_head * cfg.n_head or cfg.n_head}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ConfigError(f"--dropout={cfg.dropout} must be in [0, 1)")
    for key in ["beta1", "beta2"]:
        if not 0.0 <= getattr(cfg, key) < 1.0:
            raise ConfigError(f"--{key}={getattr(cfg, key)} must be in [0, 1)")
    if cfg.decay_lr and cfg.lr_decay_iters <= cfg.warmup_iters:
        raise ConfigError(f"--lr_decay_iters={cfg.lr_decay_iters} must be larger than --warmup_iters={cfg.warmup_iters}"
                          " (or set --decay_lr=False)")
    if cfg.model not in ("gpt", "bigram"):
        raise ConfigError(f"--model={cfg.model} is not a model here; use gpt or bigram")
    if cfg.dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise ConfigError(f"--dtype={cfg.dtype} is not known; use float32, bfloat16, float16 or auto")
    check_init_from(cfg.init_from, ("scratch", "resume"))
    if cfg.init_from not in ("scratch", "resume") and cfg.model != "gpt":
        raise ConfigError(f"--init_from={cfg.init_from} loads a GPT-2; it cannot be a --model={cfg.model}")


def check_init_from(init_from: str, own: tuple[str, ...]):
    """init_from is one of own, one of OpenAI's GPT-2 sizes, or an existing directory (a Hugging Face GPT-2)."""
    if init_from not in own + GPT2_MODELS and not Path(init_from).is_dir():
        raise ConfigError(f"--init_from={init_from} is not supported; use {', '.join(own + GPT2_MODELS)} or a directory "
                          "holding a Hugging Face GPT-2 (config.json, model.safetensors)")


def check_sample_config(cfg: SampleConfig):
    """Refuse sampling values that cannot work; each ConfigError names the key."""
    _check_finite(cfg)
    check_init_from(cfg.init_from, ("resume",))
    if cfg.init_from == "resume" and not cfg.out_dir.strip():
        raise ConfigError("--out_dir= is empty; give the directory of a trained model, e.g. --out_dir=out-shakespeare-char")
    for key in ["max_new_tokens", "num_samples", "top_k"]:
        if getattr(cfg, key) < 1:
            raise ConfigError(f"--{key}={getattr(cfg, key)} must be at least 1" + (" (1 is greedy)" if key == "top_k" else ""))
    if cfg.temperature < 0:
        raise ConfigError(f"--temperature={cfg.temperature} must be >= 0 (0 is greedy)")
    if cfg.repetition_penalty <= 0:
        raise ConfigError(f"--repetition_penalty={cfg.repetition_penalty} must be > 0 (1.0 is off, 1.2 is common)")


def cli(cls: type[T], prog: str, usage: str, argv: list[str] | None = None) -> T:
    """Parse sys.argv for a command: --help prints the keys; a ConfigError exits with its one-line message."""
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(help_text(cls, prog, usage))
        sys.exit(0)
    from .cli import run  # cli.py imports this module

    config, notes = run(parse_args, cls, argv)
    for note in notes:
        print(note)
    return config


__all__ = ["ConfigError", "TrainConfig", "SampleConfig", "read_preset", "parse_args", "cli", "asdict", "replace"]
