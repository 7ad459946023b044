"""Fuzz: mutated checkpoints (ours and nanoGPT's), vocabularies and config lines thrown at the loaders.

Every example must load, or fail with one of the user errors cli.run prints as one `error:` line (cli.USER_ERRORS),
never with another exception (a traceback), within a time limit and under a memory limit of 1 GB above what the
process uses. Loaders only: no model is built or compiled. NANOGPT_TG_FUZZ_EXAMPLES=2000 fuzzes for longer.
"""
import faulthandler
import io
import json
import os
import resource
import signal
import zipfile
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from nanogpt_tg.checkpoint import CKPT_NAME, FORMAT, read_safetensors, save_checkpoint
from nanogpt_tg.cli import USER_ERRORS
from nanogpt_tg.compat.nanogpt_ckpt import load_any_checkpoint, read_meta_pkl, read_nanogpt_checkpoint
from nanogpt_tg.config import TrainConfig, check_train_config, parse_args, read_preset
from nanogpt_tg.model import GPT, GPTConfig
from nanogpt_tg.tokenizer import CharTokenizer, load as load_tokenizer

FIXTURES = Path(__file__).parent / "fixtures" / "nanogpt"
EXAMPLES = int(os.environ.get("NANOGPT_TG_FUZZ_EXAMPLES", "100"))
SECONDS = 10  # per example; a loader that takes longer hangs
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class Hang(Exception):
    pass


@contextmanager
def bounded(memory: int = 1 << 30):
    """Run the body under an address-space limit `memory` above the current size, and at most SECONDS: past them
    a Hang; a hang inside C code, which no signal interrupts, ends the whole run (faulthandler) instead of waiting."""
    vm = int(Path("/proc/self/status").read_text().split("VmSize:")[1].split()[0]) * 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (vm + memory, hard))

    def hang(signum, frame):
        raise Hang(f"still loading after {SECONDS} s")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.setitimer(signal.ITIMER_REAL, SECONDS)
    faulthandler.dump_traceback_later(3 * SECONDS, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def loads_or_user_error(load, *args):
    """load(*args) returns, or raises one of the errors cli.run turns into one `error:` line."""
    try:
        with bounded():
            load(*args)
    except USER_ERRORS as e:
        assert "\n" not in str(e), f"a message of several lines: {e}"


def mutate(raw: bytes, data: st.DataObject, focus: int | None = None) -> bytes:
    """raw with a few bytes overwritten, inserted or cut (the first `focus` bytes, where given, more often)."""
    out = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        hi = len(out) - 1 if focus is None or data.draw(st.booleans()) else min(focus, len(out)) - 1
        at = data.draw(st.integers(0, max(hi, 0)), label="at")
        kind = data.draw(st.sampled_from(["set", "insert", "cut", "truncate"]), label="kind")
        b = data.draw(st.binary(min_size=1, max_size=8), label="bytes")
        if kind == "set":
            out[at : at + len(b)] = b
        elif kind == "insert":
            out[at:at] = b
        elif kind == "cut":
            del out[at : at + len(b)]
        else:
            del out[at:]
    return bytes(out)


# values a field should never hold without a clear error: wrong types, out of range, non-finite, deep, huge
HOSTILE = st.one_of(
    st.sampled_from([None, True, 0, -1, 10**7, 10**12, 2**64, 1e999, -1e999, float("nan"), 0.5, "", "x" * 100,
                     [], {}, [[[[[[]]]]]], {"a": {"b": {}}}]),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
                 lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3), max_leaves=8))
TINY = GPTConfig(block_size=8, vocab_size=10, n_layer=1, n_head=2, n_embd=8, bias=False)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    save_checkpoint(d / "good", GPT(TINY, verbose=False), None, {
        "model_args": dict(TINY.__dict__), "iter_num": 3, "best_val_loss": 1.5, "config": {"dataset": "x"},
        "meta": CharTokenizer(list("abcdefghij")).meta()})
    (d / "case").mkdir()
    return d


def set_path(obj, path: list, value):
    """obj with obj[path[0]][path[1]]... = value, the containers on the way made if missing."""
    if not path:
        return value
    if not isinstance(obj, dict):
        obj = {}
    obj[path[0]] = set_path(obj.get(path[0]), path[1:], value)
    return obj


INFO_FIELDS = ([["model_args", k] for k in TINY.__dict__] + [["model_args"], ["iter_num"], ["best_val_loss"],
               ["config"], ["config", "model"], ["config", "dataset"], ["meta"], ["meta", "itos"],
               ["meta", "vocab_size"], ["meta", "tokenizer"], ["version"], []])


@FUZZ
@given(data=st.data())
def test_mutated_safetensors_checkpoints(work, data):
    raw = (work / "good" / CKPT_NAME).read_bytes()
    arrays, metadata = read_safetensors(work / "good" / CKPT_NAME)
    header_size = int.from_bytes(raw[:8], "little") + 8
    how = data.draw(st.sampled_from(["info", "tensors", "bytes"]), label="how")
    if how == "bytes":
        case = mutate(raw, data, focus=header_size)
    else:
        header = json.loads(raw[8:header_size])
        if how == "info":
            info = set_path(json.loads(metadata[FORMAT]), data.draw(st.sampled_from(INFO_FIELDS)), data.draw(HOSTILE))
            header["__metadata__"][FORMAT] = json.dumps(info)
        else:
            name = data.draw(st.sampled_from(sorted(k for k in header if k != "__metadata__")))
            header[name] = set_path(header[name], [data.draw(st.sampled_from(["dtype", "shape", "data_offsets"]))],
                                    data.draw(HOSTILE))
        blob = json.dumps(header).encode()
        case = len(blob).to_bytes(8, "little") + blob + raw[header_size:]
    (work / "case" / CKPT_NAME).write_bytes(case)
    loads_or_user_error(load_any_checkpoint, work / "case")


def rezip(raw_zip: bytes, change) -> bytes:
    """A zip with each member's bytes replaced by change(name, bytes)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(raw_zip)) as zin, zipfile.ZipFile(out, "w") as zout:
        for name in zin.namelist():
            zout.writestr(name, change(name, zin.read(name)))
    return out.getvalue()


@FUZZ
@given(data=st.data())
def test_mutated_nanogpt_checkpoints(work, data):
    raw = (FIXTURES / "bias" / "ckpt.pt").read_bytes()
    if data.draw(st.booleans(), label="inside data.pkl"):
        case = rezip(raw, lambda name, b: mutate(b, data) if name.endswith("data.pkl") else b)
    else:
        case = mutate(raw, data)
    (work / "case" / "ckpt.pt").write_bytes(case)
    loads_or_user_error(read_nanogpt_checkpoint, work / "case" / "ckpt.pt")


@FUZZ
@given(data=st.data())
def test_mutated_vocabularies(work, data):
    kind = data.draw(st.sampled_from(["meta.pkl", "meta.json"]), label="file")
    if kind == "meta.pkl":
        (work / "case" / kind).write_bytes(mutate((FIXTURES / "meta.pkl").read_bytes(), data))
        loads_or_user_error(read_meta_pkl, work / "case" / kind)
    else:
        meta = set_path(CharTokenizer(list("abc")).meta(), data.draw(st.sampled_from(
            [["itos"], ["stoi"], ["vocab_size"], ["tokenizer"], ["merges"], ["byte_ids"], []])), data.draw(HOSTILE))
        text = json.dumps(meta)
        (work / "case" / kind).write_bytes(mutate(text.encode(), data) if data.draw(st.booleans()) else text.encode())
        loads_or_user_error(load_tokenizer, work / "case" / kind)


KEYS = ["max_iters", "learning_rate", "out_dir", "bias", "block_size", "dropout", "n_head"]
ATOMS = st.sampled_from(["9", "10", "2", "0", "1e999", "1e-999", "0.5", "-1", "'a'", "True", "None", "[1]", "x",
                         "9**9", "10**5000", "(1)", "{}", "1j", "nan", "'\\x00'", "f()", "__import__('os')"])
OPS = st.sampled_from(["+", "-", "*", "/", "//", "**", "%", " and ", ",", ".", "("])


@st.composite
def expressions(draw):
    parts = [draw(ATOMS)]
    for _ in range(draw(st.integers(0, 4))):
        parts += [draw(OPS), draw(ATOMS)]
    return "".join(parts) if draw(st.integers(0, 9)) else draw(st.text(max_size=20))


@FUZZ
@given(key=st.sampled_from(KEYS), expr=expressions(), preset=st.booleans())
def test_config_lines(work, key, expr, preset):
    def load():
        if preset:
            path = work / "case" / "preset.py"
            path.write_text(f"{key} = {expr}\n", encoding="utf-8")
            read_preset(path)
            cfg, _ = parse_args(TrainConfig, [str(path)])
        else:
            cfg, _ = parse_args(TrainConfig, [f"--{key}={expr}"])
        check_train_config(cfg)

    loads_or_user_error(load)
