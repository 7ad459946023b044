"""A key/value cache for sampling: the buffers and positions that model.py's forward reads and writes through `cache=`.

nanoGPT's generate recomputes the whole (cropped) context for every token. Here, while the text fits in block_size,
the prompt is prefilled once and each new token runs one fixed-shape jitted step with a symbolic start position.
Past block_size the window slides, every position's embedding changes, so nothing cached stays valid: each token then
runs the full window, exactly nanoGPT's crop-and-recompute.
"""
import numpy as np
from tinygrad import Tensor, TinyJit, Variable, dtypes
from tinygrad.nn.state import get_state_dict

from .device import read, write
from .layers import Linear, TransposedCopies
from .model import GPT


def _buffer(*shape: int, dtype=dtypes.float32) -> Tensor:
    return Tensor.zeros(*shape, dtype=dtype).contiguous().realize().is_param_(False)


class LayerCache:
    """One block's keys and values at positions 0..block_size-1: (B, nh, block_size, hs) each."""

    def __init__(self, cache: "KVCache", shape: tuple[int, ...]):
        self.cache, self.k, self.v = cache, _buffer(*shape), _buffer(*shape)

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Store the keys and values k, v (B, nh, T, hs) of positions start_pos..start_pos+T-1: a whole window (T is
        block_size, from 0) or one token. Returns all keys, all values, and the mask (.., T, block_size) of the
        positions each of the T queries sees."""
        T, n, pos = k.shape[2], self.k.shape[2], self.cache.start_pos
        positions = Tensor.arange(n)
        if T == n:  # the whole window
            self.k.assign(k.contiguous()).realize()
            self.v.assign(v.contiguous()).realize()
            return self.k, self.v, Tensor.ones(n, n, dtype=dtypes.bool).tril()  # causal: position t sees 0..t
        assert T == 1, f"the cache takes a whole window of {n} or one token, not {T}"
        at = positions.reshape(1, 1, n, 1) == pos
        self.k.assign(at.where(k, self.k)).realize()
        self.v.assign(at.where(v, self.v)).realize()
        return self.k, self.v, (positions <= pos).reshape(1, 1, 1, n)  # the cached tokens and this one


class KVCache:
    """Next-token logits for `rows` sequences of a GPT, reusing the keys and values of the tokens seen before."""

    def __init__(self, model: GPT, rows: int):
        cfg = model.config
        self.model, self.rows, self.block_size = model, rows, cfg.block_size
        shape = (rows, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head)  # (B, nh, block_size, hs)
        self.layers = [LayerCache(self, shape) for _ in range(cfg.n_layer)]
        self.start_pos: int | Variable = 0  # the position of the first token the forward writes
        self.position = Variable("start_pos", 0, cfg.block_size - 1)
        # the jitted steps read their tokens from these buffers: refilling them in place skips a Tensor per call
        self.window_idx = _buffer(rows, cfg.block_size, dtype=dtypes.int32)
        self.step_idx = _buffer(rows, 1, dtype=dtypes.int32)
        self.prefill_jit = TinyJit(lambda: model(self.window_idx, cache=self)[0].realize())
        self.last_jit = TinyJit(lambda: model(self.window_idx, cache=self, last_only=True)[0].realize())
        self.step_jit = TinyJit(self._step)
        # each Linear's weight transposed once (refresh), not in every forward: a full window's forward made 17 copies
        self.weights_t = TransposedCopies(list(get_state_dict(model, tensor_type=Linear).values()))
        self.vocab_size = cfg.vocab_size
        self.cached = None  # the tokens (rows, n) whose keys and values the cache holds at positions 0..n-1

    def _step(self, start_pos: Variable) -> Tensor:
        """step_idx (B, 1) int32, the token at position start_pos: logits (B, 1, V) of the token after it."""
        self.start_pos = start_pos
        try:
            return self.model(self.step_idx, cache=self)[0].realize()
        finally:
            self.start_pos = 0

    def refresh(self):
        """Copy the model's current weights into the transposed copies the jitted steps read (Generator.generate does,
        before each generation)."""
        self.weights_t.refresh()

    def next_logits(self, tokens: np.ndarray) -> np.ndarray:
        """tokens (rows, t) int: logits (rows, V) of each row's next token; as seen in the last block_size tokens."""
        rows, t = tokens.shape
        assert rows == self.rows and t >= 1, f"expected ({self.rows}, t>=1) tokens, got {tokens.shape}"
        with self.weights_t:  # the Linears read the kept copies when a jit captures its graph
            return self._next_logits(tokens)

    def _next_logits(self, tokens: np.ndarray) -> np.ndarray:
        rows, t = tokens.shape
        n = 0 if self.cached is None else self.cached.shape[1]
        if t <= self.block_size and n == t - 1 and n > 0 and np.array_equal(self.cached, tokens[:, :n]):
            # one new token at position n, the rest from the cache
            write(self.step_idx, tokens[:, n:])
            logits = read(self.step_jit(self.position.bind(n)))[:, 0, :]
        elif t <= self.block_size // 16:
            # a short prompt: one step per token costs less than the whole window (GPT-2's is 1024 positions)
            for pos in range(t):
                write(self.step_idx, tokens[:, pos : pos + 1])
                logits = read(self.step_jit(self.position.bind(pos)))[:, 0, :]
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
        return logits[:, : self.vocab_size]  # without the columns TransposedCopies pads a large lm_head with
