"""nanoGPT compatibility: PyTorch nanoGPT checkpoints load safely and give nanoGPT's logits and greedy text.

The fixtures in tests/fixtures/nanogpt were written by tools/make_fixtures.py with torch; these tests need no torch,
except the last, which is skipped without it.
"""
import importlib.util
import json
import os
import pickle
import shutil
import struct
import sys
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from tinygrad import Tensor, dtypes

from nanogpt_tg.checkpoint import CheckpointError, load_checkpoint, load_optimizer, load_weights, optimizer_state
from nanogpt_tg.config import TrainConfig
from nanogpt_tg.convert import main as convert
from nanogpt_tg.model import GPT, GPTConfig
from nanogpt_tg.compat.nanogpt_ckpt import (UnsafeCheckpointError, load_any_checkpoint, read_meta_pkl, read_nanogpt_checkpoint,
                                     write_nanogpt_checkpoint)
from nanogpt_tg.sample import Generator
from nanogpt_tg.tokenizer import CharTokenizer
from nanogpt_tg.train import configure_optimizer

FIXTURES = Path(__file__).parent / "fixtures" / "nanogpt"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text(encoding="utf-8"))
VARIANTS = list(EXPECTED["variants"])  # bias (with old attn.bias buffers), nobias_compiled (_orig_mod.), f16, bf16
ATTACKS = ["os.system", "builtins.eval", "subprocess.Popen", "numpy.testing._private.utils.runstring"]


@lru_cache(maxsize=None)
def loaded(variant: str) -> tuple[dict, dict, GPT]:
    """The fixture's arrays and info, and a model holding its weights (built once per variant)."""
    arrays, info = read_nanogpt_checkpoint(FIXTURES / variant / "ckpt.pt")
    model = GPT(GPTConfig(**info["model_args"]), verbose=False)
    load_weights(model, arrays)
    return arrays, info, model


def data_pkl(path: Path) -> bytes:
    with zipfile.ZipFile(path) as zf:
        return zf.read(next(n for n in zf.namelist() if n.endswith("/data.pkl")))


# --- parity with nanoGPT -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_logits_match_nanogpt(variant):
    _, _, model = loaded(variant)
    idx = Tensor(np.array([EXPECTED["inputs"]], dtype=np.int32), dtype=dtypes.int32)
    logits = model(idx)[0].numpy()
    # float32 throughout; the half variants' weights are upcast exactly, so the same tolerance holds
    np.testing.assert_allclose(logits, np.load(FIXTURES / variant / "logits.npy"), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_greedy_sampling_matches_nanogpt(variant):
    # 40 new tokens from a block_size of 16: the window is cropped as in nanoGPT's generate
    _, _, model = loaded(variant)
    tok = CharTokenizer.from_meta(read_meta_pkl(FIXTURES / "meta.pkl"))
    start = np.array([tok.encode(EXPECTED["start"])], dtype=np.int32)
    out = Generator(model, 1).generate(start, EXPECTED["max_new_tokens"], temperature=0.0)
    assert tok.decode(out[0]) == EXPECTED["variants"][variant]["greedy"]  # exact: the fixture's argmax gaps are >1e-2


def test_keys_are_nanogpt_parameter_names():
    # torch.compile's _orig_mod. prefix is stripped; the tied lm_head.weight and pre-2.0 attn.bias masks are dropped
    assert b"_orig_mod." in data_pkl(FIXTURES / "nobias_compiled" / "ckpt.pt")
    pkl = data_pkl(FIXTURES / "bias" / "ckpt.pt")
    assert b".attn.bias" in pkl and b"lm_head.weight" in pkl
    for variant in ("bias", "nobias_compiled"):
        arrays, info, model = loaded(variant)
        names = [k[len("model."):] for k in arrays if k.startswith("model.")]
        assert names == list(model.state_dict()), "same names, same order (nanoGPT's named_parameters)"
        assert all(a.dtype == np.float32 for a in arrays.values())
    assert loaded("bias")[1]["model_args"]["bias"] is True
    assert loaded("nobias_compiled")[1]["model_args"]["bias"] is False


@pytest.mark.parametrize("variant", ["bias", "bf16"])
def test_adamw_state_is_converted(variant):
    arrays, info, model = loaded(variant)
    exp = EXPECTED["variants"][variant]
    assert info["iter_num"] == exp["adam_steps"] and info["config"]["dataset"] == EXPECTED["dataset"]
    cfg = TrainConfig(beta1=exp["beta1"], beta2=exp["beta2"])
    optimizer = configure_optimizer(model, cfg)
    assert set(optimizer_state(model, optimizer)) == {k for k in arrays if k.startswith("optimizer.")}
    load_optimizer(model, optimizer, arrays)
    for g in (0, 1):
        np.testing.assert_allclose(arrays[f"optimizer.group{g}.b1_t"], [exp["beta1"] ** exp["adam_steps"]], rtol=1e-6)
        np.testing.assert_allclose(arrays[f"optimizer.group{g}.b2_t"], [exp["beta2"] ** exp["adam_steps"]], rtol=1e-6)
    for k in ("exp_avg", "exp_avg_sq"):  # checksums taken from torch's state_dict, float64 sums of float32 values
        total = sum(np.abs(a.astype(np.float64)).sum() for n, a in arrays.items() if n.endswith(f".{k}"))
        assert total == pytest.approx(exp[f"{k}_abs_sum"], rel=1e-9)


def test_meta_pkl_is_nanogpt_vocabulary():
    meta = read_meta_pkl(FIXTURES / "meta.pkl")
    tok = CharTokenizer.from_meta(meta)
    assert tok.vocab_size == meta["vocab_size"] == 13 and tok.decode(tok.encode("hello world\n")) == "hello world\n"


# --- files from strangers ------------------------------------------------------------------------------------------

def _str(s: str) -> bytes:
    b = s.encode("utf-8")
    return b"X" + struct.pack("<I", len(b)) + b


def _args(*args) -> bytes:
    """Pickle opcodes for a tuple of str / tuple / {} / int arguments."""
    out = b"("
    for a in args:
        out += (_str(a) if isinstance(a, str) else b"}" if isinstance(a, dict) else _args(*a) if isinstance(a, tuple)
                else b"J" + struct.pack("<i", a))
    return out + b"t"


def _call(module: str, name: str, *args, opcode: str = "GLOBAL") -> bytes:
    """Pickle opcodes that call module.name(*args) when unpickled."""
    if opcode == "INST":
        return _args(*args)[:-1] + b"i" + f"{module}\n{name}\n".encode()
    ref = b"c" + f"{module}\n{name}\n".encode() if opcode == "GLOBAL" else _str(module) + _str(name) + b"\x93"
    return ref + _args(*args) + b"R"


def _checkpoint_pickle(payload: bytes) -> bytes:
    """{'model': <payload>} as a protocol-2 pickle, the shape of a nanoGPT data.pkl."""
    return b"\x80\x02}" + _str("model") + payload + b"s."


def _payloads(marker: Path) -> dict[str, bytes]:
    """Calls that each create the marker file, by way of a global no nanoGPT checkpoint holds."""
    py = f"open({str(marker)!r}, 'w').close()"
    return {
        "os.system": _call("os", "system", f"{sys.executable} -c \"{py}\""),
        "builtins.eval": _call("builtins", "eval", py),
        "subprocess.Popen": _call("subprocess", "Popen", (sys.executable, "-c", py)),
        "numpy.testing._private.utils.runstring": _call("numpy.testing._private.utils", "runstring", py, {}),
        "builtins.exec": _call("builtins", "exec", py, opcode="STACK_GLOBAL"),
        "os.popen": _call("os", "popen", f"{sys.executable} -c \"{py}\"", opcode="INST"),
    }


def _write_pt(path: Path, pkl: bytes, storages: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pkl)
        zf.writestr("archive/byteorder", "little")
        for key, raw in (storages or {}).items():
            zf.writestr(f"archive/data/{key}", raw)
        zf.writestr("archive/version", "3\n")
    return path


@pytest.mark.skipif(os.name != "posix", reason="the shell payloads are written for a POSIX shell")
@pytest.mark.parametrize("name", ATTACKS)
def test_payloads_are_live(tmp_path, name):
    # control for the refusal tests: plain pickle.loads really runs these payloads and creates the marker
    if name.startswith("numpy.testing"):
        pytest.importorskip("numpy.testing._private.utils").runstring  # noqa: B018
    marker = tmp_path / "pwned"
    obj = pickle.loads(_checkpoint_pickle(_payloads(marker)[name]))
    if name == "subprocess.Popen":
        obj["model"].wait()
    assert marker.exists()


@pytest.mark.parametrize("name", list(_payloads(Path("x"))))
def test_malicious_checkpoint_is_refused(tmp_path, name):
    marker = tmp_path / "pwned"
    path = _write_pt(tmp_path / "ckpt.pt", _checkpoint_pickle(_payloads(marker)[name]))
    with pytest.raises(UnsafeCheckpointError, match=f"refused to load global '{name}'"):
        read_nanogpt_checkpoint(path)
    assert not marker.exists(), "the payload ran"


@pytest.mark.parametrize("name", ATTACKS)
def test_malicious_meta_pkl_is_refused(tmp_path, name):
    marker = tmp_path / "pwned"
    (tmp_path / "meta.pkl").write_bytes(b"\x80\x02" + _payloads(marker)[name] + b".")
    with pytest.raises(UnsafeCheckpointError, match=f"refused to load global '{name}'"):
        read_meta_pkl(tmp_path / "meta.pkl")
    assert not marker.exists(), "the payload ran"


def test_meta_pkl_admits_no_globals(tmp_path):
    # even checkpoint globals are refused in a vocabulary, which is plain dicts, strings and ints
    (tmp_path / "meta.pkl").write_bytes(b"\x80\x02" + _call("collections", "OrderedDict") + b".")
    with pytest.raises(UnsafeCheckpointError, match="'collections.OrderedDict'"):
        read_meta_pkl(tmp_path / "meta.pkl")


def test_tensor_past_its_storage_is_refused(tmp_path):
    # a tensor record whose size and stride reach beyond its storage must not read the memory behind it
    # _rebuild_tensor_v2(storage of 4 floats, offset 0, size (256,), stride (1,), False, OrderedDict())
    storage = b"(" + _str("storage") + b"ctorch\nFloatStorage\n" + _str("0") + _str("cpu") + b"K\x04tQ"  # persistent id
    record = (b"ctorch._utils\n_rebuild_tensor_v2\n(" + storage + b"K\x00(M\x00\x01t(K\x01t\x89"
              + b"ccollections\nOrderedDict\n)RtR")
    path = _write_pt(tmp_path / "ckpt.pt", _checkpoint_pickle(record), {"0": np.arange(4, dtype="<f4").tobytes()})
    with pytest.raises(CheckpointError, match="reads past the end of its storage"):
        read_nanogpt_checkpoint(path)


def test_truncated_or_foreign_files_give_a_clear_error(tmp_path):
    raw = (FIXTURES / "bias" / "ckpt.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "text.pt").write_text("not a checkpoint", encoding="utf-8")
    for name in ("truncated.pt", "text.pt"):
        with pytest.raises(CheckpointError, match=rf"{name} is not a PyTorch zip checkpoint \(.*\); it may be truncated"):
            read_nanogpt_checkpoint(tmp_path / name)
    (tmp_path / "meta.pkl").write_bytes((FIXTURES / "meta.pkl").read_bytes()[:-20])
    with pytest.raises(CheckpointError, match="meta.pkl is not a valid meta.pkl .*truncated"):
        read_meta_pkl(tmp_path / "meta.pkl")


# --- finding the vocabulary, converting ----------------------------------------------------------------------------

def test_load_any_checkpoint_finds_the_vocabulary_as_nanogpt(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    shutil.copy(FIXTURES / "bias" / "ckpt.pt", tmp_path / "out" / "ckpt.pt")
    with pytest.raises(CheckpointError, match=r"tried data/fixture/meta.pkl, data/fixture/meta.json, out/meta.pkl"):
        load_any_checkpoint("out")
    itos = read_meta_pkl(FIXTURES / "meta.pkl")["itos"]
    _, info = load_any_checkpoint("out", meta_path=FIXTURES / "meta.pkl")
    assert info["meta"]["itos"] == itos
    (tmp_path / "data" / "fixture").mkdir(parents=True)
    shutil.copy(FIXTURES / "meta.pkl", tmp_path / "data" / "fixture" / "meta.pkl")  # where nanoGPT's sample.py looks
    _, info = load_any_checkpoint("out")
    assert info["meta"]["itos"] == itos
    (tmp_path / "small.json").write_text(json.dumps({"vocab_size": 2, "itos": ["a", "b"]}), encoding="utf-8")
    with pytest.raises(CheckpointError, match="has 2 characters but the model .* has vocab_size=13"):
        load_any_checkpoint("out", meta_path="small.json")
    with pytest.raises(CheckpointError, match="no checkpoint in nowhere"):
        load_any_checkpoint("nowhere")


def test_convert_to_safetensors_round_trip(tmp_path, capsys):
    src = FIXTURES / "nobias_compiled"
    assert convert(["--to=safetensors", str(src), str(tmp_path / "tg"), "--meta", str(FIXTURES / "meta.pkl")]) == 0
    arrays, info = read_nanogpt_checkpoint(src / "ckpt.pt")
    saved, saved_info = load_checkpoint(tmp_path / "tg")
    assert list(saved) == list(arrays) and all(np.array_equal(saved[k], arrays[k]) for k in arrays)  # exact
    assert {k: saved_info[k] for k in info} == info
    assert saved_info["meta"]["itos"] == read_meta_pkl(FIXTURES / "meta.pkl")["itos"]
    # the safetensors directory now loads through the same entry point, vocabulary included
    _, any_info = load_any_checkpoint(tmp_path / "tg")
    assert any_info["meta"] == saved_info["meta"]
    capsys.readouterr()
    assert convert(["--to=safetensors", str(tmp_path / "missing"), str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "ckpt.pt not found" in err


def torch_reference():
    """tools/torch_nanogpt.py, the PyTorch nanoGPT model the converted files are loaded into."""
    spec = importlib.util.spec_from_file_location("torch_nanogpt", FIXTURES.parents[2] / "tools" / "torch_nanogpt.py")
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    return ref


def test_convert_to_nanogpt_loads_in_torch(tmp_path):
    torch = pytest.importorskip("torch")
    ref = torch_reference()
    meta = str(FIXTURES / "meta.pkl")
    assert convert(["--to=safetensors", str(FIXTURES / "bias"), str(tmp_path / "tg"), "--meta", meta]) == 0
    assert convert(["--to=nanogpt", str(tmp_path / "tg"), str(tmp_path / "pt")]) == 0
    # as nanoGPT's sample.py and train.py load it (torch >= 2.6 loads weights_only by default)
    checkpoint = torch.load(tmp_path / "pt" / "ckpt.pt", map_location="cpu", weights_only=True)
    model = ref.GPT(ref.GPTConfig(**checkpoint["model_args"]))
    model.load_state_dict(checkpoint["model"])  # strict: every name, lm_head.weight included
    cfg = checkpoint["config"]
    optimizer = model.configure_optimizers(cfg["weight_decay"], cfg["learning_rate"], (cfg["beta1"], cfg["beta2"]))
    optimizer.load_state_dict(checkpoint["optimizer"])
    original = torch.load(FIXTURES / "bias" / "ckpt.pt", map_location="cpu", weights_only=True)["optimizer"]["state"]
    for i, state in optimizer.state_dict()["state"].items():
        assert all(torch.equal(state[k], original[i][k]) for k in ("step", "exp_avg", "exp_avg_sq"))
    with torch.no_grad():
        logits = model(torch.tensor([EXPECTED["inputs"]]), all_logits=True)[0].numpy()
    np.testing.assert_allclose(logits, np.load(FIXTURES / "bias" / "logits.npy"), rtol=1e-5, atol=1e-5)
    with open(tmp_path / "pt" / "meta.pkl", "rb") as f:
        assert pickle.load(f) == pickle.loads((FIXTURES / "meta.pkl").read_bytes())  # our own file, safe to unpickle
    arrays, _ = read_nanogpt_checkpoint(tmp_path / "pt" / "ckpt.pt")
    expected, _ = read_nanogpt_checkpoint(FIXTURES / "bias" / "ckpt.pt")
    assert list(arrays) == list(expected) and all(np.array_equal(arrays[k], expected[k]) for k in arrays)


def test_a_gpt2_finetune_converts_to_a_checkpoint_nanogpt_builds(tmp_path, capsys):
    """A model with GPT-2's tanh GELU (a finetuned GPT-2; a resumed run's model_args name their activation too)
    written as ckpt.pt: its model_args hold only the fields of nanoGPT's GPTConfig, so nanoGPT's GPTConfig(**model_args)
    builds it (an activation key raised TypeError there); the activation travels in config, so reading the file back
    gives gelu_new again; and the conversion says that nanoGPT computes the exact GELU instead."""
    torch = pytest.importorskip("torch")
    ref = torch_reference()
    arrays, info, _ = loaded("bias")
    info = json.loads(json.dumps(info))
    info["model_args"]["activation"] = "gelu_new"
    write_nanogpt_checkpoint(tmp_path / "ckpt.pt", arrays, info)
    assert "exact GELU" in capsys.readouterr().err
    checkpoint = torch.load(tmp_path / "ckpt.pt", map_location="cpu", weights_only=True)
    nanogpt_fields = {"block_size", "vocab_size", "n_layer", "n_head", "n_embd", "dropout", "bias"}  # its model.py
    assert set(checkpoint["model_args"]) == nanogpt_fields
    model = ref.GPT(ref.GPTConfig(**checkpoint["model_args"]))  # nanoGPT's GELU: the exact one
    model.load_state_dict(checkpoint["model"])
    _, back = read_nanogpt_checkpoint(tmp_path / "ckpt.pt")
    assert back["model_args"] == info["model_args"]


def test_write_nanogpt_checkpoint_needs_torch(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    arrays, info, _ = loaded("bias")
    with pytest.raises(ImportError, match=r"needs torch: pip install torch==2\.13\.0"):
        write_nanogpt_checkpoint(tmp_path / "ckpt.pt", arrays, info)
