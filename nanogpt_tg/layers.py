"""The model's tuned layers: nanoGPT's nn.Linear, nn.Embedding, softmax and GELU, with the same numbers, written so that
tinygrad's kernels for them run fast; and the named materialization hints model.py places between layers.

Each says what it replaces and why. Measured figures are in BENCHMARKS.md.
"""
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


def split(x: Tensor, size: int) -> list[Tensor]:
    """x.split(size, dim=-1), each part's gradient its own buffer: fused into split's backward, each of dq, dk, dv was
    computed over all 3 * n_embd channels under a mask."""
    return [stored_grad(t) for t in x.split(size, dim=-1)]


# --- layers
MIN_ROWS_FOR_COPY = 32
# dW = g.T @ x sums over the tokens, which neither g nor x holds contiguous: each output tile then re-reads a strided
# column strip of both, from memory once they outgrow the cache. From this many tokens, g is transposed first, so the
# product reads like the forward's (BENCHMARKS.md: the preset's step 23.9 -> 19.9 s; below, the copy costs more)
MIN_ROWS_FOR_GRAD_COPY = 4096


def _linear_grad(grad, call):
    """The backward of x @ weight_t + bias (weight_t = weight.T copied): dx from weight itself, read along its rows'
    contiguous in_features, where autograd would read the copy across its rows."""
    x, weight, _, *bias = tg.call_inputs(call)
    g = Tensor(grad)
    g2, x2 = g.reshape(-1, g.shape[-1]), x.reshape(-1, x.shape[-1])  # (tokens, out), (tokens, in)
    dx = (g @ weight).cast(x.dtype)
    g_t = stored(g2.T) if g2.shape[0] >= MIN_ROWS_FOR_GRAD_COPY else g2.T  # (out, tokens)
    dw = (g_t @ x2).cast(weight.dtype)
    db = [g2.sum(0).cast(bias[0].dtype)] if bias else []
    return tg.grads(dx, dw, None, *db)  # none for the copy: weight gets all of its gradient as dw


class Linear(nn.Linear):
    """tinygrad's Linear; from MIN_ROWS_FOR_COPY rows on, its weight is multiplied as a contiguous transposed copy.

    x @ weight.T reads the weight along its rows (in_features); the CPU's matmul kernels run about twice as fast
    reading it along out_features, the axis they vectorize. The copy is one small kernel, worth it from a few rows on;
    a sampling step's one row per sample reads the weight as it is. The backward multiplies the weight, not the copy
    (_linear_grad). `weight_t`, while set (TransposedCopies), is a copy kept outside the call: the sampler's."""

    weight_t: Tensor | None = None

    def __call__(self, x: Tensor) -> Tensor:
        if self.weight_t is not None or prod(x.shape[:-1]) < MIN_ROWS_FOR_COPY:
            return x.linear(self.weight.T if self.weight_t is None else self.weight_t, self.bias)
        args = [stored(x), self.weight, self.weight.T.contiguous()] + ([self.bias] if self.bias is not None else [])
        return tg.call(lambda x, w, w_t, *b: x.linear(w_t, b[0] if b else None), _linear_grad, *args)


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


MAX_VOCAB_FOR_ONE_HOT = 4096


class Embedding(nn.Embedding):
    """tinygrad's Embedding; a small vocabulary is looked up as a one-hot matrix times the table.

    tinygrad looks up by selecting and summing over the vocabulary inside one kernel, slow forward and backward. As a
    materialized one-hot matrix the lookup is a matmul for the CPU's matmul kernels. Exact: each output row is one
    table row times 1.0 plus zeros. The one-hot matrix has tokens x vocab entries: beyond a few thousand words,
    tinygrad's way."""

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


def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    """GELU with its input and output in buffers, forward and backward: otherwise the backward recomputes the matmul
    that feeds it. approximate: "none" is exact (erf), torch's nn.GELU(); "tanh" is OpenAI GPT-2's."""
    return stored_grad(stored(stored_grad(stored(x)).gelu(approximate=approximate)))
