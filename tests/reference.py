"""An independent numpy (float64) GPT forward pass, written from nanoGPT's model.py, for parity tests."""
import math

import numpy as np


def layernorm(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps) * w
    return y + b if b is not None else y


def gelu(x):
    """Exact GELU, 0.5 * x * (1 + erf(x / sqrt(2)))."""
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def linear(x, sd, name):
    y = x @ sd[f"{name}.weight"].T
    return y + sd[f"{name}.bias"] if f"{name}.bias" in sd else y


def forward(sd: dict, idx: np.ndarray, n_head: int) -> np.ndarray:
    """Logits (B, T, V) of nanoGPT's GPT for weights sd (nanoGPT names, lm_head tied to wte) and tokens idx (B, T)."""
    B, T = idx.shape
    n_layer = len({k.split(".")[2] for k in sd if k.startswith("transformer.h.")})
    x = sd["transformer.wte.weight"][idx] + sd["transformer.wpe.weight"][:T]
    C = x.shape[-1]
    hs = C // n_head
    mask = np.tril(np.ones((T, T), dtype=bool))
    for i in range(n_layer):
        p = f"transformer.h.{i}"
        h = layernorm(x, sd[f"{p}.ln_1.weight"], sd.get(f"{p}.ln_1.bias"))
        qkv = linear(h, sd, f"{p}.attn.c_attn")
        q, k, v = (qkv[..., j * C:(j + 1) * C].reshape(B, T, n_head, hs).transpose(0, 2, 1, 3) for j in range(3))
        att = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hs)
        att = np.where(mask, att, -np.inf)
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        y = (att @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
        x = x + linear(y, sd, f"{p}.attn.c_proj")
        h = layernorm(x, sd[f"{p}.ln_2.weight"], sd.get(f"{p}.ln_2.bias"))
        x = x + linear(gelu(linear(h, sd, f"{p}.mlp.c_fc")), sd, f"{p}.mlp.c_proj")
    x = layernorm(x, sd["transformer.ln_f.weight"], sd.get("transformer.ln_f.bias"))
    return x @ sd["transformer.wte.weight"].T


def cross_entropy(logits: np.ndarray, targets: np.ndarray) -> float:
    """Mean cross-entropy of logits (B, T, V) against targets (B, T)."""
    z = logits.reshape(-1, logits.shape[-1])
    z = z - z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return float(-logp[np.arange(len(z)), targets.reshape(-1)].mean())


def numerical_grads(sd: dict, idx: np.ndarray, targets: np.ndarray, n_head: int, eps: float = 1e-5) -> dict:
    """Central-difference gradients of the loss with respect to every weight, in float64."""
    grads = {}
    for name, w in sd.items():
        g = np.zeros_like(w)
        flat, gflat = w.reshape(-1), g.reshape(-1)
        for j in range(flat.size):
            old = flat[j]
            flat[j] = old + eps
            up = cross_entropy(forward(sd, idx, n_head), targets)
            flat[j] = old - eps
            down = cross_entropy(forward(sd, idx, n_head), targets)
            flat[j] = old
            gflat[j] = (up - down) / (2 * eps)
        grads[name] = g
    return grads
