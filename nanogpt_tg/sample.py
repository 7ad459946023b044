"""Sampling from a trained model: nanoGPT's sample.py and GPT.generate, with fixed shapes so nothing recompiles."""
from pathlib import Path

import numpy as np
from tinygrad import Tensor, TinyJit, dtypes

from . import gpt2
from .bigram import Bigram, build_model
from .checkpoint import load_weights
from .config import SampleConfig, check_sample_config
from .device import set_device
from .data import read_text
from .kvcache import KVCache
from .model import GPT
from .compat.nanogpt_ckpt import load_any_checkpoint
from .progress import progress
from .tokenizer import Tokenizer, from_meta


def load_model(out_dir: str | Path, meta_path: str | Path | None = None) -> tuple[GPT | Bigram, Tokenizer, dict]:
    """The model and tokenizer saved in out_dir (our ckpt.safetensors, or nanoGPT's ckpt.pt), and the checkpoint's info."""
    arrays, info = load_any_checkpoint(out_dir, meta_path)
    model = build_model(info["config"].get("model", "gpt"), {**info["model_args"], "dropout": 0.0})
    load_weights(model, arrays, out_dir)
    return model, from_meta(info["meta"]), info


def sample_logits(logits: np.ndarray, temperature: float, top_k: int | None, rng) -> np.ndarray:
    """Pick the next token of each row of logits (B, V): nanoGPT's temperature and top-k; temperature 0 is greedy.

    rng: one np.random.Generator for all rows, or a list with one per row."""
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
    rngs = rng if isinstance(rng, (list, tuple)) else [rng] * len(probs)
    return np.array([r.choice(len(p), p=p) for r, p in zip(rngs, probs)])


def apply_repetition_penalty(logits: np.ndarray, seen: np.ndarray, penalty: float) -> np.ndarray:
    """CTRL's repetition penalty (Keskar et al. 2019, as in HF transformers): in each row of logits (B, V), the
    tokens of that row of seen (B, t) get their logit divided by penalty if positive, multiplied if not."""
    logits = logits.astype(np.float64)  # a copy
    for row, ids in zip(logits, seen):
        ids = np.unique(ids)
        row[ids] = np.where(row[ids] > 0, row[ids] / penalty, row[ids] * penalty)
    return logits


class Generator:
    """Generates from a model with fixed-shape jitted steps, so nothing recompiles after the first tokens.

    A GPT keeps a KV cache (kvcache.py): one single-token step per new token while the text fits in block_size, the
    whole window past it. Other models (the bigram) run one forward pass of (rows, block_size) tokens per new token.
    Either way the model sees the last block_size tokens (nanoGPT's crop), left-aligned and padded on the right while
    shorter; causal attention keeps the padding from touching the position read.
    """

    def __init__(self, model: GPT, rows: int):
        self.model, self.rows, self.block_size = model, rows, model.config.block_size
        self.cache = KVCache(model, rows) if isinstance(model, GPT) else None
        self.forward = TinyJit(lambda idx: model(idx)[0].realize()) if self.cache is None else None

    def next_logits(self, out: np.ndarray) -> np.ndarray:
        """out (rows, t) tokens: logits (rows, V) of the next token, from the last block_size tokens."""
        if self.cache is not None:
            return self.cache.next_logits(out)
        window = out[:, -self.block_size :]  # if the sequence context is growing too long we must crop it
        padded = np.zeros((self.rows, self.block_size), dtype=np.int32)
        padded[:, : window.shape[1]] = window
        return self.forward(Tensor(padded, dtype=dtypes.int32)).numpy()[:, window.shape[1] - 1, :]

    def generate(self, idx: np.ndarray, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 rng=None, repetition_penalty: float = 1.0, callback=None) -> np.ndarray:
        """idx (rows, t) int: complete each row with max_new_tokens tokens. Returns (rows, t + max_new_tokens).

        callback(out), if given, sees the tokens after each step; when it returns True generation ends there."""
        rng = rng if rng is not None else np.random.default_rng()
        assert idx.shape[0] == self.rows and idx.shape[1] >= 1, f"expected ({self.rows}, t>=1) tokens, got {idx.shape}"
        out = np.asarray(idx, dtype=np.int32)
        if self.cache is not None:
            self.cache.refresh()  # the model's weights as they are now
        for _ in progress(range(max_new_tokens), "sampling", unit="tokens"):  # a counter on a terminal only
            logits = self.next_logits(out)
            if repetition_penalty != 1.0:
                logits = apply_repetition_penalty(logits, out, repetition_penalty)
            out = np.concatenate([out, sample_logits(logits, temperature, top_k, rng)[:, None].astype(np.int32)], 1)
            if callback is not None and callback(out):
                break
        return out


def read_start(start: str) -> str:
    """The prompt: the text itself, or the contents of the file after 'FILE:'."""
    return read_text(start[5:], "--start=FILE:") if start.startswith("FILE:") else start


def sample(cfg: SampleConfig) -> list[str]:
    """nanoGPT's sample.py: print num_samples completions of the start text; returns them."""
    check_sample_config(cfg)
    set_device(cfg.device)
    if cfg.init_from == "resume":
        model, tokenizer, _ = load_model(cfg.out_dir, cfg.meta or None)
    else:  # OpenAI's GPT-2, by size (gpt2, ..., gpt2-xl) or a Hugging Face directory, with its own tokenizer
        model, model_dir = gpt2.from_pretrained(cfg.init_from, dict(dropout=0.0))
        tokenizer = gpt2.load_tokenizer(model_dir)
    start = read_start(cfg.start)
    start_ids = tokenizer.encode(start)
    if not start_ids:
        raise ValueError("--start is empty; give at least one character, e.g. --start=\"\\n\"")
    Tensor.manual_seed(cfg.seed)
    # one random stream per sample, so a seed gives the same texts with or without --stream
    rngs = [np.random.default_rng([cfg.seed, i]) for i in range(cfg.num_samples)]
    options = dict(temperature=cfg.temperature, top_k=cfg.top_k, repetition_penalty=cfg.repetition_penalty)

    def completion(row: np.ndarray) -> tuple[str, bool]:
        """The text a row generated after the prompt, cut before the stop string, and whether that came."""
        text = tokenizer.decode(row[len(start_ids) :])
        k = text.find(cfg.stop) if cfg.stop else -1
        return (text[:k], True) if k >= 0 else (text, False)

    texts = []
    if cfg.stream:  # one sample at a time, printed token by token
        gen = Generator(model, 1)
        for rng in rngs:
            print(start, end="", flush=True)
            shown = 0

            def show(out: np.ndarray) -> bool:
                nonlocal shown
                text, stopped = completion(out[0])
                ready = text if stopped else stream_ready(text, cfg.stop)
                print(ready[shown:], end="", flush=True)
                shown = max(shown, len(ready))
                return stopped

            y = gen.generate(np.array([start_ids], dtype=np.int32), cfg.max_new_tokens, rng=[rng], callback=show,
                             **options)
            text = completion(y[0])[0]
            print(text[shown:])
            print("---------------")
            texts.append(start + text)
        return texts
    # all samples at once, one row each
    gen = Generator(model, cfg.num_samples)
    x = np.array([start_ids] * cfg.num_samples, dtype=np.int32)
    all_stopped = (lambda out: all(completion(row)[1] for row in out)) if cfg.stop else None
    y = gen.generate(x, cfg.max_new_tokens, rng=rngs, callback=all_stopped, **options)
    texts = [start + completion(row)[0] for row in y]
    for text in texts:
        print(text)
        print("---------------")
    return texts


def stream_ready(text: str, stop: str) -> str:
    """The part of a growing completion that is safe to print: not a character still cut between tokens (U+FFFD at
    the end), nor an end that may turn out to be the start of the stop string."""
    text = text.rstrip("\ufffd")
    for k in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:k]):
            return text[:-k]
    return text
