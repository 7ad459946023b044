"""The GPT language model: a line-for-line tinygrad port of nanoGPT's model.py.

References: OpenAI's GPT-2 (tensorflow) and HuggingFace's transformers (pytorch), by way of nanoGPT.
"""
import math
from dataclasses import dataclass

import numpy as np
from tinygrad import Tensor, dtypes
from tinygrad import nn
from tinygrad.helpers import prod
from tinygrad.uop.ops import UOp
from tinygrad.nn.state import get_parameters, get_state_dict

from .torch_rng import TorchGenerator


@dataclass(frozen=True)
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50304  # GPT-2's 50257 padded up to a multiple of 64 for efficiency
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # True: bias in Linears and LayerNorms, like GPT-2; False is a bit better and faster


MIN_ROWS_FOR_COPY = 32
# id(Linear) -> its weight, transposed and contiguous, kept by the sampler between tokens (kvcache.py)
transposed_weights: dict[int, Tensor] = {}


def _linear_grad(grad: UOp, call: UOp) -> tuple[UOp | None, ...]:
    """The backward of x @ weight_t + bias (weight_t = weight.T copied): dx from weight itself, read along its rows'
    contiguous in_features, where autograd would read the copy across its rows (2.6x slower on the CPU here)."""
    x, weight = Tensor(call.src[1]), Tensor(call.src[2])
    g = Tensor(grad)
    g2, x2 = g.reshape(-1, g.shape[-1]), x.reshape(-1, x.shape[-1])  # (tokens, out), (tokens, in)
    dx = (g @ weight).cast(x.dtype)
    dw = (g2.T @ x2).cast(weight.dtype)
    grads = [dx.uop, dw.uop, None]  # none for the copy: weight gets all of its gradient as dw
    if len(call.src) > 4:  # the bias
        grads.append(g2.sum(0).cast(call.src[4].dtype).uop)
    return tuple(grads)


def _as_params(*ts: Tensor) -> list[Tensor]:
    """Each tensor as the parameter of its position, for the body of a tinygrad call on them."""
    return [Tensor(t.as_param(i).uop, device=t.device) for i, t in enumerate(ts)]


class Linear(nn.Linear):
    """tinygrad's Linear; in training its weight is multiplied as a contiguous transposed copy (see __call__)."""

    def __call__(self, x: Tensor) -> Tensor:
        # x @ weight.T reads the weight along its rows (in_features); the CPU's matmul kernels run ~2x faster reading
        # it along out_features, the axis they vectorize. The copy is one small kernel, worth it from a few rows on;
        # a sampling step's one row per sample reads the weight's rows as they are. The sampler keeps its own copies.
        w = transposed_weights.get(id(self))
        if w is not None or prod(x.shape[:-1]) < MIN_ROWS_FOR_COPY:
            return x.linear(self.weight.T if w is None else w, self.bias)
        # with the copy, a call whose backward multiplies the weight, not the copy (_linear_grad)
        w_t = self.weight.T.contiguous()
        args = [x, self.weight, w_t] + ([self.bias] if self.bias is not None else [])
        params = _as_params(*args)
        fxn = params[0].linear(params[2], params[3] if len(params) > 3 else None)
        return x.call(*args[1:], fxn=fxn, grad_fxn=_linear_grad)


MAX_VOCAB_FOR_ONE_HOT = 4096


class Embedding(nn.Embedding):
    """tinygrad's Embedding; a small vocabulary is looked up as a one-hot matrix times the table (see __call__)."""

    def __call__(self, idx: Tensor) -> Tensor:
        # tinygrad looks up by selecting and summing over the vocabulary inside one kernel, ~14 GFLOP/s on the CPU
        # here, forward and backward. As a materialized one-hot matrix the lookup is a matmul for the CPU's matmul
        # kernels, 20x faster. Exact: each output row is one table row times 1.0 plus zeros. The one-hot matrix has
        # tokens x vocab entries: beyond a few thousand words, tinygrad's way.
        if self.weight.shape[0] > MAX_VOCAB_FOR_ONE_HOT:
            return super().__call__(idx)
        vocab = Tensor.arange(self.weight.shape[0], dtype=idx.dtype).clone().to(idx.device)
        one_hot = (idx.unsqueeze(-1) == vocab).cast(self.weight.dtype).contiguous()  # (B, T, vocab_size)
        return one_hot @ self.weight.contiguous_backward()


def _softmax(x: Tensor) -> Tensor:
    e = (x - x.max(-1, keepdim=True)).exp().contiguous()
    return (e / e.sum(-1, keepdim=True)).contiguous()


def _softmax_grad(grad: UOp, call: UOp) -> tuple[UOp]:
    p, g = Tensor(call.gettuple(0)), Tensor(grad)
    return ((p * (g - (g * p).sum(-1, keepdim=True))).uop,)


def softmax(x: Tensor) -> Tensor:
    """x.softmax(-1) as a tinygrad function call whose backward reads its output p: dx = p * (g - sum(g * p)).
    Autograd through tinygrad's softmax recomputes exp from x in the backward (~0.3 ms a layer on the CPU here)."""
    return x.call(fxn=_softmax(*_as_params(x)), grad_fxn=_softmax_grad)


class LayerNorm:
    """LayerNorm with an optional bias (tinygrad's nn.LayerNorm has no bias=False)."""

    def __init__(self, ndim: int, bias: bool):
        self.weight = Tensor.ones(ndim)
        self.bias = Tensor.zeros(ndim) if bias else None

    def __call__(self, x: Tensor) -> Tensor:
        x = x.float().layernorm(eps=1e-5).cast(x.dtype) * self.weight  # statistics in float32 under mixed precision
        return x + self.bias if self.bias is not None else x


class CausalSelfAttention:
    def __init__(self, config: GPTConfig):
        assert config.n_embd % config.n_head == 0, f"n_embd={config.n_embd} is not divisible by n_head={config.n_head}"
        # key, query, value projections for all heads, in one batch
        self.c_attn = Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        # output projection
        self.c_proj = Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.n_head, self.n_embd, self.dropout = config.n_head, config.n_embd, config.dropout

    def __call__(self, x: Tensor) -> Tensor:
        B, T, C = x.shape  # batch size, sequence length, embedding dimensionality (n_embd)
        # contiguous_backward: each of dq, dk, dv is its own kernel; fused into split's backward, each was computed
        # over all 3 * n_embd channels under a mask
        q, k, v = [t.contiguous_backward() for t in self.c_attn(x).split(self.n_embd, dim=2)]
        q, k, v = [t.reshape(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v)]  # (B, nh, T, hs)
        # causal self-attention; (B, nh, T, hs) x (B, nh, hs, T) -> (B, nh, T, T)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.shape[-1]))
        mask = Tensor.ones(T, T, dtype=dtypes.bool, device=x.device).tril()  # on x's device(s), for data parallel
        # the softmax in float32; its output is a buffer the matmul reading it and the backward both use
        att = softmax(mask.where(att, float("-inf")).float()).cast(q.dtype)
        att = att.dropout(self.dropout)
        y = att @ v  # (B, nh, T, T) x (B, nh, T, hs) -> (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C).contiguous()  # re-assemble all head outputs side by side
        return self.c_proj(y).dropout(self.dropout)


class MLP:
    def __init__(self, config: GPTConfig):
        self.c_fc = Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout

    def __call__(self, x: Tensor) -> Tensor:
        # exact (erf) GELU, as torch's nn.GELU(); both contiguous, or the backward recomputes the c_fc matmul
        x = self.c_fc(x).contiguous().contiguous_backward().gelu(approximate="none").contiguous().contiguous_backward()
        return self.c_proj(x).dropout(self.dropout)


class Block:
    def __init__(self, config: GPTConfig):
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def __call__(self, x: Tensor) -> Tensor:
        # contiguous_backward: the residual stream's gradient is summed once, not inside each matmul tile reading it
        x = x + self.attn(self.ln_1(x).contiguous()).contiguous_backward()
        return x + self.mlp(self.ln_2(x).contiguous()).contiguous_backward()


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
        self._init_weights(TorchGenerator(seed) if generator is None else generator)
        if verbose:
            print(f"number of parameters: {self.get_num_params() / 1e6:.2f}M")

    def _init_weights(self, gen: TorchGenerator):
        """nanoGPT's init, N(0, 0.02) weights, zero biases, residual projections at 0.02/sqrt(2 * n_layer), drawn from
        torch's generator in nanoGPT's order, so a seed gives nanoGPT's initial weights (to 1e-7: tests/test_torch_rng.py).

        nanoGPT's GPT.__init__ draws three times: the layers' own init as they are built (nn.Embedding N(0, 1),
        nn.Linear kaiming-uniform weight and bias), then N(0, 0.02) over the modules in order (lm_head last: the tied
        wte gets that draw), then the c_proj weights again. Each draw that is overwritten is still taken. Realized
        at once from numpy: lazily assigned random tensors gave every layer the same weights.
        """
        cfg = self.config
        C, V, T = cfg.n_embd, cfg.vocab_size, cfg.block_size
        linears = [("attn.c_attn", 3 * C, C), ("attn.c_proj", C, C), ("mlp.c_fc", 4 * C, C), ("mlp.c_proj", C, 4 * C)]
        # 1) as built: the values are overwritten below, the draws still count
        gen.skip_normal(V * C), gen.skip_normal(T * C)  # wte, wpe
        for _ in range(cfg.n_layer):
            for _, n_out, n_in in linears:
                gen.skip(n_out * n_in + (n_out if cfg.bias else 0))
        gen.skip(V * C)  # lm_head
        # 2) self.apply(self._init_weights): every Linear and Embedding weight N(0, 0.02), in module order
        w = {"transformer.wte.weight": gen.normal(V * C, 0.0, 0.02), "transformer.wpe.weight": gen.normal(T * C, 0.0, 0.02)}
        for i in range(cfg.n_layer):
            for name, n_out, n_in in linears:
                w[f"transformer.h.{i}.{name}.weight"] = gen.normal(n_out * n_in, 0.0, 0.02)
        w["transformer.wte.weight"] = gen.normal(V * C, 0.0, 0.02)  # lm_head, tied to wte
        # 3) apply special scaled init to the residual projections, per GPT-2 paper
        for i in range(cfg.n_layer):
            for name, n_out, n_in in linears:
                if name.endswith("c_proj"):
                    w[f"transformer.h.{i}.{name}.weight"] = gen.normal(n_out * n_in, 0.0, 0.02 / math.sqrt(2 * cfg.n_layer))
        for name, p in self.state_dict().items():
            if name in w:
                value = w[name].reshape(p.shape)
            else:  # biases zero, LayerNorm weights one
                value = np.full(p.shape, 0.0 if name.endswith("bias") else 1.0, dtype=np.float32)
            p.replace(Tensor(value, device=p.device))
        Tensor.realize(*self.parameters())

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

    def estimate_mfu(self, fwdbwd_per_iter: int, dt: float) -> float:
        """Model flops utilization in units of A100 bfloat16 peak FLOPS (312 TFLOPS), as nanoGPT reports it."""
        # first estimate the number of flops we do per iteration; see PaLM paper Appendix B
        N = self.get_num_params()
        cfg = self.config
        L, H, Q, T = cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head, cfg.block_size
        flops_per_token = 6 * N + 12 * L * H * Q * T
        flops_per_iter = flops_per_token * T * fwdbwd_per_iter
        return flops_per_iter / dt / 312e12

    def __call__(self, idx: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """idx, targets: (B, T) int32. Returns logits (B, T, vocab_size) and the mean cross-entropy loss (or None)."""
        B, T = idx.shape
        assert T <= self.config.block_size, f"Cannot forward sequence of length {T}, block size is only {self.config.block_size}"
        tok_emb = self.transformer["wte"](idx)  # token embeddings of shape (B, T, n_embd)
        pos_emb = self.transformer["wpe"].weight[:T]  # position embeddings of shape (T, n_embd): positions 0..T-1
        # contiguous_backward: the embeddings' gradients read the residual stream's gradient once, not its summands
        x = (tok_emb + pos_emb).dropout(self.config.dropout).contiguous_backward()
        for block in self.transformer["h"]:
            x = block(x)
        x = self.transformer["ln_f"](x).contiguous()
        # unlike nanoGPT, logits for every position also at inference: the fixed-shape sampler reads any position
        # contiguous_backward: the loss's gradient is computed once, not inside both lm_head gradient matmuls
        logits = self.lm_head(x).contiguous_backward()
        loss = None
        if targets is not None:
            # the loss in float32 whatever the compute dtype, as under torch autocast
            loss = logits.float().reshape(-1, logits.shape[-1]).sparse_categorical_crossentropy(targets.reshape(-1))
        return logits, loss
