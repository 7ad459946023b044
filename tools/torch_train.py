"""nanoGPT's train.py loop in PyTorch (CPU, eager), over this project's data files and config keys.

A side-by-side reference: `python tools/torch_train.py <same args as train.py>` prints nanoGPT's log lines.
Needs torch (pip install torch==2.13.0).
"""
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from nanogpt_tg.config import TrainConfig, cli  # noqa: E402
from nanogpt_tg.tokenizer import CharTokenizer  # noqa: E402
from nanogpt_tg.train import get_lr  # noqa: E402
from torch_nanogpt import GPT, GPTConfig  # noqa: E402


def main(cfg: TrainConfig) -> dict[str, list]:
    """Train per cfg; returns the logged losses: {"iter": [(iter, loss)], "eval": [(iter, train loss, val loss)]}."""
    torch.manual_seed(cfg.seed)
    data_dir = Path("data") / cfg.dataset
    data = {s: np.memmap(data_dir / f"{s}.bin", dtype=np.uint16, mode="r") for s in ("train", "val")}
    vocab_size = CharTokenizer.load(data_dir / "meta.json").vocab_size

    def get_batch(split):
        d = data[split]
        ix = torch.randint(len(d) - cfg.block_size, (cfg.batch_size,))
        x = torch.stack([torch.from_numpy(d[i:i + cfg.block_size].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(d[i + 1:i + 1 + cfg.block_size].astype(np.int64)) for i in ix])
        return x, y

    model = GPT(GPTConfig(n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, block_size=cfg.block_size,
                          bias=cfg.bias, vocab_size=vocab_size, dropout=cfg.dropout))
    optimizer = model.configure_optimizers(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2), "cpu")

    @torch.no_grad()
    def estimate_loss():
        out = {}
        model.eval()
        for split in ("train", "val"):
            out[split] = float(np.mean([model(*get_batch(split))[1].item() for _ in range(cfg.eval_iters)]))
        model.train()
        return out

    log = {"iter": [], "eval": []}
    iter_num, t0, start = 0, time.time(), time.time()
    x, y = get_batch("train")
    while True:
        lr = get_lr(iter_num, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if iter_num % cfg.eval_interval == 0:
            losses = estimate_loss()
            print(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}", flush=True)
            log["eval"].append((iter_num, losses["train"], losses["val"]))
        for _ in range(cfg.gradient_accumulation_steps):
            _, loss = model(x, y)
            loss = loss / cfg.gradient_accumulation_steps
            x, y = get_batch("train")
            loss.backward()
        if cfg.grad_clip != 0.0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t1 = time.time()
        dt, t0 = t1 - t0, t1
        if iter_num % cfg.log_interval == 0:
            lossf = loss.item() * cfg.gradient_accumulation_steps
            print(f"iter {iter_num}: loss {lossf:.4f}, time {dt * 1000:.2f}ms")
            log["iter"].append((iter_num, lossf))
        iter_num += 1
        if iter_num > cfg.max_iters:
            break
    print(f"wall time {time.time() - start:.1f}s")
    return log


if __name__ == "__main__":
    main(cli(TrainConfig, "tools/torch_train.py", "[config/PRESET.py] [--key=value ...]"))
