"""Scale up: data parallel on two CPU devices against one, checkpoints moving between 2 devices and 1, mixed precision."""
from pathlib import Path

import numpy as np
import pytest
from tinygrad import Tensor, dtypes

from nanogpt_tg.checkpoint import load_checkpoint, load_weights, save_checkpoint
from nanogpt_tg.config import ConfigError, TrainConfig, parse_args
from nanogpt_tg.data import load_split, random_offsets
from nanogpt_tg.model import GPT, GPTConfig
from nanogpt_tg.parallel import check_batch, parse_devices, replicate
from nanogpt_tg.precision import LossScaler, autocast, resolve_dtype
from nanogpt_tg.sample import load_model
from nanogpt_tg.compat.torch_rng import TorchGenerator
from nanogpt_tg.train import (CPU_STEP_ACTIVATIONS, activation_bytes, configure_optimizer, make_train_step,
                              row_chunks, set_lr, train)

ROOT = Path(__file__).resolve().parents[1]
TWO = ("CPU", "CPU:1")  # tinygrad's names for CPU:0 and CPU:1: two devices in one process
BASE = dict(dataset="periodic", device="cpu", n_layer=1, n_head=2, n_embd=16, block_size=8, batch_size=8,
            gradient_accumulation_steps=2, dropout=0.0, bias=False, learning_rate=1e-2, min_lr=1e-3, warmup_iters=2,
            eval_interval=4, eval_iters=2, log_interval=1, always_save_checkpoint=True, lr_decay_iters=50)
# bias=False: the key bias has an exactly zero gradient, so AdamW would turn rounding noise (1e-10) into lr-sized moves
GPT_ARGS = dict(block_size=8, vocab_size=10, n_layer=1, n_head=2, n_embd=16, bias=False)


def run_steps(devices: tuple[str, ...], steps: int, dtype: str = "float32", chunks: int | None = None):
    """steps jitted train steps from the same init and the same batches; returns the losses and the final weights."""
    cfg = TrainConfig(**{**BASE, "dtype": dtype})
    model = GPT(GPTConfig(**GPT_ARGS), verbose=False)
    if devices:
        replicate(model.parameters(), devices)
    optimizer = configure_optimizer(model, cfg)
    scaler = LossScaler(devices or "CPU") if dtype == "float16" else None
    data = load_split("data/periodic", "train")
    step = make_train_step(model, optimizer, data, cfg, devices, scaler, chunks)
    gen = TorchGenerator(0)  # the same global batches on any number of devices
    losses = []
    for _ in range(steps):  # call 1 captures the jit, 2+ replay it
        set_lr(optimizer, 1e-2)
        ix = [random_offsets(gen, data.shape[0], cfg.batch_size, cfg.block_size)
              for _ in range(cfg.gradient_accumulation_steps)]
        losses.append(step(np.stack(ix)).item())
    return losses, {k: v.to(v.device[0] if devices else v.device).numpy() for k, v in model.state_dict().items()}


def test_parse_devices_and_batch_check():
    assert parse_devices("", "CPU") == () and parse_devices("1", "CPU") == ()
    assert parse_devices("cpu:0,cpu:1", "CPU") == TWO and parse_devices("2", "CPU") == TWO
    with pytest.raises(ConfigError, match="names a device twice"):
        parse_devices("CPU:1,CPU:1", "CPU")
    with pytest.raises(ConfigError, match="--batch_size=12 does not divide over 5 devices"):
        check_batch(12, ("CPU",) * 5)


@pytest.fixture(scope="module")
def one_device(periodic):
    return run_steps((), 3, chunks=1)  # split kernel by kernel (chunks=None: on the cores, where it fits)


def test_two_devices_match_one(one_device):
    """Losses and weights after 3 steps (2 micro-batches each, clipping, AdamW) on CPU:0 + CPU:1 equal one CPU's."""
    one_losses, one = one_device
    two_losses, two = run_steps(TWO, 3)
    # the only difference is the order of float32 sums (two half-batch partial sums, then the all-reduce): ~1e-7
    np.testing.assert_allclose(two_losses, one_losses, rtol=1e-5)
    for k in one:
        np.testing.assert_allclose(two[k], one[k], rtol=1e-4, atol=1e-5, err_msg=k)
    assert any(not np.array_equal(v, GPT(GPTConfig(**GPT_ARGS), verbose=False).state_dict()[k].numpy())
               for k, v in one.items()), "the steps changed no weight"


def test_row_chunks_match_the_whole_batch(one_device, capsys):
    """A step in 2 chunks of 4 rows (4 jitted chunk calls for 2 micro-batches, then one clip and AdamW) gives the
    whole-batch step's losses and weights: the same arithmetic, but for the order of the gradients' float32 sums."""
    one_losses, one = one_device
    chunked_losses, chunked = run_steps((), 3, chunks=2)  # 4 rows: the two-device test has compiled their kernels
    assert "runs as 2 chunks of 4" in capsys.readouterr().out
    np.testing.assert_allclose(chunked_losses, one_losses, rtol=1e-5)  # the last micro-batch's mean loss, as logged
    for k in one:
        np.testing.assert_allclose(chunked[k], one[k], rtol=1e-4, atol=1e-5, err_msg=k)


@pytest.mark.parametrize("calls", [1, 2])
def test_a_step_on_the_cores_matches_the_step_split_kernel_by_kernel(one_device, monkeypatch, calls):
    """With the CPU runtime's pool, a CPU step without dropout runs a share of the rows on each core at once
    (make_core_parallel_train_step: one jit and its replicas, every kernel on its core's thread, then one clip and
    AdamW), in one call per core, or in 2 where the activations bound asks for it: the losses and weights of the step
    split kernel by kernel, but for the order of the gradients' float32 sums. (one_device is that step: chunks=1.)"""
    import nanogpt_tg.train as train_module
    from nanogpt_tg.cpu import runtime as cpu_runtime
    from nanogpt_tg.train import step_cores

    cores = cpu_runtime.cores()
    if cores < 2 or BASE["batch_size"] % (cores * calls):
        pytest.skip(f"the CPU runtime's pool is off (NANOGPT_TG_CPU_THREADS=0, one core, or no C compiler), or its "
                    f"{cores} threads do not divide the batch in {calls} calls each")
    config = GPTConfig(**GPT_ARGS)
    share = BASE["batch_size"] // cores
    monkeypatch.setattr(train_module, "CPU_STEP_ACTIVATIONS", cores * activation_bytes(config, share // calls))
    assert step_cores(config, BASE["batch_size"], "CPU") == (cores, calls)
    ran, on_cores = [], cpu_runtime.on_cores
    monkeypatch.setattr(cpu_runtime, "on_cores", lambda fns: (ran.append(len(fns)), on_cores(fns))[1])
    cores_losses, weights = run_steps((), 3, chunks=None)
    assert ran == [cores] * 2  # the first step captures one jit and copies it; two replays at once
    np.testing.assert_allclose(cores_losses, one_device[0], rtol=1e-5)
    for k in one_device[1]:
        np.testing.assert_allclose(weights[k], one_device[1][k], rtol=1e-4, atol=1e-5, err_msg=k)


def test_step_cores_takes_the_cpu_steps_without_dropout_whose_rows_divide(monkeypatch):
    from nanogpt_tg.cpu import runtime as cpu_runtime
    from nanogpt_tg.train import step_cores

    monkeypatch.setattr(cpu_runtime, "cores", lambda: 2)
    config = GPTConfig(**GPT_ARGS)
    assert step_cores(config, 8, "CPU") == (2, 1) and step_cores(config, 8, "CUDA") == (1, 1)
    assert step_cores(GPTConfig(**GPT_ARGS, dropout=0.1), 8, "CPU") == (1, 1)  # dropout's RNG is one counter
    assert step_cores(config, 7, "CPU") == (1, 1)  # rows that do not divide: kernel by kernel
    preset = GPTConfig(n_layer=6, n_head=6, n_embd=384, block_size=256, vocab_size=65, dropout=0.0)
    assert step_cores(preset, 64, "CPU") == (2, 4)  # 8 rows a call: 2 x 0.29 GiB at once; 16 rows would be 1.15 GiB
    assert 2 * activation_bytes(preset, 8) <= CPU_STEP_ACTIVATIONS < 2 * activation_bytes(preset, 16)
    monkeypatch.setattr(cpu_runtime, "cores", lambda: 1)
    assert step_cores(config, 8, "CPU") == (1, 1)


def test_row_chunks_bound_a_cpu_step_only_where_it_is_large():
    small = GPTConfig(n_layer=4, n_head=4, n_embd=128, block_size=64, vocab_size=65, dropout=0.0)  # the README's CPU run
    preset = GPTConfig(n_layer=6, n_head=6, n_embd=384, block_size=256, vocab_size=65, dropout=0.2)  # nanoGPT's preset
    assert row_chunks(small, 12, "CPU") == 1
    assert row_chunks(preset, 64, "CUDA") == 1 and row_chunks(preset, 64, "CPU") == 4  # 16 rows: 0.62 of 2.46 GiB
    assert activation_bytes(preset, 16) <= CPU_STEP_ACTIVATIONS < activation_bytes(preset, 32)
    assert row_chunks(preset, 3, "CPU") == 1 and row_chunks(preset, 61, "CPU") == 61  # prime: one row each


def test_checkpoint_moves_between_two_devices_and_one(periodic, tmp_path):
    """train() on 2 devices writes a checkpoint that loads on 1 with identical logits, and back onto 2."""
    cfg = TrainConfig(**BASE, out_dir=str(tmp_path / "two"), max_iters=4, devices="CPU:0,CPU:1")
    result = train(cfg)
    model2 = result["model"]
    x = Tensor(np.random.default_rng(0).integers(0, 10, (8, 8)).astype(np.int32))
    logits2 = model2(x.shard(TWO, axis=0))[0].numpy()
    _, info = load_checkpoint(cfg.out_dir)
    save_checkpoint(tmp_path / "final", model2, None, info)  # train() saved before its last step: save the final weights
    model1, _, info = load_model(tmp_path / "final")  # one device
    np.testing.assert_array_equal(model1(x)[0].numpy(), logits2)  # identical: the same sums in the same order per row
    save_checkpoint(tmp_path / "one", model1, None, info)
    back = GPT(GPTConfig(**GPT_ARGS), verbose=False)
    replicate(back.parameters(), TWO)
    load_weights(back, load_checkpoint(tmp_path / "one")[0])
    np.testing.assert_array_equal(back(x.shard(TWO, axis=0))[0].numpy(), logits2)
    # eval_only on the checkpoint evaluates once and exits, leaving it as it was (nanoGPT's would train on from iter 4)
    ckpt = (tmp_path / "two" / "ckpt.safetensors").read_bytes()
    evaluated = train(TrainConfig(**{**BASE, "out_dir": cfg.out_dir, "init_from": "resume", "eval_only": True}))
    assert evaluated["iter_num"] == 4 and len(evaluated["losses"]) == 1
    assert (tmp_path / "two" / "ckpt.safetensors").read_bytes() == ckpt
    # and a one-device resume continues the two-device run
    resumed = train(TrainConfig(**{**BASE, "out_dir": cfg.out_dir, "max_iters": 6, "init_from": "resume"}))
    assert resumed["iter_num"] == 7


def test_gpt2_124m_preset_builds(capsys):
    """config/train_gpt2.py builds GPT-2 124M; the count leaves out the position embeddings, as nanoGPT's does."""
    cfg, _ = parse_args(TrainConfig, [str(ROOT / "config/train_gpt2.py")])
    args = dict(n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, block_size=cfg.block_size, bias=cfg.bias)
    model = GPT(GPTConfig(**args, vocab_size=50304))  # nanoGPT's vocab_size when the dataset has no meta
    # bias=False (nanoGPT's default): 123.59M; with GPT-2's biases and 50257 tokens it is nanoGPT's 123.65M
    assert "number of parameters: 123.59M" in capsys.readouterr().out
    n_bias = 12 * (3 * 768 + 768 + 4 * 768 + 768 + 2 * 768) + 768  # Linear and LayerNorm biases
    assert model.get_num_params() + n_bias - 47 * 768 == 123_653_376  # 123.65M


def test_batch_must_divide_over_devices(periodic, tmp_path):
    with pytest.raises(ConfigError, match="--batch_size=7 does not divide over 2 devices"):
        train(TrainConfig(**{**BASE, "batch_size": 7, "devices": "2", "out_dir": str(tmp_path)}))


def test_autocast_computes_in_low_precision_with_float32_masters():
    model = GPT(GPTConfig(**GPT_ARGS), verbose=False)
    x = Tensor(np.arange(16, dtype=np.int32).reshape(2, 8) % 10)
    ref = model(x)[0].numpy()
    for name in ("float16", "bfloat16"):
        dt, _ = resolve_dtype(name, "CPU")  # bfloat16 is emulated where clang cannot compile it
        with autocast(model, getattr(dtypes, dt)):
            logits, loss = model(x, x)
            assert logits.dtype == getattr(dtypes, dt) and loss.dtype == dtypes.float32
        # bfloat16 keeps 8 bits of mantissa, float16 11: logits of O(0.1) move by about 1e-3 and 1e-4
        np.testing.assert_allclose(logits.float().numpy(), ref, atol={"float16": 2e-3, "bfloat16": 2e-2}[name])
        assert not np.array_equal(logits.float().numpy(), ref)
    assert all(p.dtype == dtypes.float32 for p in model.parameters())  # the masters are put back


@pytest.mark.slow  # 45 s; the autocast and overflow tests below cover both dtypes fast, BENCHMARKS.md has 200 iterations
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_steps_track_float32(one_device, dtype):
    """Three steps in float16 (loss scaled) or bfloat16 give float32's losses to 1e-2; master weights stay float32."""
    ref, ref_w = one_device
    low, low_w = run_steps((), 3, dtype)
    np.testing.assert_allclose(low, ref, atol=1e-2)
    assert max(np.abs(low_w[k] - ref_w[k]).max() for k in ref_w) < 5e-2
    assert all(v.dtype == np.float32 for v in low_w.values())


def test_float16_overflow_skips_the_step(periodic):
    """A loss scale that overflows float16 skips the whole step (weights, moments) and halves the scale."""
    cfg = TrainConfig(**{**BASE, "dtype": "float16", "gradient_accumulation_steps": 1})  # a smaller step to compile
    model = GPT(GPTConfig(**GPT_ARGS), verbose=False)
    optimizer = configure_optimizer(model, cfg)
    scaler = LossScaler("CPU", init_scale=2.0**100)  # finite in float32, inf once a gradient is cast to float16
    data = load_split("data/periodic", "train")
    step = make_train_step(model, optimizer, data, cfg, (), scaler)
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    ix = random_offsets(TorchGenerator(0), data.shape[0], cfg.batch_size * cfg.gradient_accumulation_steps, cfg.block_size)
    ix = ix.reshape(cfg.gradient_accumulation_steps, cfg.batch_size)
    set_lr(optimizer, 1e-2)
    assert np.isfinite(step(ix).item())
    assert scaler.skipped.item() and scaler.scale.item() == 2.0**99
    assert all(np.array_equal(v.numpy(), before[k]) for k, v in model.state_dict().items())
    assert all(not m.numpy().any() for opt in optimizer.optimizers for m in opt.m)
    scaler.scale.assign(Tensor([1024.0])).realize()
    step(ix)
    assert not scaler.skipped.item() and scaler.scale.item() == 1024.0
    assert any(not np.array_equal(v.numpy(), before[k]) for k, v in model.state_dict().items())
    resumed = LossScaler(TWO)  # the scale goes into checkpoints and back, onto any number of devices
    resumed.load_state(scaler.state())
    assert resumed.scale.item() == 1024.0 and resumed.good_steps.item() == 1
