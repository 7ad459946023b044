"""Presets and --key=value overrides: nanoGPT's names and defaults, parsed without exec, clear errors."""
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from nanogpt_tg.config import ConfigError, SampleConfig, TrainConfig, parse_args, read_preset

ROOT = Path(__file__).resolve().parents[1]


def test_nanogpt_defaults():
    cfg = TrainConfig()
    assert (cfg.out_dir, cfg.eval_interval, cfg.eval_iters, cfg.init_from, cfg.dataset) == ("out", 2000, 200, "scratch", "openwebtext")
    assert (cfg.gradient_accumulation_steps, cfg.batch_size, cfg.block_size) == (40, 12, 1024)
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.dropout, cfg.bias) == (12, 12, 768, 0.0, False)
    assert (cfg.learning_rate, cfg.max_iters, cfg.weight_decay, cfg.beta1, cfg.beta2, cfg.grad_clip) == (6e-4, 600000, 0.1, 0.9, 0.95, 1.0)
    assert (cfg.decay_lr, cfg.warmup_iters, cfg.lr_decay_iters, cfg.min_lr) == (True, 2000, 600000, 6e-5)
    s = SampleConfig()
    assert (s.start, s.num_samples, s.max_new_tokens, s.temperature, s.top_k, s.seed) == ("\n", 10, 500, 0.8, 200, 1337)


def test_preset_then_overrides_left_to_right():
    cfg, _ = parse_args(TrainConfig, [str(ROOT / "config/train_shakespeare_char.py"), "--n_layer=4", "--dropout=0.0",
                                      "--n_layer=3", "--bias=True", "--learning_rate=2e-3"])
    assert (cfg.dataset, cfg.batch_size, cfg.block_size, cfg.beta2) == ("shakespeare_char", 64, 256, 0.99)
    assert (cfg.n_layer, cfg.dropout, cfg.bias, cfg.learning_rate) == (3, 0.0, True, 2e-3)


def test_every_preset_parses():
    for path in sorted((ROOT / "config").glob("*.py")):
        values = read_preset(path)
        parse_args(TrainConfig if path.name.startswith(("train", "finetune", "eval")) else SampleConfig, [str(path)])
        assert values, path


def test_preset_is_never_executed(tmp_path):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.py"
    evil.write_text(f"batch_size = 4\nopen({str(marker)!r}, 'w').write('x')\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"evil.py:2: .*not a `key = literal` line"):
        read_preset(evil)
    assert not marker.exists()


def test_preset_arithmetic_like_nanogpts():
    p = Path("/tmp") / "arith_preset.py"
    p.write_text("gradient_accumulation_steps = 5 * 8\nlearning_rate = 6e-4 / 10 # comment\n", encoding="utf-8")
    assert read_preset(p) == {"gradient_accumulation_steps": 40, "learning_rate": pytest.approx(6e-5)}


@pytest.mark.parametrize("arg, message", [
    ("--batchsize=3", "unknown config key 'batchsize' (did you mean 'batch_size'?)"),
    ("--bias=maybe", "--bias=maybe is not a valid bool"),
    ("--max_iters=ten", "--max_iters=ten is not a valid int"),
    ("--max_iters=2.5", "not a valid int"),
    ("--learning_rate=fast", "not a valid float"),
    ("--max_iters", "write overrides as --key=value"),
    ("config/nope.py", "config file config/nope.py not found"),
])
def test_bad_values_name_the_key(arg, message):
    with pytest.raises(ConfigError) as e:
        parse_args(TrainConfig, [arg])
    assert message in str(e.value)


def test_torch_only_flags_are_accepted_with_a_note():
    cfg, notes = parse_args(TrainConfig, ["--compile=False", "--dtype=bfloat16", "--backend=gloo"])
    assert cfg.compile is False and len(notes) == 2 and "torch.compile" in notes[0]  # --dtype is real: no note
    _, notes = parse_args(SampleConfig, ["--dtype=bfloat16"])
    assert len(notes) == 1 and "float32" in notes[0]


@given(st.integers(min_value=1, max_value=10**6), st.floats(min_value=1e-8, max_value=10.0), st.booleans(),
       st.text(alphabet=st.characters(blacklist_categories=["Cs", "Cc"]), min_size=1, max_size=20))
def test_overrides_round_trip(n, lr, flag, name):
    cfg, _ = parse_args(TrainConfig, [f"--max_iters={n}", f"--learning_rate={lr!r}", f"--bias={flag}", f"--out_dir={name}"])
    assert (cfg.max_iters, cfg.learning_rate, cfg.bias, cfg.out_dir) == (n, lr, flag, name)


@pytest.mark.parametrize("script", ["train.py", "sample.py"])
def test_help_and_one_line_errors(script):
    ok = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0 and "--out_dir=" in ok.stdout
    bad = subprocess.run([sys.executable, script, "--n_layr=2"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().startswith("error: unknown config key 'n_layr'")
