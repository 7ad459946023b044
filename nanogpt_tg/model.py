"""The GPT language model: a line-for-line tinygrad port of nanoGPT's model.py, with an optional KV cache.

References: OpenAI's GPT-2 (tensorflow) and HuggingFace's transformers (pytorch), by way of nanoGPT. The layers
tuned for tinygrad's kernels and the materialization hints (stored, stored_grad) are in layers.py.
"""
import math
from dataclasses import dataclass

import numpy as np
from tinygrad import Tensor, dtypes
from tinygrad.nn.state import get_parameters, get_state_dict

from .compat.init import nanogpt_init
from .compat.torch_rng import TorchGenerator
from .layers import Embedding, Linear, gelu_linear, scores, softmax, split, stored, stored_grad, weighted

A100_BF16_FLOPS = 312e12  # nanoGPT's unit of MFU: an A100's bfloat16 peak


@dataclass(frozen=True)
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50304  # GPT-2's 50257 padded up to a multiple of 64 for efficiency
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # True: bias in Linears and LayerNorms, like GPT-2; False is a bit better and faster
    activation: str = "gelu"  # "gelu": exact (erf), nanoGPT's nn.GELU(); "gelu_new": tanh, as OpenAI's GPT-2


def decays(shape: tuple[int, ...]) -> bool:
    """nanoGPT's configure_optimizers: weight decay on tensors of 2 or more dims (matmul weights, embeddings), none on
    biases and LayerNorm weights."""
    return len(shape) >= 2


class LayerNorm:
    """LayerNorm with an optional bias (tinygrad's nn.LayerNorm has no bias=False)."""

    def __init__(self, ndim: int, bias: bool):
        self.weight = Tensor.ones(ndim)
        self.bias = Tensor.zeros(ndim) if bias else None

    def __call__(self, x: Tensor) -> Tensor:
        x = x.float().layernorm(eps=1e-5).cast(x.dtype) * self.weight  # statistics in float32 under mixed precision
        return stored(x + self.bias if self.bias is not None else x)  # read by three matmuls, or by q, k, v


class CausalSelfAttention:
    def __init__(self, config: GPTConfig):
        assert config.n_embd % config.n_head == 0, f"n_embd={config.n_embd} is not divisible by n_head={config.n_head}"
        # key, query, value projections for all heads, in one batch
        self.c_attn = Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        # output projection
        self.c_proj = Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.n_head, self.n_embd, self.dropout = config.n_head, config.n_embd, config.dropout

    def __call__(self, x: Tensor, cache=None, last_only: bool = False) -> Tensor:
        """x (B, T, C). cache: a kvcache.LayerCache that takes this call's keys and values and returns all it holds.
        last_only: the output of the last position only (B, 1, C); keys and values still come from every position."""
        B, T, C = x.shape  # batch size, sequence length, embedding dimensionality (n_embd)
        # calculate query, key, values for all heads in batch and move head forward to be the batch dim
        q, k, v = split(self.c_attn(x), self.n_embd)
        q, k, v = [t.reshape(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v)]  # (B, nh, T, hs)
        if cache is not None:
            k, v, mask = cache.update(k, v)  # (B, nh, block_size, hs) each, and the positions each query sees
        else:
            # on x's device(s), for data parallel; in a buffer, so that the kernels reading it load it as a vector
            # (computed inside each, the triangle made their loads conditional and the softmax's exp scalar code)
            mask = stored(Tensor.ones(T, T, dtype=dtypes.bool, device=x.device).tril())
        if last_only:
            q, mask, T = q[:, :, -1:], mask[..., -1:, :], 1
        # causal self-attention; (B, nh, T, hs) x (B, nh, hs, T) -> (B, nh, T, T)
        # (the full sequence's products through layers.scores and layers.weighted, which read k and v transposed)
        att = (q @ k.transpose(-2, -1) if cache is not None else scores(q, k)) * (1.0 / math.sqrt(k.shape[-1]))
        att = softmax(mask.where(att, float("-inf")).float()).cast(q.dtype)  # the softmax in float32
        att = att.dropout(self.dropout)
        y = att @ v if cache is not None else weighted(att, v)  # (B, nh, T, T) x (B, nh, T, hs) -> (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)  # re-assemble all head outputs side by side
        # output projection
        return stored_grad(self.c_proj(y).dropout(self.dropout))  # a residual branch: its gradient summed once


class MLP:
    def __init__(self, config: GPTConfig):
        self.c_fc = Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.approximate = {"gelu": "none", "gelu_new": "tanh"}[config.activation]

    def __call__(self, x: Tensor) -> Tensor:
        x = gelu_linear(self.c_proj, self.c_fc(x), self.approximate)  # c_proj(gelu(c_fc(x))), GELU recomputed in the backward
        return stored_grad(x.dropout(self.dropout))  # a residual branch: its gradient summed once


class Block:
    def __init__(self, config: GPTConfig):
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def __call__(self, x: Tensor, cache=None, last_only: bool = False) -> Tensor:
        # the residual stream stored: otherwise every later kernel reading x recomputes the sums that make it
        y = self.attn(self.ln_1(x), cache, last_only)
        x = stored((x[:, -1:] if last_only else x) + y)
        return stored(x + self.mlp(self.ln_2(x)))


class GPT:
    def __init__(self, config: GPTConfig, seed: int = 1337, verbose: bool = True, generator: TorchGenerator | None = None):
        assert config.vocab_size is not None and config.block_size is not None
        self.config = config
        self.transformer = dict(
            wte=Embedding(config.vocab_size, config.n_embd),
            wpe=Embedding(config.block_size, config.n_embd),
            h=[Block(config) for _ in range(config.n_layer)],
            ln_f=LayerNorm(config.n_embd, bias=config.bias),
        )
        self.lm_head = Linear(config.n_embd, config.vocab_size, bias=False)
        # weight tying: https://paperswithcode.com/method/weight-tying
        self.lm_head.weight = self.transformer["wte"].weight
        # init all weights as nanoGPT does, from torch's generator (compat/init.py)
        weights = nanogpt_init(config, TorchGenerator(seed) if generator is None else generator)
        for name, p in self.state_dict().items():
            # biases zero, LayerNorm weights one; from numpy: lazily assigned random tensors gave every layer the same
            value = weights[name].reshape(p.shape) if name in weights else np.full(p.shape, float(not name.endswith("bias")), np.float32)
            p.replace(Tensor(value, device=p.device))
        Tensor.realize(*self.parameters())
        if verbose:
            print(f"number of parameters: {self.get_num_params() / 1e6:.2f}M")

    def state_dict(self) -> dict[str, Tensor]:
        """nanoGPT's parameter names, each tensor once: the tied lm_head.weight is left out (it is wte's)."""
        return {k: v for k, v in get_state_dict(self).items() if k != "lm_head.weight"}

    def parameters(self) -> list[Tensor]:
        return get_parameters(self.state_dict())

    def get_num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; the position embeddings are subtracted by default, as in nanoGPT."""
        n_params = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n_params -= self.transformer["wpe"].weight.numel()
        return n_params

    def flops_per_iter(self, fwdbwd_per_iter: int) -> float:
        """nanoGPT's estimate of the flops of an iteration; see PaLM paper Appendix B."""
        N = self.get_num_params()
        cfg = self.config
        L, H, Q, T = cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head, cfg.block_size
        flops_per_token = 6 * N + 12 * L * H * Q * T
        return flops_per_token * T * fwdbwd_per_iter

    def estimate_mfu(self, fwdbwd_per_iter: int, dt: float) -> float:
        """Model flops utilization in units of A100 bfloat16 peak FLOPS (312 TFLOPS), as nanoGPT reports it."""
        return self.flops_per_iter(fwdbwd_per_iter) / dt / A100_BF16_FLOPS

    def __call__(self, idx: Tensor, targets: Tensor | None = None, cache=None,
                 last_only: bool = False) -> tuple[Tensor, Tensor | None]:
        """idx, targets: (B, T) int32. Returns logits (B, T, vocab_size) and the mean cross-entropy loss (or None).

        cache: a kvcache.KVCache; idx then continues the tokens it holds, from position cache.start_pos.
        last_only: logits of the last position only (B, 1, vocab_size), as nanoGPT's inference."""
        B, T = idx.shape
        start_pos = 0 if cache is None else cache.start_pos
        assert T <= self.config.block_size, f"Cannot forward sequence of length {T}, block size is only {self.config.block_size}"
        tok_emb = self.transformer["wte"](idx)  # token embeddings of shape (B, T, n_embd)
        pos_emb = self.transformer["wpe"].weight.shrink(((start_pos, start_pos + T), None))  # positions (T, n_embd)
        x = stored_grad((tok_emb + pos_emb).dropout(self.config.dropout))  # its gradient read once by both embeddings
        for i, block in enumerate(self.transformer["h"]):
            x = block(x, None if cache is None else cache.layers[i], last_only and i == self.config.n_layer - 1)
        x = self.transformer["ln_f"](x)
        # logits for every position also at inference, unless last_only: the fixed-shape sampler reads any position
        logits = stored_grad(self.lm_head(x))  # the loss's gradient computed once, not in both lm_head matmuls
        loss = None
        if targets is not None:
            # the loss in float32 whatever the compute dtype, as under torch autocast
            loss = logits.float().reshape(-1, logits.shape[-1]).sparse_categorical_crossentropy(targets.reshape(-1))
        return logits, loss
