"""PyTorch's CPU random number generator, reproduced in numpy: torch.manual_seed(seed), then randint, uniform_, normal_.

nanoGPT draws its initial weights and every batch offset from this one generator. Drawing them the same way here, the
same seed gives the same weights and the same batches as nanoGPT on a CPU, so a run can be compared with nanoGPT's
number for number. Written from PyTorch's sources (aten/src/ATen/core/{MT19937RNGEngine,DistributionsHelper,
TransformationHelper}.h, aten/src/ATen/native/cpu/DistributionTemplates.h) and checked against torch 2.13 in
tests/test_torch_rng.py: integers and uniforms exactly, normals to ~1e-6 of their std (torch's vectorized float32
log/cos/sin round differently from numpy's).
"""
import numpy as np

CHUNK = 1 << 22  # draws discarded per numpy call when skipping values that are drawn and then overwritten


class TorchGenerator:
    """torch's default CPU generator after torch.manual_seed(seed): mt19937 seeded with the low 32 bits of seed."""

    def __init__(self, seed: int):
        self.bits = np.random.MT19937(0)
        self.bits._legacy_seeding(seed & 0xFFFFFFFF)  # mt19937's init_genrand(seed), as torch's engine is seeded
        self.next_normal = None  # the cached second Box-Muller value of torch's scalar normal sampler

    def random(self, n: int) -> np.ndarray:
        """n 32-bit outputs (uint64): generator->random()."""
        return self.bits.random_raw(n)

    def random64(self, n: int) -> np.ndarray:
        """n 64-bit outputs: two 32-bit draws each, the first one high (generator->random64())."""
        r = self.bits.random_raw(2 * n)
        return (r[0::2] << np.uint64(32)) | r[1::2]

    def skip(self, n: int):
        """Draw and discard n 32-bit values (a tensor nanoGPT initializes and then overwrites)."""
        for i in range(0, n, CHUNK):
            self.bits.random_raw(min(CHUNK, n - i))

    def skip_normal(self, n: int):
        """Take the draws of normal(n) without computing the values."""
        if n < 16:
            self.normal(n)
        else:
            self.skip(n + (16 if n % 16 else 0))

    def randint(self, high: int, n: int) -> np.ndarray:
        """torch.randint(high, (n,)) as int64: a draw modulo high, 64-bit draws from a range of 2**28 up."""
        r = self.random64(n) if high >= 1 << 28 else self.random(n)
        return (r % np.uint64(high)).astype(np.int64)

    def uniform(self, n: int, low: float = 0.0, high: float = 1.0) -> np.ndarray:
        """tensor.uniform_(low, high) for n float32 values: the low 24 bits of a draw, scaled in double precision."""
        u = (self.random(n) & np.uint64((1 << 24) - 1)).astype(np.float64) * 2.0**-24
        return (u * (np.float32(high) - np.float32(low)) + np.float32(low)).astype(np.float32)

    def normal(self, n: int, mean: float = 0.0, std: float = 1.0) -> np.ndarray:
        """tensor.normal_(mean, std) for n float32 values (a contiguous tensor).

        16 values and more: n uniforms, Box-Muller over blocks of 16 (8 pairs); when n is not a multiple of 16, the last
        16 are drawn again. Fewer: torch's scalar sampler, two 53-bit uniforms per pair, the second value cached."""
        if n < 16:
            return np.array([self._scalar_normal() * std + mean for _ in range(n)], dtype=np.float32)
        out = self.uniform(n).astype(np.float64)
        u = out[: n - n % 16].reshape(-1, 2, 8)  # blocks of 16: u1 candidates, then u2
        out[: n - n % 16] = _box_muller(u[:, 0], u[:, 1]).reshape(-1)
        if n % 16:
            tail = self.uniform(16).astype(np.float64)
            out[n - 16 :] = _box_muller(tail[None, :8], tail[None, 8:]).reshape(-1)
        return (out * std + mean).astype(np.float32)

    def _scalar_normal(self) -> float:
        if self.next_normal is not None:
            z, self.next_normal = self.next_normal, None
            return z
        u1, u2 = (self.random64(2) & np.uint64((1 << 53) - 1)).astype(np.float64) * 2.0**-53
        r, theta = np.sqrt(-2.0 * np.log1p(-u2)), 2.0 * np.pi * u1
        self.next_normal = float(r * np.sin(theta))
        return float(r * np.cos(theta))

    def get_state(self) -> np.ndarray:
        """The generator's position as uint32: mt19937's 624 words, its index, and whether a normal is cached (+ it)."""
        s = self.bits.state["state"]
        cached = np.array([self.next_normal or 0.0], dtype=np.float64).view(np.uint32)
        return np.concatenate([s["key"], [s["pos"], self.next_normal is not None], cached]).astype(np.uint32)

    def set_state(self, state: np.ndarray):
        state = np.asarray(state, dtype=np.uint32)
        self.bits.state = {"bit_generator": "MT19937", "state": {"key": state[:624], "pos": int(state[624])}}
        self.next_normal = float(state[626:628].view(np.float64)[0]) if state[625] else None


def _box_muller(u1: np.ndarray, u2: np.ndarray) -> np.ndarray:
    """(m, 8) uniform pairs to (m, 16) normals: radius * cos in the first 8, radius * sin in the last (normal_fill_16)."""
    radius, theta = np.sqrt(-2.0 * np.log(1.0 - u1)), 2.0 * np.pi * u2
    return np.concatenate([radius * np.cos(theta), radius * np.sin(theta)], axis=1)
