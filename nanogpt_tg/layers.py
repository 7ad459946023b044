"""The model's tuned layers: nanoGPT's nn.Linear, nn.Embedding, softmax and GELU, with the same numbers, written so that
tinygrad's kernels for them run fast; and the named materialization hints model.py places between layers.

Each says what it replaces and why. Measured figures are in BENCHMARKS.md.
"""
import math

from tinygrad import Tensor, nn
from tinygrad.helpers import prod

from . import tg


# --- materialization hints. tinygrad fuses lazily: a value several kernels read is recomputed by each of them, and a
# gradient several kernels need is summed inside each. These two put one in a buffer, computed once.
def stored(x: Tensor) -> Tensor:
    """x computed once into a buffer that every later kernel reads (x.contiguous())."""
    return x.contiguous()


def stored_grad(x: Tensor) -> Tensor:
    """x's gradient computed once into a buffer in the backward pass (x.contiguous_backward()): e.g. the residual
    stream's, read by each matmul tile of a branch's backward."""
    return x.contiguous_backward()


def read_after(x: Tensor, y: Tensor) -> Tensor:
    """x read through y (of x's shape): a backward value computed from x alone is otherwise placed by the scheduler
    in the forward, where x is ready, and kept until the backward. (y != y) is false but for a nan, which stays one."""
    return (y != y).where(float("nan"), x)


def split(x: Tensor, size: int) -> list[Tensor]:
    """x.split(size, dim=-1), each part's gradient its own buffer, and x's too: fused into split's backward, each of
    dq, dk, dv was computed over all 3 * n_embd channels under a mask, and x's gradient (their concatenation) was read
    by c_attn's dx and dW products through three masked loads per value."""
    return [stored_grad(t) for t in stored_grad(x).split(size, dim=-1)]


# --- layers
MIN_ROWS_FOR_COPY = 32


# --- packed products. A CPU matmul kernel keeps a tile of a's rows in registers and streams b's columns past it,
# reading each row of b's tile STRIP columns wide; rows of b N floats apart touch a new cache line each, which the
# caches keep for the next tile of a only when b is small, and power-of-two widths map to a few cache sets. Copied
# first into strips, (N / STRIP, K, STRIP), each tile's part of b is one contiguous run: the kernel then streams a past
# each strip, and its output comes out strip by strip, (N / STRIP, M, STRIP), read by the next kernel through a view.
# The copy reads b once; the products ran 1.7-2.2x faster on one Zen 3 core (BENCHMARKS.md). On the CPU only: GPUs'
# kernels stage their tiles in local memory themselves.
STRIP = 16
# an a larger than A_BYTES (the preset's activations: 6-25 MB; the README config's are 0.4-1.5 MB) is multiplied ROW_TILE
# rows at a time by all of b's strips, so that those rows stay in cache, and the product's strips are read back from
# nearby memory; a smaller one streams past each strip whole (row tiles were slower there)
A_BYTES, ROW_TILE = 4 << 20, 64
MIN_ROWS_FOR_PACKING = 32  # fewer rows of a (a sampler's one row per sample) read b as it is


def on_cpu(t: Tensor) -> bool:
    """t is on the CPU device (one device, not sharded)."""
    return isinstance(t.device, str) and t.device.split(":")[0] == "CPU"


def packs(a: Tensor, n: int) -> bool:
    """Whether a @ b, for b with n columns, multiplies b in strips (times_packed)."""
    return on_cpu(a) and n % STRIP == 0 and a.shape[-2] >= MIN_ROWS_FOR_PACKING


def pack(b: Tensor, width: int = STRIP) -> Tensor:
    """b (..., K, N) copied into strips of `width` columns: (..., N / width, K, width)."""
    *batch, k, n = b.shape
    return stored(b.reshape(*batch, k, n // width, width).transpose(-3, -2))


def times_packed(a: Tensor, b_packed: Tensor) -> Tensor:
    """a (..., M, K) @ b for b packed (pack(b)): (..., M, N), a view of the product computed strip by strip, and for
    an a of more than A_BYTES (and a multiple of ROW_TILE rows), ROW_TILE rows of a at a time."""
    *batch, m, k = a.shape
    *_, strips, _, strip = b_packed.shape
    rows = ROW_TILE if m * k * a.dtype.itemsize > A_BYTES and m % ROW_TILE == 0 else m
    out = stored(a.reshape(*batch, m // rows, 1, rows, k) @ b_packed.unsqueeze(-4))  # (..., M / rows, strips, rows, STRIP)
    return out.transpose(-3, -2).reshape(*out.shape[:-4], m, strips * strip)


def matmul(a: Tensor, b: Tensor, copy: bool = False) -> Tensor:
    """a @ b for a (..., M, K) and b (..., K, N), b in strips where that is faster (packs); else, with copy, b copied
    into a buffer first (a view that a kernel would read across its rows, as a transposed one)."""
    if packs(a, b.shape[-1]):
        return times_packed(a, pack(b))
    return a @ (stored(b) if copy else b)


# dW = g.T @ x sums over the tokens. From this many tokens, in chunks: one partial dW per chunk, then their sum. Over
# all the tokens at once, each output tile streams a strided column strip of g and x from memory (the strips outgrow
# the caches); over a chunk they stay in cache. Chunks of MIN_GRAD_CHUNK tokens, larger when that would make more than
# MAX_GRAD_CHUNKS partials (each a whole dW written and read again). BENCHMARKS.md: the preset's dW kernels 2.5-4x
# faster, the README config's step ~10%.
MIN_ROWS_FOR_CHUNKED_GRAD = 512
MIN_GRAD_CHUNK, MAX_GRAD_CHUNKS = 128, 64
# dW's left operand is g transposed, which its kernel reads down g's columns: a cache line per token for a few outputs.
# In strips of G_STRIP outputs (a tile's rows: 4 on AVX2, 8 on AVX-512) it is read as one run per tile, as x's strips
# (the preset's dW products 26-35 -> 48-64 GFLOP/s on one Zen 3 core, BENCHMARKS.md)
G_STRIP = 8


def grad_chunk(tokens: int) -> int | None:
    """Tokens per chunk of the weight gradient's sum, or None to sum over all of them at once."""
    chunk = max(MIN_GRAD_CHUNK, tokens // MAX_GRAD_CHUNKS)
    return chunk if tokens >= MIN_ROWS_FOR_CHUNKED_GRAD and tokens % chunk == 0 else None


def weight_grad(g2: Tensor, x2: Tensor) -> Tensor:
    """g2.T @ x2 for g2 (tokens, out) and x2 (tokens, in): the weight gradient, summed chunk by chunk when large, each
    chunk's x in strips (matmul), and g in strips of G_STRIP outputs where x is."""
    (tokens, n_out), n_in = g2.shape, x2.shape[1]
    if (chunk := grad_chunk(tokens)) is None:
        return matmul(g2.T, x2)
    chunks = tokens // chunk
    g3, x3 = g2.reshape(chunks, chunk, n_out), x2.reshape(chunks, chunk, n_in)
    if not (packs(g3.transpose(-2, -1), n_in) and n_out % G_STRIP == 0):
        return matmul(g3.transpose(-2, -1), x3).sum(0)
    g_strips = pack(g3, G_STRIP)  # (chunks, out/8, chunk, 8)
    out = stored(g_strips.transpose(-2, -1).unsqueeze(2) @ pack(x3).unsqueeze(1))  # (chunks, out/8, in/16, 8, STRIP)
    return out.permute(0, 1, 3, 2, 4).reshape(chunks, n_out, n_in).sum(0)  # (out, in), summed from the partials' tiles


def _linear(x: Tensor, weight: Tensor, weight_t: Tensor, *bias: Tensor) -> Tensor:
    """x @ weight.T + bias, weight_t the weight's transposed copy: (in, out), or in strips (pack)."""
    x2 = x.reshape(-1, x.shape[-1])
    y = (times_packed(x2, weight_t) if weight_t.ndim == 3 else x2 @ weight_t).reshape(*x.shape[:-1], -1)
    return y + bias[0] if bias else y


def _param_grads(g: Tensor, x: Tensor, weight: Tensor, bias: list[Tensor]) -> list[Tensor]:
    """dW and db of x @ weight_t + bias for the output's gradient g."""
    g2, x2 = g.reshape(-1, g.shape[-1]), x.reshape(-1, x.shape[-1])  # (tokens, out), (tokens, in)
    return [weight_grad(g2, x2).cast(weight.dtype)] + ([g2.sum(0).cast(bias[0].dtype)] if bias else [])


def _linear_grad(grad, call):
    """The backward of x @ weight_t + bias (weight_t = weight.T copied): dx from weight itself, read along its rows'
    contiguous in_features, where autograd would read the copy across its rows."""
    x, weight, _, *bias = tg.call_inputs(call)
    g = Tensor(grad)
    dx = matmul(g.reshape(-1, g.shape[-1]), weight).reshape(*g.shape[:-1], -1).cast(x.dtype)
    dw, *db = _param_grads(g, x, weight, bias)
    return tg.grads(dx, dw, None, *db)  # none for the copy: weight gets all of its gradient as dw


class Linear(nn.Linear):
    """tinygrad's Linear; from MIN_ROWS_FOR_COPY rows on, its weight is multiplied as a contiguous transposed copy.

    x @ weight.T reads the weight along its rows (in_features); the CPU's matmul kernels run about twice as fast
    reading it along out_features, the axis they vectorize. The copy is one small kernel, worth it from a few rows on;
    a sampling step's one row per sample reads the weight as it is. The backward multiplies the weight, not the copy
    (_linear_grad). `weight_t`, while set (TransposedCopies), is a copy kept outside the call: the sampler's."""

    weight_t: Tensor | None = None

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        # zeros, not nn.Linear's random init: every weight is set after (compat/init.py's, a checkpoint's, GPT-2's),
        # and tinygrad builds a random tensor's graph even when it is never computed (~0.4 s of a start, 25 Linears)
        self.weight = Tensor.zeros(out_features, in_features)
        self.bias = Tensor.zeros(out_features) if bias else None

    def __call__(self, x: Tensor) -> Tensor:
        if self.plain(x):
            return x.linear(self.weight.T if self.weight_t is None else self.weight_t, self.bias)
        return tg.call(_linear, _linear_grad, *self.call_args(x))

    def plain(self, x: Tensor) -> bool:
        """Whether x is multiplied by the weight as it is (or by the kept copy), not in a call with the copy made."""
        return self.weight_t is not None or prod(x.shape[:-1]) < MIN_ROWS_FOR_COPY

    def call_args(self, x: Tensor) -> list[Tensor]:
        """The arguments of the call (_linear's): x, the weight, its transposed copy (in strips where packs), the bias
        if any."""
        w_t = pack(self.weight.T) if packs(x.reshape(-1, x.shape[-1]), self.weight.shape[0]) else self.weight.T.contiguous()
        return [stored(x), self.weight, w_t] + ([self.bias] if self.bias is not None else [])


# c_proj(gelu(h)) in the MLP: GELU's output is the (tokens, 4 * n_embd) input of c_proj's weight gradient. Kept from the
# forward it is 96 MiB a layer at the preset's size, a sixth of what a step first touches (BENCHMARKS.md); recomputed
# in the backward from h, which GELU's own gradient keeps anyway, it costs one more GELU per layer.
def _gelu_linear(approximate: str):
    def body(h: Tensor, *linear_args: Tensor) -> Tensor:
        return _linear(gelu_value(h, approximate), *linear_args)
    return body


def gelu_gate(h: Tensor, approximate: str) -> tuple[Tensor, Tensor]:
    """GELU as h * gate(h): the gate in a buffer, and GELU's derivative gate + h * gate'(h) from it by hand.

    "none": gate = Phi(h), the normal CDF, and gate' = phi(h) = exp(-h^2 / 2) / sqrt(2 pi). "tanh": gate = (1 + t) / 2
    with t = tanh(u), u = sqrt(2 / pi) (h + 0.044715 h^3), and gate' = (1 - t^2) / 2 * du/dh. The backward's one erf
    (or tanh) per value, where autograd of gelu() took it and its derivative twice over, and a second erf for the
    recomputed output (BENCHMARKS.md)."""
    if approximate == "none":
        gate = stored(0.5 * (1.0 + (h * math.sqrt(0.5)).erf()))
        return gate, gate + h * (h * h * -0.5).exp() * (1 / math.sqrt(2 * math.pi))
    c = math.sqrt(2 / math.pi)
    gate = stored(0.5 * (1.0 + (c * (h + 0.044715 * h * h * h)).tanh()))
    t = 2.0 * gate - 1.0
    return gate, gate + 0.5 * (1.0 - t * t) * h * c * (1.0 + 3 * 0.044715 * h * h)


def _gelu_linear_grad(grad, call, approximate: str):
    h, weight, _, *bias = tg.call_inputs(call)
    g = Tensor(grad)
    da = stored(matmul(g.reshape(-1, g.shape[-1]), weight).reshape(h.shape).cast(h.dtype))
    gate, slope = gelu_gate(read_after(h, da), approximate)
    dw, *db = _param_grads(g, h * gate, weight, bias)  # GELU's output recomputed, not kept from the forward
    return tg.grads(stored(da * slope), dw, None, *db)


def _gelu_linear_grad_exact(grad, call):
    return _gelu_linear_grad(grad, call, "none")


def _gelu_linear_grad_tanh(grad, call):
    return _gelu_linear_grad(grad, call, "tanh")


def gelu_linear(lin: "Linear", h: Tensor, approximate: str = "none") -> Tensor:
    """lin(gelu(h, approximate)), with GELU's output recomputed in the backward instead of kept (see above)."""
    if lin.plain(h):
        return lin(gelu(h, approximate))
    grad_fxn = {"none": _gelu_linear_grad_exact, "tanh": _gelu_linear_grad_tanh}[approximate]
    return tg.call(_gelu_linear(approximate), grad_fxn, *lin.call_args(h))


class TransposedCopies:
    """Kept transposed copies of some Linears' weights, which those Linears use inside `with` (the sampler's: a full
    window's forward otherwise made a copy of every weight for every token). refresh() after the weights change.

    A large bias-free Linear (GPT-2's lm_head: 50257 outputs, which no vector tile divides) gets zero columns up to a
    multiple of 64, or its one-row product reads the copy across its rows, ~5x slower; the caller drops those outputs."""

    def __init__(self, linears: list[Linear]):
        self.linears = linears
        self.copies = [self.transposed(lin).contiguous().realize() for lin in linears]

    @staticmethod
    def transposed(lin: Linear) -> Tensor:
        w = lin.weight.T  # (in, out)
        pad = -w.shape[1] % 64 if w.shape[1] > 4096 and lin.bias is None else 0
        return w.pad(((0, 0), (0, pad))) if pad else w

    def refresh(self):
        for lin, w_t in zip(self.linears, self.copies):
            w_t.assign(self.transposed(lin).contiguous()).realize()

    def __enter__(self):
        for lin, w_t in zip(self.linears, self.copies):
            lin.weight_t = w_t

    def __exit__(self, *exc):
        for lin in self.linears:
            lin.weight_t = None


# --- attention's two products. q, k and v are views of c_attn's output, each token's row 3 * n_embd apart, so a matmul
# kernel vectorizing over keys (the scores' contiguous axis) gathers k and v one float at a time: the products read
# them copied, in strips (matmul) or, where strips do not apply, transposed into a buffer (at the preset's size on one
# Zen 4 core that copy took 8 ms and the scores 52 ms instead of 119; BENCHMARKS.md).
def _scores(q: Tensor, k: Tensor) -> Tensor:
    return matmul(q, k.transpose(-2, -1), copy=True)


def _scores_grad(grad, call):
    q, k = tg.call_inputs(call)
    g = Tensor(grad)
    return tg.grads(matmul(g, k), matmul(g.transpose(-2, -1), q))


def scores(q: Tensor, k: Tensor) -> Tensor:
    """q @ k.transpose(-2, -1), k^T copied first (in strips or transposed); its gradient's products the same way."""
    return tg.call(_scores, _scores_grad, q, k)


def _weighted(att: Tensor, v: Tensor) -> Tensor:
    return matmul(att, v)


def _weighted_grad(grad, call):
    att, v = tg.call_inputs(call)
    g = Tensor(grad)
    return tg.grads(matmul(g, read_after(v, g).transpose(-2, -1), copy=True), matmul(att.transpose(-2, -1), g))


def weighted(att: Tensor, v: Tensor) -> Tensor:
    """att @ v, whose backward reads v^T copied (in strips or transposed) for att's gradient (g @ v^T)."""
    return tg.call(_weighted, _weighted_grad, att, v)


MAX_VOCAB_FOR_ONE_HOT = 4096


class Embedding(nn.Embedding):
    """tinygrad's Embedding; a small vocabulary is looked up as a one-hot matrix times the table.

    tinygrad looks up by selecting and summing over the vocabulary inside one kernel, slow forward and backward. As a
    materialized one-hot matrix the lookup is a matmul for the CPU's matmul kernels. Exact: each output row is one
    table row times 1.0 plus zeros. The one-hot matrix has tokens x vocab entries: beyond a few thousand words,
    tinygrad's way."""

    def __init__(self, vocab_size: int, embed_size: int):
        self.weight = Tensor.zeros(vocab_size, embed_size)  # set after, as Linear's

    def __call__(self, idx: Tensor) -> Tensor:
        if self.weight.shape[0] > MAX_VOCAB_FOR_ONE_HOT:
            return super().__call__(idx)
        vocab = Tensor.arange(self.weight.shape[0], dtype=idx.dtype).clone().to(idx.device)
        one_hot = stored((idx.unsqueeze(-1) == vocab).cast(self.weight.dtype))  # (B, T, vocab_size)
        return one_hot @ stored_grad(self.weight)


def _softmax(x: Tensor) -> Tensor:
    e = stored((x - x.max(-1, keepdim=True)).exp())  # exp once, in a kernel clang vectorizes
    return stored(e / e.sum(-1, keepdim=True))


def _softmax_grad(grad, call):
    p, g = tg.call_output(call), Tensor(grad)
    return tg.grads(p * (g - (g * p).sum(-1, keepdim=True)))


def softmax(x: Tensor) -> Tensor:
    """x.softmax(-1) as one tinygrad call whose backward reads its output p: dx = p * (g - sum(g * p)). Autograd
    through tinygrad's softmax recomputes exp from x in the backward, and its forward computes exp twice."""
    return tg.call(_softmax, _softmax_grad, x)


def gelu_value(x: Tensor, approximate: str = "none") -> Tensor:
    """GELU's output in a buffer. approximate: "none" is exact (erf), torch's nn.GELU(); "tanh" is OpenAI GPT-2's."""
    return stored(x.gelu(approximate=approximate))


def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    """GELU with its input and output in buffers, forward and backward: otherwise the backward recomputes the matmul
    that feeds it."""
    return stored_grad(gelu_value(stored_grad(stored(x)), approximate))
