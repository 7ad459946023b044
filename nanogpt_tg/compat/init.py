"""nanoGPT's initial weights, drawn from PyTorch's CPU generator in nanoGPT's order (tests/test_torch_rng.py).

nanoGPT's GPT.__init__ draws three times: the layers' own init as they are built (nn.Embedding N(0, 1), nn.Linear
kaiming-uniform weight and bias), then N(0, 0.02) over the modules in order (lm_head last: the tied wte gets that
draw), then the c_proj weights again. Each draw that is overwritten is still taken, so a seed gives nanoGPT's weights.
"""
import math

import numpy as np

from .torch_rng import TorchGenerator


def nanogpt_init(config, gen: TorchGenerator) -> dict[str, np.ndarray]:
    """The initial weight matrices of a GPT of config (a GPTConfig), by nanoGPT's parameter names, flat float32.
    Biases (zero) and LayerNorm weights (one) are not listed."""
    C, V, T = config.n_embd, config.vocab_size, config.block_size
    linears = [("attn.c_attn", 3 * C, C), ("attn.c_proj", C, C), ("mlp.c_fc", 4 * C, C), ("mlp.c_proj", C, 4 * C)]
    # 1) as built: the values are overwritten below, the draws still count
    gen.skip_normal(V * C), gen.skip_normal(T * C)  # wte, wpe
    for _ in range(config.n_layer):
        for _, n_out, n_in in linears:
            gen.skip(n_out * n_in + (n_out if config.bias else 0))
    gen.skip(V * C)  # lm_head
    # 2) self.apply(self._init_weights): every Linear and Embedding weight N(0, 0.02), in module order
    # (wte's draw and the c_proj weights' are overwritten below: their draws are taken, their values not computed)
    gen.skip_normal(V * C)
    w = {"transformer.wpe.weight": gen.normal(T * C, 0.0, 0.02)}
    for i in range(config.n_layer):
        for name, n_out, n_in in linears:
            if name.endswith("c_proj"):
                gen.skip_normal(n_out * n_in)
            else:
                w[f"transformer.h.{i}.{name}.weight"] = gen.normal(n_out * n_in, 0.0, 0.02)
    w["transformer.wte.weight"] = gen.normal(V * C, 0.0, 0.02)  # lm_head, tied to wte
    # 3) apply special scaled init to the residual projections, per GPT-2 paper
    for i in range(config.n_layer):
        for name, n_out, n_in in linears:
            if name.endswith("c_proj"):
                w[f"transformer.h.{i}.{name}.weight"] = gen.normal(n_out * n_in, 0.0, 0.02 / math.sqrt(2 * config.n_layer))
    return w
