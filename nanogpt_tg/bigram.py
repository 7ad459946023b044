"""Bigram baseline: the next token's logits are the row of a V x V table picked by the current token.

The model Karpathy's "Let's build GPT" starts from, before attention. It goes through the same train, sample and
checkpoint code as the GPT; build_model picks one of the two by name (--model=gpt|bigram).
"""
from dataclasses import dataclass

import numpy as np
from tinygrad import Tensor
from tinygrad.nn import Embedding
from tinygrad.nn.state import get_parameters, get_state_dict

from .model import A100_BF16_FLOPS, GPT, GPTConfig
from .compat.torch_rng import TorchGenerator

MODELS = ("gpt", "bigram")


@dataclass(frozen=True)
class BigramConfig:
    vocab_size: int = 65
    block_size: int = 256  # the sampler's window only: each prediction looks at one token


class Bigram:
    def __init__(self, config: BigramConfig, verbose: bool = True):
        self.config = config
        # each token reads off the logits for the next token directly from a lookup table
        self.token_embedding_table = Embedding(config.vocab_size, config.vocab_size)
        # zeros: every next token equally likely at init, so the first loss is exactly ln(vocab_size)
        self.token_embedding_table.weight.replace(Tensor(np.zeros((config.vocab_size,) * 2, dtype=np.float32)))
        Tensor.realize(*self.parameters())
        if verbose:
            print(f"number of parameters: {self.get_num_params() / 1e6:.2f}M")

    def state_dict(self) -> dict[str, Tensor]:
        return get_state_dict(self)

    def parameters(self) -> list[Tensor]:
        return get_parameters(self.state_dict())

    def get_num_params(self, non_embedding: bool = True) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_iter(self, fwdbwd_per_iter: int) -> float:
        """6 flops per table entry read (one row of V per token, forward and backward)."""
        return 6 * self.config.vocab_size * self.config.block_size * fwdbwd_per_iter

    def estimate_mfu(self, fwdbwd_per_iter: int, dt: float) -> float:
        """As GPT.estimate_mfu."""
        return self.flops_per_iter(fwdbwd_per_iter) / dt / A100_BF16_FLOPS

    def __call__(self, idx: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """idx, targets: (B, T) int32. Returns logits (B, T, vocab_size) and the mean cross-entropy loss (or None)."""
        logits = self.token_embedding_table(idx)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = logits.reshape(-1, logits.shape[-1]).sparse_categorical_crossentropy(targets.reshape(-1))
        return logits, loss


def build_model(kind: str, model_args: dict, verbose: bool = True, generator: TorchGenerator | None = None) -> GPT | Bigram:
    """The model --model names, from the checkpoint's model_args (a bigram reads vocab_size and block_size only).

    A GPT draws its initial weights from generator (default: seed 1337), as nanoGPT does from torch's."""
    if kind == "gpt":
        return GPT(GPTConfig(**model_args), verbose=verbose, generator=generator)
    if kind == "bigram":
        return Bigram(BigramConfig(model_args["vocab_size"], model_args["block_size"]), verbose=verbose)
    raise ValueError(f"--model={kind} is not known; use one of {', '.join(MODELS)}")
