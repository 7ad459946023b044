"""Write the nanoGPT-format fixtures in tests/fixtures/nanogpt/ with PyTorch, exactly as nanoGPT's train.py and
data/shakespeare_char/prepare.py save them: ckpt.pt per variant, meta.pkl, expected logits and greedy text.

Needs torch. Seeded: re-running rewrites identical files.  Usage: python tools/make_fixtures.py
"""
import copy
import json
import pickle
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from torch_nanogpt import GPT, GPTConfig  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "nanogpt"
TEXT = "hello world\nold lore, dear rod.\nhe held a red oar near her, lord.\nan old hen and a rower.\n" * 8
N_STEPS, MAX_NEW_TOKENS, START, INPUT_LEN = 150, 40, "\n", 16  # INPUT_LEN: the block_size, one window
# name: (bias, weight dtype, flash, compiled); flash=False is nanoGPT before torch 2.0, whose attn.bias mask buffers
# land in the state_dict; compiled is torch.compile's _orig_mod. key prefix
VARIANTS = {
    "bias": (True, torch.float32, False, False),
    "nobias_compiled": (False, torch.float32, True, True),
    "f16": (True, torch.float16, True, False),
    "bf16": (False, torch.bfloat16, True, False),
}


def nanogpt_config(cfg: GPTConfig, bias: bool, compiled: bool) -> dict:
    """The globals dict nanoGPT's train.py saves as checkpoint['config'] (its defaults, with this run's values)."""
    return dict(out_dir="out-fixture", eval_interval=N_STEPS, log_interval=1, eval_iters=2, eval_only=False,
                always_save_checkpoint=True, init_from="scratch", wandb_log=False, wandb_project="owt",
                wandb_run_name="gpt2", dataset="fixture", gradient_accumulation_steps=1, batch_size=4,
                block_size=cfg.block_size, n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=0.0,
                bias=bias, learning_rate=1e-2, max_iters=N_STEPS, weight_decay=1e-1, beta1=0.9, beta2=0.99,
                grad_clip=1.0, decay_lr=False, warmup_iters=0, lr_decay_iters=N_STEPS, min_lr=1e-3, backend="nccl",
                device="cpu", dtype="float32", compile=compiled)


def greedy(model: GPT, idx: torch.Tensor) -> tuple[torch.Tensor, float]:
    """nanoGPT's generate with top_k=1, and the smallest gap between the best and second-best logit on the way."""
    out = model.generate(idx, MAX_NEW_TOKENS, temperature=1.0, top_k=1)
    gaps = []
    with torch.no_grad():
        for t in range(idx.size(1), out.size(1)):
            top2 = torch.topk(model(out[:, max(0, t - model.config.block_size):t])[0][0, -1], 2).values
            gaps.append(float(top2[0] - top2[1]))
    return out, min(gaps)


def make_variant(name: str, seed: int, data: np.ndarray, chars: list[str]) -> dict:
    bias, dtype, flash, compiled = VARIANTS[name]
    torch.manual_seed(seed)
    cfg = GPTConfig(block_size=16, vocab_size=len(chars), n_layer=2, n_head=2, n_embd=16, dropout=0.0, bias=bias)
    model = GPT(cfg, flash=flash)
    # O(1) weights instead of nanoGPT's std 0.02, so parity checks can tell e.g. tanh from exact GELU
    with torch.no_grad():
        for pn, p in model.named_parameters():
            p.normal_(1.0 if ".ln_" in pn or "ln_f" in pn else 0.0, 0.5 if p.dim() >= 2 else 0.2)
    config = nanogpt_config(cfg, bias, compiled)
    optimizer = model.configure_optimizers(config["weight_decay"], config["learning_rate"],
                                           (config["beta1"], config["beta2"]), "cpu")

    def get_batch():
        ix = torch.randint(len(data) - cfg.block_size, (config["batch_size"],))
        x = torch.stack([torch.from_numpy(data[i:i + cfg.block_size].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + cfg.block_size].astype(np.int64)) for i in ix])
        return x, y

    # nanoGPT's training loop, a few real AdamW steps so the checkpoint holds real optimizer moments
    for _ in range(N_STEPS):
        _, loss = model(*get_batch())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config["grad_clip"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        best_val_loss = torch.stack([model(*get_batch())[1] for _ in range(config["eval_iters"])]).mean()

    model.to(dtype)  # the half variants store their weights in float16 / bfloat16
    state_dict = model.state_dict()
    if compiled:  # what torch.compile(model).state_dict() is keyed as
        state_dict = type(state_dict)((f"_orig_mod.{k}", v) for k, v in state_dict.items())
    checkpoint = {"model": state_dict, "optimizer": optimizer.state_dict(),
                  "model_args": dict(n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd,
                                     block_size=cfg.block_size, bias=bias, vocab_size=cfg.vocab_size, dropout=0.0),
                  "iter_num": N_STEPS, "best_val_loss": best_val_loss, "config": config}
    (OUT / name).mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, OUT / name / "ckpt.pt")

    # expected outputs of the stored weights, computed in float32 (the half weights upcast exactly)
    ref = copy.deepcopy(model).float().eval()
    inputs = torch.from_numpy(data[:INPUT_LEN].astype(np.int64))[None]
    with torch.no_grad():
        logits = ref(inputs, all_logits=True)[0]
    np.save(OUT / name / "logits.npy", logits.numpy().astype(np.float32))
    out, min_gap = greedy(ref, torch.tensor([[chars.index(START)]]))
    assert min_gap > 1e-3, f"{name}: greedy argmax is nearly tied ({min_gap:.2e}); pick another seed"
    # checksums of the AdamW moments, so the reader's optimizer conversion can be checked without torch
    moments = optimizer.state_dict()["state"].values()
    exp_avg, exp_avg_sq = ([s[k].double().abs().sum().item() for s in moments] for k in ("exp_avg", "exp_avg_sq"))
    return {"greedy": "".join(chars[i] for i in out[0].tolist()),
            "min_greedy_gap": min_gap, "adam_steps": N_STEPS, "beta1": config["beta1"], "beta2": config["beta2"],
            "exp_avg_abs_sum": sum(exp_avg), "exp_avg_sq_abs_sum": sum(exp_avg_sq)}


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    # the vocabulary as nanoGPT's data/shakespeare_char/prepare.py pickles it
    chars = sorted(set(TEXT))
    assert len(chars) == 13, f"vocab of {len(chars)}"
    stoi, itos = {ch: i for i, ch in enumerate(chars)}, {i: ch for i, ch in enumerate(chars)}
    with open(OUT / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": len(chars), "itos": itos, "stoi": stoi}, f)
    data = np.array([stoi[c] for c in TEXT], dtype=np.uint16)
    expected = {"start": START, "max_new_tokens": MAX_NEW_TOKENS, "dataset": "fixture",
                "inputs": data[:INPUT_LEN].tolist(),
                "variants": {name: make_variant(name, 1337 + i, data, chars) for i, name in enumerate(VARIANTS)}}
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    size = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {OUT} ({size / 1e3:.0f} kB)")
    for name, v in expected["variants"].items():
        print(f"{name}: min greedy gap {v['min_greedy_gap']:.3f}, greedy {v['greedy']!r}")


if __name__ == "__main__":
    main()
