"""Hostile files and flags: planted symlinks, racing writers, a second run, non-finite weights, half-done prepares,
token ids past the vocabulary, pickle and zip bombs, huge sizes in metadata, unbounded config arithmetic, wrong types.

Each test makes its hostile file itself. What could hang or exhaust memory runs in a subprocess under a timeout and
an address-space limit (RLIMIT_AS) of 1 GB above what the imports take, and must end in one `error:` line.
"""
import errno
import json
import os
import pickle
import re
import struct
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from tinygrad import Tensor

from nanogpt_tg import fsio, train as train_mod
from nanogpt_tg.checkpoint import (CKPT_NAME, FORMAT, CheckpointError, load_checkpoint, read_safetensors,
                                   save_checkpoint, write_safetensors)
from nanogpt_tg.config import (ConfigError, SampleConfig, TrainConfig, check_sample_config, check_train_config,
                               parse_args)
from nanogpt_tg.data import load_split, prepare_text
from nanogpt_tg.metrics import MetricsLog
from nanogpt_tg.model import GPT, GPTConfig
from nanogpt_tg.compat.nanogpt_ckpt import load_any_checkpoint, read_meta_pkl, read_nanogpt_checkpoint
from nanogpt_tg.prepare_large import prepare_large
from nanogpt_tg.sample import read_start
from nanogpt_tg.tokenizer import load as load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "nanogpt"
TINY = GPTConfig(block_size=8, vocab_size=10, n_layer=1, n_head=2, n_embd=8, bias=False)
INFO = {"model_args": dict(TINY.__dict__), "iter_num": 1, "best_val_loss": 1.0, "config": {},
        "meta": {"itos": list("abcdefghij")}}

# run fn(*argv) under cli.run with address space limited to 1 GB above what the imports take
LIMITED = """
import resource, sys
from nanogpt_tg import checkpoint, cli, sample, tokenizer
from nanogpt_tg.compat import nanogpt_ckpt
vm = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), resource.getrlimit(resource.RLIMIT_AS)[1]))
module, fn = sys.argv[1].split(".")
cli.run(getattr(globals()[module], fn), *sys.argv[2:])
"""


def one_error_line(r: subprocess.CompletedProcess, *expected: str):
    """The command failed with exactly one `error:` line holding each expected text, and no traceback."""
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and "Traceback" not in r.stderr and len(lines) == 1, r.stderr[-3000:]
    assert lines[0].startswith("error: ") and all(e in lines[0] for e in expected), lines[0]


def run_limited(loader: str, *args, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", LIMITED, loader, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def good_checkpoint(out_dir: Path, **info) -> GPT:
    model = GPT(TINY, verbose=False)
    save_checkpoint(out_dir, model, None, {**INFO, **info})
    return model


def rewrite_info(path: Path, change):
    """Rewrite a checkpoint's JSON info with change(info) applied, keeping the tensors."""
    arrays, metadata = read_safetensors(path)
    info = json.loads(metadata[FORMAT])
    change(info)
    arrays = {k: np.array(v) for k, v in arrays.items()}
    write_safetensors(path, arrays, {FORMAT: json.dumps(info)})


# --- 1. temporary files, symlinks, racing writers, the out_dir lock ------------------------------------------------

def test_temporary_files_never_follow_a_planted_symlink(tmp_path, monkeypatch):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious", encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    # the attacker guesses the next random name: O_EXCL refuses the link and a fresh name is drawn
    names = iter(["guess"] * 3 + [f"r{i}" for i in range(100)])
    monkeypatch.setattr(fsio.secrets, "token_hex", lambda n: next(names))
    planted = [out / f".{CKPT_NAME}.guess.tmp", out / ".write_test.guess.tmp", out / ".train.bin.guess.tmp"]
    for link in planted:
        link.symlink_to(victim)
    good_checkpoint(out)
    fsio.check_writable(out)
    fsio.write_bytes(out / "train.bin", b"tokens")
    assert victim.read_text(encoding="utf-8") == "precious"
    assert load_checkpoint(out)[1]["iter_num"] == 1 and (out / "train.bin").read_bytes() == b"tokens"
    assert all(p.is_symlink() for p in planted)  # not ours: left alone
    for link in planted:
        link.unlink()
    # metrics.jsonl is appended to, never through a link (a resume appends; the write is refused with a warning)
    (out / "metrics.jsonl").symlink_to(victim)
    MetricsLog(out, 0, "resume").log("iter", 0, loss=1.0)
    assert victim.read_text(encoding="utf-8") == "precious"


def test_renames_are_fsynced_in_their_directory(tmp_path, monkeypatch):
    synced = []
    real = fsio.os.fsync
    monkeypatch.setattr(fsio.os, "fsync", lambda fd: (synced.append(os.path.isdir(f"/proc/self/fd/{fd}")), real(fd)))
    fsio.write_bytes(tmp_path / "x", b"1")
    assert synced == [False, True]  # the file, then the directory holding the new name


def test_racing_writers_never_leave_a_torn_checkpoint(tmp_path):
    # two writers replacing one checkpoint and a reader between them: with a shared fixed temporary name the second
    # writer truncated the file the first had just renamed; with unique names every read sees one whole version
    path = tmp_path / CKPT_NAME
    write_safetensors(path, {"w": np.zeros(1 << 18, np.float32)}, {"v": "0"})
    errors, stop = [], threading.Event()

    def writer(value: float):
        for i in range(15):
            write_safetensors(path, {"w": np.full(1 << 18, value + i, np.float32)}, {"v": str(value + i)})

    def reader():
        while not stop.is_set():
            try:
                arrays, meta = read_safetensors(path)
                if not (arrays["w"] == float(meta["v"])).all():
                    errors.append("torn")
            except CheckpointError as e:
                errors.append(str(e))

    threads = [threading.Thread(target=writer, args=(v,)) for v in (100.0, 200.0)]
    r = threading.Thread(target=reader)
    r.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    r.join()
    assert not errors, errors[:3]


@pytest.fixture(scope="module")
def rnd(tmp_path_factory):
    """A working directory with data/rnd/: random text over 12 characters."""
    d = tmp_path_factory.mktemp("rnd")
    prepare_text("".join(np.random.default_rng(0).choice(list("abcdefghij \n"), size=3000)), d / "data" / "rnd", 16)
    return d


RND = dict(dataset="rnd", device="cpu", n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4,
           gradient_accumulation_steps=1, eval_iters=1, log_interval=1, warmup_iters=0, decay_lr=False)


def test_a_second_run_on_one_out_dir_is_refused(rnd):
    (rnd / "busy").mkdir()
    with fsio.DirLock(rnd / "busy"):
        r = subprocess.run([sys.executable, str(ROOT / "train.py"), *(f"--{k}={v}" for k, v in RND.items()),
                            "--out_dir=busy", "--max_iters=1"], cwd=rnd, capture_output=True, text=True, timeout=300)
        one_error_line(r, f"busy is in use by another training run (pid {os.getpid()}")
    assert not (rnd / "busy" / CKPT_NAME).exists()


def test_second_lock_names_the_holder(tmp_path):
    with fsio.DirLock(tmp_path):
        code = "import sys; from nanogpt_tg import fsio, cli; cli.run(fsio.DirLock, sys.argv[1])"
        r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60,
                           cwd=ROOT)
        one_error_line(r, f"pid {os.getpid()}", "choose another --out_dir")
    with fsio.DirLock(tmp_path):  # released on exit: taken again at once
        pass
    assert not (tmp_path / ".lock").exists()
    with fsio.DirLock(tmp_path / "new" / "out"):  # made for the run, and removed again when it wrote nothing
        assert (tmp_path / "new" / "out" / ".lock").is_file()
    assert not (tmp_path / "new").exists()


# --- 2. non-finite weights are never saved -------------------------------------------------------------------------

def test_non_finite_weights_never_replace_a_checkpoint(tmp_path):
    good_checkpoint(tmp_path)
    before = (tmp_path / CKPT_NAME).read_bytes()
    bad = GPT(TINY, verbose=False)
    w = bad.state_dict()["transformer.wte.weight"]
    w.replace(Tensor(np.where(np.arange(w.numel()).reshape(w.shape) == 7, np.inf, w.numpy()).astype(np.float32)))
    with pytest.raises(FloatingPointError, match=r"wte.weight holds non-finite .*not saved; .* is left as it was"):
        save_checkpoint(tmp_path, bad, None, INFO)
    assert (tmp_path / CKPT_NAME).read_bytes() == before
    with pytest.raises(FloatingPointError, match="no checkpoint was written"):
        save_checkpoint(tmp_path / "first", bad, None, INFO)
    assert not (tmp_path / "first" / CKPT_NAME).exists()


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")  # 1e39 into the float32 learning rate
def test_interrupt_with_non_finite_weights_keeps_the_last_good_checkpoint(rnd, monkeypatch):
    monkeypatch.chdir(rnd)
    cfg = dict(RND, out_dir="nan", max_iters=2, eval_interval=2)
    train_mod.train(TrainConfig(**cfg))
    # a learning rate of inf (1e39 in float32) makes every weight inf or nan in one step, while that step's loss,
    # computed before the update, is finite; then Ctrl-C asks for a save
    class CtrlCAfterAStep(train_mod.Interrupt):
        @property
        def armed(self):
            return self._armed

        @armed.setter
        def armed(self, value):  # the loop arms the handler once a step is done: Ctrl-C comes right then
            self._armed = value
            if value:
                self.requested = "SIGINT"

    monkeypatch.setattr(train_mod, "Interrupt", CtrlCAfterAStep)
    with pytest.raises(FloatingPointError, match=r"a weight is inf or nan at iter 3; training diverged. The last good "
                                                 r"checkpoint, nan/ckpt.safetensors \(iter 2\), is untouched"):
        train_mod.train(TrainConfig(**{**cfg, "init_from": "resume", "max_iters": 10, "learning_rate": 1e39}))
    arrays, info = load_checkpoint(rnd / "nan")
    assert info["iter_num"] == 2 and all(np.isfinite(a).all() for a in arrays.values())


# --- 3. a prepare writes all three files or none -------------------------------------------------------------------

def dataset_bytes(d: Path) -> dict[str, bytes]:
    return {n: (d / n).read_bytes() for n in ("train.bin", "val.bin", "meta.json") if (d / n).exists()}


def test_failed_prepare_leaves_the_old_dataset(tmp_path):
    d = tmp_path / "data" / "ds"
    prepare_text("abcdefgh" * 100, d, block_size=8)
    before = dataset_bytes(d)
    (tmp_path / "short.txt").write_text("xyz" * 30, encoding="utf-8")  # other characters, too short for a block
    with pytest.raises(ValueError, match="text too short"):
        prepare_text("xyz" * 30, d, block_size=64)
    with pytest.raises(ValueError, match="text too short"):
        prepare_large(tmp_path / "short.txt", d, block_size=64, chunk_size=7)
    assert dataset_bytes(d) == before
    assert sorted(p.name for p in d.iterdir()) == ["meta.json", "train.bin", "val.bin"]  # no temporary file left


def test_a_crash_between_renames_leaves_no_meta_json(tmp_path, monkeypatch):
    # the old meta.json goes before the token files are replaced and the new one comes last: a dataset caught
    # half replaced is refused as not prepared, never trained on with the old vocabulary
    d = tmp_path / "ds"
    prepare_text("abcdefgh" * 100, d, block_size=8)
    real, calls = fsio.os.replace, []

    def crash_on_second(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(errno.EIO, "power cut")
        real(src, dst)

    monkeypatch.setattr(fsio.os, "replace", crash_on_second)
    with pytest.raises(OSError, match="power cut"):
        prepare_text("ijklmnop" * 100, d, block_size=8)
    assert not (d / "meta.json").exists() and not list(d.glob(".*.tmp"))


# --- 4. token ids against the vocabulary ---------------------------------------------------------------------------

def test_token_ids_past_the_vocabulary_are_refused(tmp_path):
    prepare_text("abcdefgh" * 100, tmp_path, block_size=8)
    np.array([1, 2, 3, 70, 4] * 20, dtype=np.uint16).tofile(tmp_path / "train.bin")
    with pytest.raises(ValueError, match=r"train.bin holds token id 70, but its vocabulary \(meta.json\) has 8 tokens"):
        load_split(tmp_path, "train", vocab_size=8)
    assert load_split(tmp_path, "val", vocab_size=8).shape[0] == 80


def test_training_refuses_token_ids_past_the_vocabulary(rnd, monkeypatch):
    monkeypatch.chdir(rnd)
    prepare_text("".join(np.random.default_rng(0).choice(list("abcdefghij"), size=3000)), rnd / "data" / "ids", 16)
    np.full(3000, 12, dtype=np.uint16).tofile(rnd / "data" / "ids" / "train.bin")  # 12: past the 10 characters
    with pytest.raises(ValueError, match="ids/train.bin holds token id 12, but its vocabulary"):
        train_mod.train(TrainConfig(**{**RND, "dataset": "ids", "out_dir": "ids", "max_iters": 1}))


def test_sample_meta_of_another_size_is_refused(tmp_path):
    good_checkpoint(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({"itos": list("abc")}), encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"meta.json has 3 characters but the model in .* has vocab_size=10"):
        load_any_checkpoint(tmp_path, tmp_path / "meta.json")


# --- 5. pickles and zips that would hang or allocate ---------------------------------------------------------------

def _str(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def shared_tuples(levels: int = 30, width: int = 10) -> bytes:
    """Pickle opcodes pushing t30, where t0 = 'x' and t(k+1) is a tuple of 10 references to tk: 10**30 leaves to a
    reader that walks it, in a few hundred bytes."""
    out = _str("x") + b"q\x000"
    for k in range(levels):
        out += b"(" + (b"h" + bytes([k])) * width + b"tq" + bytes([k + 1]) + b"0"
    return out + b"h" + bytes([levels])


def billion_laughs() -> bytes:
    """A meta.pkl: {'itos': t30} (shared_tuples)."""
    return b"\x80\x02}" + _str("itos") + shared_tuples() + b"s."


def tensor_record(size: int, stride: int, numel: int = 1) -> bytes:
    """torch._utils._rebuild_tensor_v2(storage '0' of numel floats, offset 0, (size,), (stride,), False, OrderedDict())."""
    storage = (b"(" + _str("storage") + b"ctorch\nFloatStorage\n" + _str("0") + _str("cpu") + b"J"
               + struct.pack("<i", numel) + b"tQ")
    return (b"ctorch._utils\n_rebuild_tensor_v2\n(" + storage + b"K\x00(J" + struct.pack("<i", size) + b"t(J"
            + struct.pack("<i", stride) + b"t\x89ccollections\nOrderedDict\n)RtR")


def write_pt(path: Path, pkl: bytes, storage: bytes | None = None, deflated_zeros: int = 0) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pkl)
        if storage is not None:
            zf.writestr("archive/data/0", storage)
        if deflated_zeros:  # streamed in, so the test itself never holds them
            zi = zipfile.ZipInfo("archive/data/0")
            zi.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(zi, "w", force_zip64=True) as f:
                chunk = bytes(1 << 20)
                for _ in range(deflated_zeros >> 20):
                    f.write(chunk)
    return path


def checkpoint_pickle(payload: bytes) -> bytes:
    return b"\x80\x02}" + _str("model") + b"}" + _str("transformer.wte.weight") + payload + b"ss."


def test_billion_laughs_meta_pkl(tmp_path):
    (tmp_path / "meta.pkl").write_bytes(billion_laughs())
    assert len((tmp_path / "meta.pkl").read_bytes()) < 1000
    one_error_line(run_limited("nanogpt_ckpt.read_meta_pkl", tmp_path / "meta.pkl"), "meta.pkl", "objects")


def test_billion_laughs_in_a_checkpoint(tmp_path):
    # model_args as the shared tuples: the reader used to walk them to make the metadata plain, for ever
    pkl = checkpoint_pickle(tensor_record(4, 1, 4))[:-1] + _str("model_args") + shared_tuples() + b"s."
    path = write_pt(tmp_path / "ckpt.pt", pkl, np.zeros(4, "<f4").tobytes())
    one_error_line(run_limited("nanogpt_ckpt.read_nanogpt_checkpoint", path), "ckpt.pt", "objects")


def test_huge_memo_index(tmp_path):
    (tmp_path / "meta.pkl").write_bytes(b"\x80\x02K\x01r\xff\xff\xff\xff.")  # LONG_BINPUT 2**32 - 1: 12 bytes
    one_error_line(run_limited("nanogpt_ckpt.read_meta_pkl", tmp_path / "meta.pkl"), "memo index 4294967295")


def test_stride_zero_tensor_record(tmp_path):
    path = write_pt(tmp_path / "ckpt.pt", checkpoint_pickle(tensor_record(10**9, 0)), np.zeros(1, "<f4").tobytes())
    one_error_line(run_limited("nanogpt_ckpt.read_nanogpt_checkpoint", path), "more elements than its storage")


def test_deflate_bomb_storage(tmp_path):
    n = 1 << 28  # 256 MB of zeros deflate to ~250 KB
    path = write_pt(tmp_path / "ckpt.pt", checkpoint_pickle(tensor_record(n // 4, 1, n // 4)), deflated_zeros=n)
    assert path.stat().st_size < 2 << 20
    one_error_line(run_limited("nanogpt_ckpt.read_nanogpt_checkpoint", path), "zip bomb")


# --- 6. sizes in metadata checked against the file before allocating -----------------------------------------------

def test_block_size_from_metadata_is_checked_before_the_model_is_built(tmp_path):
    good_checkpoint(tmp_path)
    rewrite_info(tmp_path / CKPT_NAME, lambda info: info["model_args"].update(block_size=10**7))
    one_error_line(run_limited("sample.load_model", tmp_path), "model_args.block_size", "expected 1 to")
    rewrite_info(tmp_path / CKPT_NAME, lambda info: info["model_args"].update(block_size=4096))
    one_error_line(run_limited("sample.load_model", tmp_path), "transformer.wpe.weight", "(8, 8)")


def test_huge_sparse_safetensors_is_not_read(tmp_path):
    path = tmp_path / CKPT_NAME
    good_checkpoint(tmp_path)
    with open(path, "r+b") as f:
        f.truncate(16 << 30)  # 16 GB, sparse: a small header, then nothing the header accounts for
    r = run_limited("checkpoint.load_checkpoint", tmp_path, timeout=30)
    assert r.returncode == 0, r.stderr[-2000:]  # mapped, not read: within the memory limit and at once
    with open(path, "r+b") as f:  # a header that claims more bytes than the file holds
        f.write(struct.pack("<Q", 1 << 40))
    one_error_line(run_limited("checkpoint.load_checkpoint", tmp_path, timeout=30), "header of 1099511627776 bytes")
    path.unlink()


# --- 7. config arithmetic ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arg", ["--max_iters=9**9**9", "--max_iters=[1]*10**9", "--max_iters=10**5000",
                                 "--learning_rate=1e999", "--learning_rate=1e999-1e999", "--max_iters=2**64"])
def test_config_arithmetic_is_bounded(arg):
    r = subprocess.run([sys.executable, "-c", "import sys, resource; from nanogpt_tg.config import cli, TrainConfig; "
                        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, resource.getrlimit(resource.RLIMIT_AS)[1])); "
                        "cli(TrainConfig, 'train.py', '', sys.argv[1:])", arg],
                       capture_output=True, text=True, timeout=30, cwd=ROOT)
    one_error_line(r, arg.split("=")[0], "is not a valid")


def test_preset_string_product_is_refused(tmp_path):
    (tmp_path / "p.py").write_text("out_dir = 'a' * 10**10\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"p.py:1: `out_dir = 'a' \* 10\*\*10` is not a `key = literal` line"):
        parse_args(TrainConfig, [str(tmp_path / "p.py")])


@pytest.mark.parametrize("key", ["temperature", "repetition_penalty"])
def test_sample_floats_must_be_finite(key):
    for value in ("1e999", "1e999-1e999", "-1e999"):
        with pytest.raises(ConfigError, match=f"--{key}={value} is not a valid float"):
            parse_args(SampleConfig, [f"--{key}={value}"])
    with pytest.raises(ConfigError, match=f"--{key}=nan must be a finite number"):  # a config built in Python
        check_sample_config(SampleConfig(**{key: float("nan")}))
    with pytest.raises(ConfigError, match="--learning_rate=inf must be a finite number"):
        check_train_config(TrainConfig(learning_rate=float("inf")))


# --- 8. every metadata field typed and ranged, naming the file and field -------------------------------------------

BAD_INFO = [
    (lambda i: i["model_args"].update(n_head=0), "model_args.n_head is 0, expected 1 to"),
    (lambda i: i["model_args"].update(n_head=3), "model_args.n_embd 8 is not divisible by n_head 3"),
    (lambda i: i["model_args"].update(n_layer="2"), "model_args.n_layer is str '2', expected int"),
    (lambda i: i["model_args"].update(bias=None), "model_args.bias is NoneType"),
    (lambda i: i["model_args"].update(flash=True), "model_args.flash is not a model setting"),
    (lambda i: i["model_args"].pop("vocab_size"), "model_args.vocab_size is missing"),
    (lambda i: i.update(model_args=[1]), "model_args is list"),
    (lambda i: i.update(iter_num=-1), "iter_num is -1, expected 0 to"),
    (lambda i: i.update(iter_num=1.5), "iter_num is float"),
    (lambda i: i.update(best_val_loss="low"), "best_val_loss is str"),
    (lambda i: i.update(config=[]), "config is list, expected an object"),
    (lambda i: i["config"].update(model="rnn"), "config.model is 'rnn'"),
    (lambda i: i.update(meta={"itos": "abc"}), "itos is not a list of strings"),
    (lambda i: i.update(meta={"itos": list("aab")}), "itos repeats a character"),
    (lambda i: i.update(meta={"itos": list("abc"), "vocab_size": 4}), "vocab_size is 4, but itos has 3"),
    (lambda i: i.update(meta={"tokenizer": "bpe", "merges": 5}), "merges is int, expected list"),
    (lambda i: i.update(meta=7), "vocabulary is int"),
]


def test_checkpoint_metadata_is_checked_field_by_field(tmp_path):
    good_checkpoint(tmp_path)
    raw = (tmp_path / CKPT_NAME).read_bytes()
    for change, message in BAD_INFO:
        (tmp_path / CKPT_NAME).write_bytes(raw)
        rewrite_info(tmp_path / CKPT_NAME, change)
        with pytest.raises(CheckpointError) as e:
            load_checkpoint(tmp_path)
        assert str(e.value).startswith(str(tmp_path / CKPT_NAME)) and message in str(e.value), (message, str(e.value))
    # metadata nested a million deep is refused, not a RecursionError
    write_safetensors(tmp_path / CKPT_NAME, {}, {FORMAT: "[" * 10**6 + "]" * 10**6})
    with pytest.raises(CheckpointError, match="nested too deeply"):
        load_checkpoint(tmp_path)


def test_checkpoint_arrays_are_checked(tmp_path):
    good_checkpoint(tmp_path)
    arrays, metadata = read_safetensors(tmp_path / CKPT_NAME)
    arrays = {k: np.array(v) for k, v in arrays.items()}
    for extra, message in [({"rng.batches": np.zeros(5, np.uint32)}, "rng.batches has dtype uint32 and shape (5,)"),
                           ({"model.transformer.ln_f.weight": np.ones(8, np.int32)}, "has dtype int32, expected a float")]:
        write_safetensors(tmp_path / CKPT_NAME, {**arrays, **extra}, metadata)
        with pytest.raises(CheckpointError, match=re.escape(message)):
            load_checkpoint(tmp_path)


def test_vocabulary_files_are_checked_and_named(tmp_path):
    meta = tmp_path / "meta.json"
    for text, message in [("{not json", "meta.json is not valid JSON"), ("[" * 10**5, "nested too deeply"),
                          ('{"itos": [1, 2]}', "itos is not a list of strings"), ("[]", "vocabulary is list"),
                          ('{"tokenizer": "bpe", "version": 1, "merges": [], "byte_ids": [0], "special_tokens": {},'
                           ' "pattern": "gpt2"}', "byte_ids must give 256 distinct ids")]:
        meta.write_text(text, encoding="utf-8")
        with pytest.raises(CheckpointError) as e:
            load_tokenizer(meta)
        assert str(meta) in str(e.value) and message in str(e.value), str(e.value)
    (tmp_path / "meta.pkl").write_bytes(pickle.dumps({"itos": {0: "a", 2: "b"}}))
    with pytest.raises(CheckpointError, match=r"meta.pkl: itos keys are not the ids 0 to n-1"):
        read_meta_pkl(tmp_path / "meta.pkl")


def test_vocabulary_checks_hold_under_python_O(tmp_path):
    (tmp_path / "meta.pkl").write_bytes(pickle.dumps({"itos": list("aab"), "vocab_size": 3}))
    code = ("import sys; from nanogpt_tg import cli; from nanogpt_tg.compat import nanogpt_ckpt; "
            "cli.run(nanogpt_ckpt.read_meta_pkl, sys.argv[1])")
    r = subprocess.run([sys.executable, "-O", "-c", code, str(tmp_path / "meta.pkl")], capture_output=True, text=True,
                       timeout=60, cwd=ROOT)
    one_error_line(r, "meta.pkl: itos repeats a character")


def test_nanogpt_checkpoint_fields_are_checked(tmp_path):
    with zipfile.ZipFile(FIXTURES / "bias" / "ckpt.pt") as zf:
        names = zf.namelist()
        pkl_name = next(n for n in names if n.endswith("data.pkl"))
        pkl = zf.read(pkl_name)
        with zipfile.ZipFile(tmp_path / "ckpt.pt", "w") as out:
            # model_args' n_head (the int 2, after its memoized name) becomes 0: a ZeroDivisionError before
            bad, count = re.subn(rb"(n_headr....K)\x02", lambda m: m.group(1) + b"\x00", pkl, flags=re.S)
            for n in names:
                out.writestr(n, bad if n == pkl_name else zf.read(n))
    assert count == 1
    with pytest.raises(CheckpointError, match=r"ckpt.pt: model_args.n_head is 0"):
        read_nanogpt_checkpoint(tmp_path / "ckpt.pt")


# --- 9. messages that said the wrong thing -------------------------------------------------------------------------

def test_first_failed_save_does_not_claim_a_previous_checkpoint(tmp_path, monkeypatch):
    def disk_full(*a):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fsio.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left on device; no checkpoint was written") as e:
        good_checkpoint(tmp_path)
    assert "intact" not in str(e.value) and not list(tmp_path.iterdir())


def test_prepare_messages(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "adir").mkdir()
    (tmp_path / "data" / "shakespeare_char").mkdir(parents=True)
    (tmp_path / "data" / "shakespeare_char" / "input.txt").write_text("x", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for args, message in [(["--input=adir", "--dataset=x"], "input file adir is a directory"),
                          (["--input=fifo", "--dataset=x"], "input file fifo is not a regular file"),
                          (["--input=adir", "--dataset="], "--dataset='' is not a dataset name"),
                          (["--input=adir", "--dataset=shakespeare_char/input.txt"], "is not a dataset name")]:
        for module in ("nanogpt_tg.prepare", "nanogpt_tg.prepare_large"):
            r = subprocess.run([sys.executable, "-m", module, *args], cwd=tmp_path, capture_output=True, text=True,
                               env=env, timeout=60)
            one_error_line(r, message)
    assert not (tmp_path / "data" / "x").exists()
    r = subprocess.run([sys.executable, str(ROOT / "data/shakespeare_char/prepare.py"), f"--input={tmp_path / 'adir'}"],
                       capture_output=True, text=True, timeout=60)
    one_error_line(r, "adir is a directory")


def test_a_directory_or_fifo_is_not_reported_as_missing(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ConfigError, match="config file .* is a directory"):
        parse_args(TrainConfig, [str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="fifo is not a regular file"):
        read_start(f"FILE:{tmp_path / 'fifo'}")
    with pytest.raises(ValueError, match="latin1.txt is not UTF-8 text"):
        read_start(f"FILE:{tmp_path / 'latin1.txt'}")
    (tmp_path / "train.bin").mkdir()
    with pytest.raises(FileNotFoundError, match="train.bin is a directory"):
        load_split(tmp_path, "train")


@pytest.mark.parametrize("script, key", [("train.py", "out_dir"), ("train.py", "dataset"), ("sample.py", "out_dir")])
def test_empty_names_are_refused(tmp_path, script, key):
    r = subprocess.run([sys.executable, str(ROOT / script), f"--{key}="], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)
    one_error_line(r, f"--{key}= is empty")
    assert not list(tmp_path.iterdir())  # nothing written into the working directory
