"""Sampling from a trained model: nanoGPT's sample.py and GPT.generate, with fixed shapes so nothing recompiles."""
from pathlib import Path

import numpy as np
from tinygrad import Tensor, TinyJit, dtypes

from .bigram import Bigram, build_model
from .checkpoint import load_checkpoint, load_weights
from .config import SampleConfig
from .device import set_device
from .model import GPT
from .tokenizer import Tokenizer, from_meta


def load_model(out_dir: str | Path) -> tuple[GPT | Bigram, Tokenizer, dict]:
    """The model and tokenizer saved in out_dir/ckpt.safetensors, and the checkpoint's info."""
    arrays, info = load_checkpoint(out_dir)
    model = build_model(info["config"].get("model", "gpt"), {**info["model_args"], "dropout": 0.0})
    load_weights(model, arrays, Path(out_dir) / "ckpt.safetensors")
    return model, from_meta(info["meta"]), info


def sample_logits(logits: np.ndarray, temperature: float, top_k: int | None, rng: np.random.Generator) -> np.ndarray:
    """Pick the next token of each row of logits (B, V): nanoGPT's temperature and top-k; temperature 0 is greedy."""
    if temperature == 0.0:
        return logits.argmax(-1)
    logits = logits.astype(np.float64) / temperature
    if top_k is not None:
        # optionally crop the logits to only the top k options
        k = min(top_k, logits.shape[-1])
        v = np.sort(logits, axis=-1)[:, -k][:, None]
        logits = np.where(logits < v, -np.inf, logits)
    # apply softmax to convert logits to (normalized) probabilities
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return np.array([rng.choice(len(p), p=p) for p in probs])


class Generator:
    """Generates from a model with one fixed-shape jitted forward pass of (rows, block_size) tokens per new token.

    The window holds the last block_size tokens (nanoGPT's crop), left-aligned and padded on the right while it is
    shorter; causal attention keeps the padding from touching the position read.
    """

    def __init__(self, model: GPT, rows: int):
        self.model, self.rows, self.block_size = model, rows, model.config.block_size
        self.forward = TinyJit(lambda idx: model(idx)[0].realize())

    def generate(self, idx: np.ndarray, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 rng: np.random.Generator | None = None) -> np.ndarray:
        """idx (rows, t) int: complete each row with max_new_tokens tokens. Returns (rows, t + max_new_tokens)."""
        rng = rng if rng is not None else np.random.default_rng()
        assert idx.shape[0] == self.rows and idx.shape[1] >= 1, f"expected ({self.rows}, t>=1) tokens, got {idx.shape}"
        out = np.asarray(idx, dtype=np.int32)
        for _ in range(max_new_tokens):
            window = out[:, -self.block_size :]  # if the sequence context is growing too long we must crop it
            t = window.shape[1]
            padded = np.zeros((self.rows, self.block_size), dtype=np.int32)
            padded[:, :t] = window
            logits = self.forward(Tensor(padded, dtype=dtypes.int32)).numpy()[:, t - 1, :]
            out = np.concatenate([out, sample_logits(logits, temperature, top_k, rng)[:, None].astype(np.int32)], 1)
        return out


def read_start(start: str) -> str:
    """The prompt: the text itself, or the contents of the file after 'FILE:'."""
    if start.startswith("FILE:"):
        path = Path(start[5:])
        if not path.is_file():
            raise FileNotFoundError(f"--start=FILE:{path}: {path} not found; give an existing UTF-8 text file")
        return path.read_text(encoding="utf-8")
    return start


def sample(cfg: SampleConfig) -> list[str]:
    """nanoGPT's sample.py: print num_samples completions of the start text; returns them."""
    if cfg.init_from != "resume":
        raise ValueError(f"--init_from={cfg.init_from} is not supported; sample from a checkpoint with --out_dir=DIR")
    if cfg.max_new_tokens < 1:
        raise ValueError(f"--max_new_tokens={cfg.max_new_tokens}: must be at least 1")
    if cfg.num_samples < 1:
        raise ValueError(f"--num_samples={cfg.num_samples}: must be at least 1")
    if cfg.temperature < 0:
        raise ValueError(f"--temperature={cfg.temperature}: must be >= 0 (0 is greedy)")
    if cfg.top_k < 1:
        raise ValueError(f"--top_k={cfg.top_k}: must be at least 1 (1 is greedy)")
    set_device(cfg.device)
    model, tokenizer, _ = load_model(cfg.out_dir)
    start_ids = tokenizer.encode(read_start(cfg.start))
    if not start_ids:
        raise ValueError("--start is empty; give at least one character, e.g. --start=\"\\n\"")
    Tensor.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    # all samples at once, one row each
    gen = Generator(model, cfg.num_samples)
    x = np.array([start_ids] * cfg.num_samples, dtype=np.int32)
    y = gen.generate(x, cfg.max_new_tokens, temperature=cfg.temperature, top_k=cfg.top_k, rng=rng)
    texts = [tokenizer.decode(row) for row in y]
    for text in texts:
        print(text)
        print("---------------")
    return texts
