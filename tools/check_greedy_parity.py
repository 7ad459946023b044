"""Greedy-sampling parity with PyTorch nanoGPT (issue 3's "done when"): train the torch reference on Tiny Shakespeare,
save a real nanoGPT ckpt.pt, then sample greedily from it with nanoGPT's generate and with this project's loader and
Generator, and report the fraction of equal characters. Needs torch and data/shakespeare_char/{train,val}.bin.

  python data/shakespeare_char/prepare.py --input /path/to/tinyshakespeare/input.txt
  python tools/check_greedy_parity.py --work_dir=/tmp/nanogpt_parity
"""
import argparse
import json
import math
import os
import pickle
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]
from torch_nanogpt import GPT as TorchGPT, GPTConfig as TorchGPTConfig  # noqa: E402


def train_reference(args, data_dir: Path, out_dir: Path, vocab_size: int):
    """nanoGPT's train.py with config/train_shakespeare_char.py's settings, shrunk; saves ckpt.pt as nanoGPT does."""
    config = dict(out_dir=str(out_dir), eval_interval=args.iters, log_interval=50, eval_iters=20, eval_only=False,
                  always_save_checkpoint=False, init_from="scratch", wandb_log=False, wandb_project="shakespeare-char",
                  wandb_run_name="mini-gpt", dataset="shakespeare_char", gradient_accumulation_steps=1, batch_size=32,
                  block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0, bias=False, learning_rate=1e-3,
                  max_iters=args.iters, weight_decay=1e-1, beta1=0.9, beta2=0.99, grad_clip=1.0, decay_lr=True,
                  warmup_iters=30, lr_decay_iters=args.iters, min_lr=1e-4, backend="nccl", device="cpu",
                  dtype="float32", compile=False)
    torch.manual_seed(args.seed)
    data = {s: np.fromfile(data_dir / f"{s}.bin", dtype=np.uint16).astype(np.int64) for s in ("train", "val")}

    def get_batch(split):
        d = data[split]
        ix = torch.randint(len(d) - config["block_size"], (config["batch_size"],)).tolist()
        x = torch.stack([torch.from_numpy(d[i:i + config["block_size"]]) for i in ix])
        y = torch.stack([torch.from_numpy(d[i + 1:i + 1 + config["block_size"]]) for i in ix])
        return x, y

    def get_lr(it):
        if it < config["warmup_iters"]:
            return config["learning_rate"] * (it + 1) / (config["warmup_iters"] + 1)
        ratio = (it - config["warmup_iters"]) / (config["lr_decay_iters"] - config["warmup_iters"])
        coeff = 0.5 * (1.0 + math.cos(math.pi * min(ratio, 1.0)))
        return config["min_lr"] + coeff * (config["learning_rate"] - config["min_lr"])

    model_args = {k: config[k] for k in ("n_layer", "n_head", "n_embd", "block_size", "bias", "dropout")}
    model_args["vocab_size"] = vocab_size
    model = TorchGPT(TorchGPTConfig(**model_args))
    optimizer = model.configure_optimizers(config["weight_decay"], config["learning_rate"],
                                           (config["beta1"], config["beta2"]), "cpu")
    t0 = time.time()
    for it in range(args.iters):
        for group in optimizer.param_groups:
            group["lr"] = get_lr(it)
        _, loss = model(*get_batch("train"))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config["grad_clip"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if it % config["log_interval"] == 0:
            t1 = time.time()
            dt = (t1 - t0) * 1000 / (1 if it == 0 else config["log_interval"])
            print(f"iter {it}: loss {loss.item():.4f}, time {dt:.2f}ms/iter")
            t0 = t1
    model.eval()
    with torch.no_grad():
        val_loss = torch.stack([model(*get_batch("val"))[1] for _ in range(config["eval_iters"])]).mean()
    print(f"step {args.iters}: val loss {val_loss.item():.4f}")
    checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "model_args": model_args,
                  "iter_num": args.iters, "best_val_loss": val_loss, "config": config}
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, out_dir / "ckpt.pt")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work_dir", type=Path, default=Path("/tmp/nanogpt_parity"), help="scratch directory")
    parser.add_argument("--data_dir", type=Path, default=ROOT / "data" / "shakespeare_char")
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--max_new_tokens", type=int, default=500)
    parser.add_argument("--start", default="\n")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--retrain", action="store_true", help="train again even if WORK_DIR/out/ckpt.pt exists")
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    data_dir = args.data_dir.resolve()
    if not (data_dir / "train.bin").is_file():
        sys.exit(f"{data_dir / 'train.bin'} not found; run python data/shakespeare_char/prepare.py first")
    meta = json.loads((data_dir / "meta.json").read_text(encoding="utf-8"))

    # the layout a nanoGPT user has: out dir with ckpt.pt, data/shakespeare_char/meta.pkl as prepare.py pickles it
    work = args.work_dir.resolve()
    (work / "data" / "shakespeare_char").mkdir(parents=True, exist_ok=True)
    itos = meta["itos"]
    nanogpt_meta = {"vocab_size": len(itos), "itos": dict(enumerate(itos)), "stoi": {c: i for i, c in enumerate(itos)}}
    with open(work / "data" / "shakespeare_char" / "meta.pkl", "wb") as f:
        pickle.dump(nanogpt_meta, f)
    out_dir = work / "out-shakespeare-char"
    if args.retrain or not (out_dir / "ckpt.pt").is_file():
        train_reference(args, data_dir, out_dir, len(itos))

    # nanoGPT's sample.py: torch.load, strip _orig_mod., GPT.generate with --top_k=1 (its default temperature 0.8)
    checkpoint = torch.load(out_dir / "ckpt.pt", map_location="cpu", weights_only=True)
    ref = TorchGPT(TorchGPTConfig(**checkpoint["model_args"]))
    ref.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in checkpoint["model"].items()})
    ref.eval()
    start_ids = [itos.index(c) for c in args.start]
    torch.manual_seed(args.seed)
    y = ref.generate(torch.tensor([start_ids]), args.max_new_tokens, temperature=0.8, top_k=1)
    torch_text = "".join(itos[i] for i in y[0, len(start_ids):].tolist())

    # this project: the safe reader finds the vocabulary as nanoGPT does (data/<dataset>/meta.pkl from the cwd)
    from tinygrad import Device

    from nanogpt_tg.checkpoint import load_weights
    from nanogpt_tg.model import GPT, GPTConfig
    from nanogpt_tg.compat.nanogpt_ckpt import load_any_checkpoint
    from nanogpt_tg.sample import Generator
    from nanogpt_tg.tokenizer import CharTokenizer

    os.chdir(work)
    arrays, info = load_any_checkpoint(out_dir)
    model = GPT(GPTConfig(**{**info["model_args"], "dropout": 0.0}), verbose=False)
    load_weights(model, arrays, out_dir / "ckpt.pt")
    tok = CharTokenizer.from_meta(info["meta"])
    gen = Generator(model, 1)
    start = np.array([tok.encode(args.start)], dtype=np.int32)
    rng = np.random.default_rng(args.seed)
    texts = {"temperature=0": gen.generate(start, args.max_new_tokens, temperature=0.0),
             "top_k=1": gen.generate(start, args.max_new_tokens, temperature=0.8, top_k=1, rng=rng)}

    print(f"tinygrad device: {Device.DEFAULT}; checkpoint {out_dir / 'ckpt.pt'} (iter {info['iter_num']}, "
          f"val loss {info['best_val_loss']:.4f})")
    print(f"--- nanoGPT reference (torch {torch.__version__}, top_k=1):\n{torch_text}\n---")
    for name, out in texts.items():
        text = tok.decode(out[0, start.shape[1]:])
        equal = sum(a == b for a, b in zip(text, torch_text))
        first = next((i for i, (a, b) in enumerate(zip(text, torch_text)) if a != b), None)
        print(f"nanogpt_tg {name}: {equal}/{len(torch_text)} characters equal ({equal / len(torch_text):.2%}); "
              f"first difference at {first if first is not None else 'none'}")
    if any(tok.decode(out[0, start.shape[1]:]) != torch_text for out in texts.values()):
        print(f"--- nanogpt_tg temperature=0:\n{tok.decode(texts['temperature=0'][0, start.shape[1]:])}\n---")


if __name__ == "__main__":
    main()
