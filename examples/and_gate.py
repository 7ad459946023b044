"""Getting started with tinygrad: one linear layer learns the AND gate with plain SGD.

    python examples/and_gate.py

The four input pairs go through y = sigmoid(w . x + b); binary cross-entropy and SGD move w and b until the model
says 1 only for (1, 1). Runs in seconds on a CPU (tinygrad's CPU device needs clang).
"""
import time

import numpy as np
from tinygrad import Context, Tensor, TinyJit
from tinygrad.nn import Linear
from tinygrad.nn.optim import SGD
from tinygrad.nn.state import get_parameters

X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)  # the truth table's inputs
Y = np.array([[0], [0], [0], [1]], dtype=np.float32)  # a AND b


def main(steps: int = 300, lr: float = 1.0, seed: int = 0) -> dict:
    """Train, print the loss every 50 steps and the learned table; returns the final loss, accuracy and time."""
    t0 = time.time()
    Tensor.manual_seed(seed)
    model = Linear(2, 1)  # 2 weights and a bias
    Tensor.realize(*get_parameters(model))  # realize before the jit captures, or it keeps reading the initial values
    opt = SGD(get_parameters(model), lr=lr)
    x, y = Tensor(X), Tensor(Y)

    @TinyJit
    @Context(TRAINING=1)
    def step() -> Tensor:
        opt.zero_grad()
        loss = model(x).binary_crossentropy_logits(y)  # sigmoid and cross-entropy in one, numerically stable
        loss.backward()
        return loss.realize(*opt.schedule_step())

    for i in range(steps + 1):
        loss = step().item()
        if i % 50 == 0:
            print(f"step {i}: loss {loss:.4f}")
    probs = model(x).sigmoid().numpy()
    accuracy = float(((probs > 0.5) == (Y > 0.5)).mean())
    for (a, b), p in zip(X.astype(int), probs[:, 0]):
        print(f"{a} AND {b} -> {p:.3f} ({int(p > 0.5)})")
    seconds = time.time() - t0
    print(f"final loss {loss:.4f}, accuracy {accuracy:.0%}, {seconds:.1f}s")
    return {"loss": loss, "accuracy": accuracy, "seconds": seconds}


if __name__ == "__main__":
    main()
