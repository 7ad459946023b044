"""Incremental GPT forward with a key/value cache, for sampling: one jitted step per new token, no recompiles.

nanoGPT's generate recomputes the whole (cropped) context for every token. Here, while the text fits in block_size,
the prompt is prefilled once and each new token runs one fixed-shape jitted step with a symbolic start position.
Past block_size the window slides, every position's embedding changes, so nothing cached stays valid: each token then
runs the full window, exactly nanoGPT's crop-and-recompute.
"""
import math

import numpy as np
from tinygrad import Tensor, TinyJit, Variable, dtypes
from tinygrad.nn.state import get_state_dict

from .device import read, write
from .model import GPT, Linear, softmax, transposed_weights


class KVCache:
    """Next-token logits for `rows` sequences of a GPT, reusing the keys and values of the tokens seen before."""

    def __init__(self, model: GPT, rows: int):
        cfg = model.config
        self.model, self.rows, self.block_size = model, rows, cfg.block_size
        self.n_head, self.head_size = cfg.n_head, cfg.n_embd // cfg.n_head
        shape = (rows, cfg.n_head, cfg.block_size, self.head_size)  # (B, nh, block_size, hs)
        self.k = [Tensor.zeros(*shape).contiguous().realize().is_param_(False) for _ in range(cfg.n_layer)]
        self.v = [Tensor.zeros(*shape).contiguous().realize().is_param_(False) for _ in range(cfg.n_layer)]
        self.start_pos = Variable("start_pos", 0, cfg.block_size - 1)
        # the jitted steps read their tokens from these buffers: refilling them in place skips a Tensor per call
        self.window_idx = Tensor.zeros(rows, cfg.block_size, dtype=dtypes.int32).contiguous().realize().is_param_(False)
        self.step_idx = Tensor.zeros(rows, 1, dtype=dtypes.int32).contiguous().realize().is_param_(False)
        self.prefill_jit, self.step_jit = TinyJit(self._prefill), TinyJit(self._step)
        self.last_jit = TinyJit(lambda: self._prefill(last_only=True))
        # each Linear's weight transposed once (refresh), not in every forward: a full window's forward made 17 copies
        self.linears = list(get_state_dict(model, tensor_type=Linear).values())
        self.weights_t = {id(lin): lin.weight.T.contiguous().realize() for lin in self.linears}
        self.cached = None  # the tokens (rows, n) whose keys and values the cache holds at positions 0..n-1

    def _forward(self, x: Tensor, mask: Tensor, store, last_only: bool = False) -> Tensor:
        """The blocks, ln_f and lm_head on embeddings x (B, T, C); store(i, k, v) writes block i's new keys and values
        into its cache, and attention then reads the whole cache under mask (.., T, block_size).

        last_only: the last block works on the last position only (keys and values on all): logits (B, 1, V)."""
        B, T, C = x.shape
        blocks = self.model.transformer["h"]
        for i, block in enumerate(blocks):
            attn = block.attn
            q, k, v = attn.c_attn(block.ln_1(x).contiguous()).split(C, dim=2)
            q, k, v = [t.reshape(B, T, self.n_head, self.head_size).transpose(1, 2) for t in (q, k, v)]  # (B,nh,T,hs)
            store(i, k, v)
            if last_only and i == len(blocks) - 1:
                q, mask, x, T = q[:, :, -1:], mask[-1:], x[:, -1:], 1
            att = (q @ self.k[i].transpose(-2, -1)) * (1.0 / math.sqrt(self.head_size))  # (B, nh, T, block_size)
            att = softmax(mask.where(att, float("-inf")))  # exp once, in a kernel clang vectorizes
            y = (att @ self.v[i]).transpose(1, 2).reshape(B, T, C)  # (B, nh, T, hs) -> (B, T, C)
            x = (x + attn.c_proj(y)).contiguous()  # contiguous: else later kernels recompute the residual stream
            x = (x + block.mlp(block.ln_2(x).contiguous())).contiguous()
        return self.model.lm_head(self.model.transformer["ln_f"](x))

    def _prefill(self, last_only: bool = False) -> Tensor:
        """window_idx (B, block_size) int32, left-aligned: logits (B, block_size, V), or (B, 1, V) of the last position
        with last_only; the cache takes every position."""
        idx, T = self.window_idx, self.block_size
        wte, wpe = self.model.transformer["wte"], self.model.transformer["wpe"]
        x = wte(idx) + wpe(Tensor.arange(T, dtype=dtypes.int32))
        mask = Tensor.ones(T, T, dtype=dtypes.bool).tril()  # causal: position t sees 0..t

        def store(i, k, v):
            self.k[i].assign(k.contiguous()).realize()
            self.v[i].assign(v.contiguous()).realize()

        return self._forward(x, mask, store, last_only).realize()

    def _step(self, start_pos: Variable) -> Tensor:
        """step_idx (B, 1) int32, the token at position start_pos: logits (B, 1, V) of the token after it."""
        idx, wte, wpe = self.step_idx, self.model.transformer["wte"], self.model.transformer["wpe"]
        x = wte(idx) + wpe.weight.shrink(((start_pos, start_pos + 1), None)).reshape(1, 1, -1)
        positions = Tensor.arange(self.block_size).reshape(1, 1, 1, self.block_size)
        mask = positions <= start_pos  # the cached tokens and this one

        def store(i, k, v):
            at = positions.reshape(1, 1, self.block_size, 1) == start_pos
            self.k[i].assign(at.where(k, self.k[i])).realize()
            self.v[i].assign(at.where(v, self.v[i])).realize()

        return self._forward(x, mask, store).realize()

    def refresh(self):
        """Copy the model's current weights into the transposed copies the jitted steps read (Generator.generate does,
        before each generation)."""
        for lin in self.linears:
            self.weights_t[id(lin)].assign(lin.weight.T.contiguous()).realize()

    def next_logits(self, tokens: np.ndarray) -> np.ndarray:
        """tokens (rows, t) int: logits (rows, V) of each row's next token; as seen in the last block_size tokens."""
        rows, t = tokens.shape
        assert rows == self.rows and t >= 1, f"expected ({self.rows}, t>=1) tokens, got {tokens.shape}"
        transposed_weights.update(self.weights_t)  # read when a jit captures its graph (model.Linear)
        try:
            return self._next_logits(tokens)
        finally:
            for key in self.weights_t:
                transposed_weights.pop(key, None)

    def _next_logits(self, tokens: np.ndarray) -> np.ndarray:
        rows, t = tokens.shape
        n = 0 if self.cached is None else self.cached.shape[1]
        if t <= self.block_size and n == t - 1 and n > 0 and np.array_equal(self.cached, tokens[:, :n]):
            # one new token at position n, the rest from the cache
            write(self.step_idx, tokens[:, n:])
            logits = read(self.step_jit(self.start_pos.bind(n)))[:, 0, :]
        else:
            # the prompt, or past block_size the cropped window (nanoGPT's crop): the whole window, fixed shape
            window = tokens[:, -self.block_size :]
            padded = np.zeros((rows, self.block_size), dtype=np.int32)
            padded[:, : window.shape[1]] = window  # right padding: causal attention keeps it from the positions read
            write(self.window_idx, padded)
            t, tokens = window.shape[1], window
            if t == self.block_size:  # a full window, as always past block_size: only its last position is read
                logits = read(self.last_jit())[:, 0, :]
            else:
                logits = read(self.prefill_jit())[:, t - 1, :]
        self.cached = tokens.copy() if t < self.block_size else None  # a full window: the next token slides it
        return logits

