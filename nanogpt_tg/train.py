"""The training loop: nanoGPT's train.py in tinygrad, one function in nanoGPT's order (lr, eval/checkpoint, step, log)."""
import json
import math
import signal
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
from tinygrad import Context, Device, Tensor, TinyJit, dtypes
from tinygrad.nn.optim import AdamW, OptimizerGroup

from .bigram import build_model
from .checkpoint import load_checkpoint, load_optimizer, load_weights, save_checkpoint
from .config import TrainConfig
from .data import get_batch, load_split
from .device import set_device
from .model import GPT
from .tokenizer import from_meta, load as load_tokenizer


def get_lr(it: int, cfg: TrainConfig) -> float:
    """Learning rate decay scheduler (linear warmup, cosine down to min_lr), exactly nanoGPT's."""
    if not cfg.decay_lr:
        return cfg.learning_rate
    # 1) linear warmup for warmup_iters steps
    if it < cfg.warmup_iters:
        return cfg.learning_rate * (it + 1) / (cfg.warmup_iters + 1)
    # 2) if it > lr_decay_iters, return min learning rate
    if it > cfg.lr_decay_iters:
        return cfg.min_lr
    # 3) in between, use cosine decay down to min learning rate
    decay_ratio = (it - cfg.warmup_iters) / (cfg.lr_decay_iters - cfg.warmup_iters)
    assert 0 <= decay_ratio <= 1
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))  # coeff ranges 0..1
    return cfg.min_lr + coeff * (cfg.learning_rate - cfg.min_lr)


def configure_optimizer(model: GPT, cfg: TrainConfig) -> OptimizerGroup:
    """AdamW with weight decay on 2-D tensors (matmul weights, embeddings) only, as nanoGPT's configure_optimizers."""
    params = model.parameters()
    decay = [p for p in params if len(p.shape) >= 2]
    nodecay = [p for p in params if len(p.shape) < 2]
    print(f"num decayed parameter tensors: {len(decay)}, with {sum(p.numel() for p in decay):,} parameters")
    print(f"num non-decayed parameter tensors: {len(nodecay)}, with {sum(p.numel() for p in nodecay):,} parameters")
    betas = dict(b1=cfg.beta1, b2=cfg.beta2, eps=1e-8)
    groups = [AdamW(decay, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, **betas)]
    if nodecay:  # bias=False models with no LayerNorm bias still have LayerNorm weights; this is for safety
        groups.append(AdamW(nodecay, lr=cfg.learning_rate, weight_decay=0.0, **betas))
    return OptimizerGroup(*groups)


def set_lr(optimizer: OptimizerGroup, lr: float):
    """Write the learning rate into each optimizer's lr tensor, which the jitted step reads (a float would be baked in)."""
    for opt in optimizer.optimizers:
        opt.lr.assign(Tensor([lr], dtype=opt.lr.dtype, device=opt.lr.device)).realize()


def clip_grad_norm(params: list[Tensor], max_norm: float) -> Tensor:
    """Scale all gradients so their global L2 norm is at most max_norm (torch's clip_grad_norm_). Returns the norm."""
    norm = Tensor.stack(*[p.grad.float().square().sum() for p in params]).sum().sqrt()
    scale = (max_norm / (norm + 1e-6)).minimum(1.0)
    for p in params:
        p.grad.assign(p.grad * scale.cast(p.grad.dtype))
    return norm


def make_train_step(model: GPT, optimizer: OptimizerGroup, data: Tensor, cfg: TrainConfig):
    """One jitted step: sample gradient_accumulation_steps batches on the device, accumulate, clip, AdamW."""
    params = optimizer.params

    @TinyJit
    @Context(TRAINING=1)
    def train_step() -> Tensor:
        optimizer.zero_grad()
        for _ in range(cfg.gradient_accumulation_steps):
            x, y = get_batch(data, cfg.batch_size, cfg.block_size)
            _, loss = model(x, y)
            (loss / cfg.gradient_accumulation_steps).backward()  # scale the loss to account for gradient accumulation
        if cfg.grad_clip != 0.0:
            clip_grad_norm(params, cfg.grad_clip)
        return loss.realize(*optimizer.schedule_step())  # the last micro-step's loss, as nanoGPT logs it

    return train_step


def make_eval_step(model: GPT, data: Tensor, cfg: TrainConfig):
    """A jitted forward pass on one random batch of a split; one jit per split, since shapes are baked in."""

    @TinyJit
    def eval_step() -> Tensor:
        x, y = get_batch(data, cfg.batch_size, cfg.block_size)
        return model(x, y)[1].realize()

    return eval_step


def estimate_loss(eval_steps: dict, eval_iters: int) -> dict[str, float]:
    """Mean loss over eval_iters random batches of each split (nanoGPT's estimate_loss)."""
    return {split: float(np.mean([step().item() for _ in range(eval_iters)])) for split, step in eval_steps.items()}


class Interrupt:
    """Ctrl-C / SIGTERM: the first asks the loop to save and stop after the current step, a second exits at once."""

    def __init__(self):
        self.requested = None

    def __enter__(self):
        self.previous = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def handle(self, signum, frame):
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        print(f"\n{self.requested}: saving a checkpoint after this step (press Ctrl-C again to quit without saving)")

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def train(cfg: TrainConfig) -> dict:
    """Train per cfg (nanoGPT's train.py); returns iter_num, best_val_loss, the eval losses and the model."""
    device = set_device(cfg.device)
    tokens_per_iter = cfg.gradient_accumulation_steps * cfg.batch_size * cfg.block_size
    print(f"tokens per iteration will be: {tokens_per_iter:,}")
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    Tensor.manual_seed(cfg.seed)

    # data: the token files as tensors on the device; windows are sampled inside the jitted steps
    data_dir = Path("data") / cfg.dataset
    meta_path = data_dir / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found; prepare the dataset first: python data/{cfg.dataset}/prepare.py"
                                f" (or python -m nanogpt_tg.prepare --input FILE --dataset {cfg.dataset})")
    tokenizer = load_tokenizer(meta_path)
    print(f"found vocab_size = {tokenizer.vocab_size} (inside {meta_path})")
    splits = {split: load_split(data_dir, split) for split in ("train", "val")}
    for split, data in splits.items():
        if data.shape[0] <= cfg.block_size:
            raise ValueError(f"block_size={cfg.block_size} is too large for {data_dir}/{split}.bin ({data.shape[0]:,} "
                             f"tokens); use --block_size={data.shape[0] - 1} or less, or a longer text")

    # model init
    iter_num, best_val_loss = 0, 1e9
    model_args = dict(n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, block_size=cfg.block_size,
                      bias=cfg.bias, vocab_size=tokenizer.vocab_size, dropout=cfg.dropout)
    arrays = None
    if cfg.init_from == "scratch":
        print("Initializing a new model from scratch")
    elif cfg.init_from == "resume":
        print(f"Resuming training from {out_dir}")
        arrays, info = load_checkpoint(out_dir)
        # force these config attributes to be equal otherwise we can't even resume training
        for k in ["n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size"]:
            model_args[k] = info["model_args"][k]
        if "meta" in info and from_meta(info["meta"]).meta() != tokenizer.meta():
            raise ValueError(f"the checkpoint in {out_dir} was trained on another vocabulary than {meta_path}; "
                             f"resume with the dataset it was trained on ({info['config'].get('dataset')})")
        if info["config"].get("model", "gpt") != cfg.model:
            raise ValueError(f"the checkpoint in {out_dir} holds a {info['config'].get('model', 'gpt')} model; "
                             f"resume with --model={info['config'].get('model', 'gpt')}")
        iter_num, best_val_loss = info["iter_num"], info["best_val_loss"]
        cfg = replace(cfg, block_size=model_args["block_size"])
    else:
        hint = " (loading OpenAI's GPT-2 weights is not supported yet)" if cfg.init_from.startswith("gpt2") else ""
        raise ValueError(f"--init_from={cfg.init_from} is not supported{hint}; use scratch or resume")
    model = build_model(cfg.model, model_args, seed=cfg.seed)
    optimizer = configure_optimizer(model, cfg)
    if arrays is not None:
        load_weights(model, arrays, out_dir / "ckpt.safetensors")
        load_optimizer(model, optimizer, arrays, out_dir / "ckpt.safetensors")
        Tensor.manual_seed(cfg.seed + iter_num)  # fresh batches, not a replay of the first run's

    train_step = make_train_step(model, optimizer, splits["train"], cfg)
    eval_steps = {split: make_eval_step(model, data, cfg) for split, data in splits.items()}

    def checkpoint():
        info = dict(model_args=model_args, iter_num=iter_num, best_val_loss=best_val_loss, config=asdict(cfg),
                    meta=tokenizer.meta(), device=device)
        print(f"saving checkpoint to {out_dir}")
        save_checkpoint(out_dir, model, optimizer, info)

    # training loop
    losses_log = []
    t0 = time.time()
    local_iter_num = 0  # number of iterations in the lifetime of this process
    running_mfu = -1.0
    with Interrupt() as interrupt:
        while True:
            # determine and set the learning rate for this iteration
            lr = get_lr(iter_num, cfg)
            set_lr(optimizer, lr)

            # evaluate the loss on train/val sets and write checkpoints
            if iter_num % cfg.eval_interval == 0:
                losses = estimate_loss(eval_steps, cfg.eval_iters)
                print(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
                losses_log.append({"iter": iter_num, **losses})
                if not math.isfinite(losses["val"]):
                    raise FloatingPointError(f"val loss is {losses['val']} at iter {iter_num}; training diverged. "
                                             f"The last good checkpoint in {out_dir} is untouched; lower --learning_rate")
                if losses["val"] < best_val_loss or cfg.always_save_checkpoint:
                    best_val_loss = min(best_val_loss, losses["val"]) if not cfg.always_save_checkpoint else losses["val"]
                    if iter_num > 0:
                        checkpoint()
            if iter_num == 0 and cfg.eval_only:
                break

            # forward backward update, with optional gradient accumulation, all in one jitted call
            loss = train_step()
            lossf = loss.item()  # also waits for the step to finish

            # timing and logging
            t1 = time.time()
            dt = t1 - t0
            t0 = t1
            if iter_num % cfg.log_interval == 0:
                if local_iter_num >= 5:  # let the training loop settle a bit
                    mfu = model.estimate_mfu(cfg.batch_size * cfg.gradient_accumulation_steps, dt)
                    running_mfu = mfu if running_mfu == -1.0 else 0.9 * running_mfu + 0.1 * mfu
                print(f"iter {iter_num}: loss {lossf:.4f}, time {dt * 1000:.2f}ms, mfu {running_mfu * 100:.2f}%")
                if not math.isfinite(lossf):
                    raise FloatingPointError(f"loss is {lossf} at iter {iter_num}; training diverged. The last good "
                                             f"checkpoint in {out_dir} is untouched; lower --learning_rate")
            iter_num += 1
            local_iter_num += 1

            if interrupt.requested:
                checkpoint()
                print(f"stopped by {interrupt.requested} at iter {iter_num}; resume with --init_from=resume")
                sys.exit(130)
            # termination conditions
            if iter_num > cfg.max_iters:
                break
    return {"iter_num": iter_num, "best_val_loss": best_val_loss, "losses": losses_log, "model": model}
