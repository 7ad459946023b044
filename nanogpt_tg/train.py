"""The training loop: nanoGPT's train.py in tinygrad, one function in nanoGPT's order (lr, eval/checkpoint, step, log)."""
import contextlib
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from tinygrad import Context, Tensor, TinyJit
from tinygrad.nn.optim import AdamW, OptimizerGroup
from tinygrad.nn.state import get_parameters

from . import cpu, fsio, gpt2
from .cpu import runtime as cpu_runtime
from .auto_device import kind
from .bigram import build_model
from .checkpoint import CKPT_NAME, load_optimizer, load_weights, save_checkpoint
from .config import ConfigError, TrainConfig, check_train_config
from .data import get_batch, load_split, random_offsets
from .device import item, set_device, write
from .estimate import RunEstimate
from .interrupt import Interrupt, Stopped
from .metrics import MetricsLog
from .model import A100_BF16_FLOPS, GPT, GPTConfig, decays
from .compat.nanogpt_ckpt import load_any_checkpoint, read_vocabulary
from .parallel import check_batch, parse_devices, replicate, split_batch
from .precision import DTYPES, LossScaler, autocast, resolve_dtype
from .progress import ETA, progress
from .tg import SkippingAdamW, capture_on_first_call, realize_rng, rng_state, set_rng_state
from .tokenizer import from_meta, load as load_tokenizer
from .compat.torch_rng import TorchGenerator


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
    decay = [p for p in params if decays(p.shape)]
    nodecay = [p for p in params if not decays(p.shape)]
    print(f"num decayed parameter tensors: {len(decay)}, with {sum(p.numel() for p in decay):,} parameters")
    print(f"num non-decayed parameter tensors: {len(nodecay)}, with {sum(p.numel() for p in nodecay):,} parameters")
    betas = dict(b1=cfg.beta1, b2=cfg.beta2, eps=1e-8)
    adamw = SkippingAdamW if cfg.dtype == "float16" else AdamW  # float16: skip steps whose gradients overflowed
    groups = [adamw(decay, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, **betas)]
    if nodecay:  # the bigram model has no 1-D weights; an AdamW over no parameters would raise
        groups.append(adamw(nodecay, lr=cfg.learning_rate, weight_decay=0.0, **betas))
    return OptimizerGroup(*groups)


def set_lr(optimizer: OptimizerGroup, lr: float):
    """Write the learning rate into each optimizer's lr tensor, which the jitted step reads (a float would be baked in)."""
    for opt in optimizer.optimizers:
        write(opt.lr, np.array([lr]))


def offsets_buffer(shape: tuple[int, ...], device: str) -> Tensor:
    """A realized int32 buffer for the batch offsets a jitted step reads (filled by write)."""
    return Tensor(np.zeros(shape, dtype=np.int32), device=device).contiguous().realize()


def clip_grad_norm(params: list[Tensor], max_norm: float) -> Tensor:
    """Scale all gradients so their global L2 norm is at most max_norm (torch's clip_grad_norm_). Returns the norm."""
    # each gradient's sum of squares its own kernel: fused into one, the reads of all gradients ran many times slower
    norm = Tensor.stack(*[p.grad.float().square().sum().contiguous() for p in params]).sum().sqrt()
    scale = (max_norm / (norm + 1e-6)).minimum(1.0)
    for p in params:
        p.grad.assign(p.grad * scale.cast(p.grad.dtype))
    return norm


# On the CPU a step whose activations would exceed this runs in calls of fewer rows, each call's forward and backward
# one jitted call, their gradients summed; the optimizer then steps once, as on the whole batch. On the cores
# (step_cores) it bounds the calls running at once, all cores together; with dropout, the row chunks of the batch
# (row_chunks). The step's memory is first touched anew by every process (3.3 GiB at the preset's size: 15-20 s
# under a VM's page faults, BENCHMARKS.md); in calls it is about this size, the arithmetic the same.
CPU_STEP_ACTIVATIONS = 1 << 30
KEEP = np.array([[0.0], [1.0]], dtype=np.float32)  # a call's sums: restart (KEEP[0]) or go on (KEEP[1])


def activation_bytes(config, rows: int) -> int:
    """About what a training step keeps for its backward, per rows rows of block_size tokens: per layer, float32
    q, k, v, c_fc's output and five (T, n_embd) tensors, the attention probabilities, and with dropout its masks."""
    T, C, nh = config.block_size, config.n_embd, config.n_head
    per_layer = 4 * T * (12 * C + nh * T) + (T * (nh * T + 2 * C) if config.dropout else 0)
    return rows * config.n_layer * per_layer


def row_chunks(config, batch_size: int, device: str) -> int:
    """How many row chunks a step of batch_size rows runs as: 1 off the CPU or when it fits CPU_STEP_ACTIVATIONS,
    else the fewest that divide batch_size and fit it (one row each at worst)."""
    if device.split(":")[0] != "CPU" or not isinstance(config, GPTConfig):  # the bigram model keeps next to nothing
        return 1
    return next(k for k in range(1, batch_size + 1)
                if batch_size % k == 0 and (activation_bytes(config, batch_size // k) <= CPU_STEP_ACTIVATIONS
                                            or k == batch_size))


def capture_from_first_call(device: str, jits: tuple[TinyJit, ...], *holders):
    """Make a train step's jits capture on their first call (see make_eval_steps): the lazy state they read,
    dropout's RNG and the holders' tensors (model, optimizer, loss scaler), realized here, is all there is."""
    realize_rng(device)
    Tensor.realize(*[t for h in holders for t in get_parameters(h)])
    for jit in jits:
        capture_on_first_call(jit)


def make_train_step(model: GPT, optimizer: OptimizerGroup, data: Tensor, cfg: TrainConfig,
                    devices: tuple[str, ...] = (), scaler: LossScaler | None = None, chunks: int | None = None):
    """step(ix): one jitted call that gathers the gradient_accumulation_steps batches at the offsets ix
    ((gradient_accumulation_steps, batch_size) int32, random_offsets) on the device, accumulates, clips, AdamW.

    With devices, each batch is split across them; with a scaler (float16), the loss is scaled and a step whose
    gradients overflowed is skipped. By default a CPU step without dropout runs a share of the batch on each core
    (step_cores, make_core_parallel_train_step); else chunks (default row_chunks) > 1: make_chunked_train_step;
    chunks=1 keeps it whole, split kernel by kernel."""
    if chunks is None:
        if not devices and scaler is None and step_cores(model.config, cfg.batch_size, data.device)[0] > 1:
            return make_core_parallel_train_step(model, optimizer, data, cfg)
        chunks = 1 if devices or scaler is not None else row_chunks(model.config, cfg.batch_size, data.device)
    if chunks > 1:
        return make_chunked_train_step(model, optimizer, data, cfg, chunks)
    params = optimizer.params
    dtype = DTYPES[resolve_dtype(cfg.dtype, data.device)[0]]  # train() resolved it already; a direct call may not
    ix = offsets_buffer((cfg.gradient_accumulation_steps, cfg.batch_size), data.device)

    @TinyJit
    @Context(TRAINING=1)
    def train_step() -> Tensor:
        optimizer.zero_grad()
        with autocast(model, dtype):
            for micro_step in range(cfg.gradient_accumulation_steps):
                x, y = get_batch(data, ix[micro_step], cfg.block_size)
                _, loss = model(split_batch(x, devices), split_batch(y, devices))
                scaled = scaler.scale_loss(loss) if scaler is not None else loss
                (scaled / cfg.gradient_accumulation_steps).backward()  # scale the loss to account for accumulation
        state = []
        if scaler is not None:
            ok = scaler.unscale_(params)
            for opt in optimizer.optimizers:
                opt.ok = ok
            state = scaler.update(ok)
        if cfg.grad_clip != 0.0:
            clip_grad_norm(params, cfg.grad_clip)
        return loss.realize(*optimizer.schedule_step(), *state)  # the last micro-step's loss, as nanoGPT logs it

    capture_from_first_call(data.device, (train_step,), model, optimizer, *([scaler] if scaler else []))

    def step(offsets: np.ndarray) -> Tensor:
        write(ix, offsets)
        return train_step()
    return step


def gradient_buffers(params: list[Tensor]) -> list[Tensor]:
    """A realized zero buffer per parameter, of its shape and dtype: where a jitted backward leaves its gradients for
    a later jitted update (update_from)."""
    grads = [Tensor.zeros(p.shape, dtype=p.dtype, device=p.device).contiguous() for p in params]
    Tensor.realize(*grads)  # in one schedule: one by one, each zero buffer was a schedule of its own
    return grads


def update_from(optimizer: OptimizerGroup, grads: list[Tensor], grad_clip: float) -> list[Tensor]:
    """Inside a jitted update: take grads (buffers or lazy sums of them) as the parameters' gradients, clip them to
    grad_clip (0: no clipping), and return AdamW's step, to be realized."""
    for g, p in zip(grads, optimizer.params):
        p.grad = g
    if grad_clip != 0.0:
        clip_grad_norm(optimizer.params, grad_clip)
    return optimizer.schedule_step()


def make_chunked_train_step(model: GPT, optimizer: OptimizerGroup, data: Tensor, cfg: TrainConfig, chunks: int):
    """make_train_step's step with each batch in chunks of batch_size // chunks rows, for a smaller step memory:
    a jitted forward and backward per chunk, its gradients added into buffers, then a jitted clip and AdamW. The
    same arithmetic up to the order of the gradients' sums; dropout draws its masks chunk by chunk. One device and
    no loss scaling (make_train_step keeps data parallel and float16 whole)."""
    params = optimizer.params
    dtype = DTYPES[resolve_dtype(cfg.dtype, data.device)[0]]
    if cfg.batch_size % chunks:
        raise ConfigError(f"--batch_size={cfg.batch_size} does not split into {chunks} chunks of rows")
    rows, micro_steps = cfg.batch_size // chunks, cfg.gradient_accumulation_steps * chunks
    print(f"each batch of {cfg.batch_size} rows runs as {chunks} chunks of {rows}, gradients summed: a smaller step "
          f"memory (about {activation_bytes(model.config, rows) / 2**20:,.0f} MiB of activations against "
          f"{activation_bytes(model.config, cfg.batch_size) / 2**20:,.0f}), the same arithmetic")
    ix = offsets_buffer((rows,), data.device)
    # 0.0 at the first chunk of a step (of a micro-step, for the loss), 1.0 after: buffers the jit reads, so the
    # sums restart without a second capture
    keep_grads, keep_loss = (Tensor.zeros(1, device=data.device).contiguous().realize() for _ in range(2))
    grads = gradient_buffers(params)
    loss_sum = Tensor.zeros(1, device=data.device).contiguous().realize()  # the mean of a micro-step's chunk losses

    @TinyJit
    @Context(TRAINING=1)
    def chunk_step() -> Tensor:
        optimizer.zero_grad()
        with autocast(model, dtype):
            x, y = get_batch(data, ix, cfg.block_size)
            _, loss = model(x, y)
            (loss / micro_steps).backward()  # each chunk's mean loss, scaled: the batch's mean over all of them
        sums = [g.assign(g * keep_grads + p.grad) for g, p in zip(grads, params)]
        optimizer.zero_grad()  # a live lazy gradient would keep its buffers out of the jit's memory plan
        return loss_sum.assign(loss_sum * keep_loss + loss.reshape(1) / chunks).realize(*sums)

    @TinyJit
    @Context(TRAINING=1)
    def update():
        Tensor.realize(*update_from(optimizer, grads, cfg.grad_clip))

    capture_from_first_call(data.device, (chunk_step, update), model, optimizer)

    def step(offsets: np.ndarray) -> Tensor:
        for i, chunk in enumerate(offsets.reshape(micro_steps, rows)):
            write(ix, chunk)
            write(keep_grads, KEEP[int(i > 0)])
            write(keep_loss, KEEP[int(i % chunks > 0)])
            loss = chunk_step()
        update()
        return loss  # the last micro-step's loss, as nanoGPT logs it
    return step


def step_cores(config, batch_size: int, device: str) -> tuple[int, int]:
    """(cores, calls) for a CPU step as a share of the rows per core (make_core_parallel_train_step): all of the CPU
    runtime's cores (cpu.runtime.cores()), each running its share as the fewest calls of equal rows whose activations,
    for all cores at once, fit CPU_STEP_ACTIVATIONS. (1, 1) where the step stays split kernel by kernel: off the CPU,
    rows that do not divide, or dropout, whose masks come from one RNG counter that calls at once would race on."""
    if device.split(":")[0] != "CPU" or not isinstance(config, GPTConfig) or config.dropout:
        return 1, 1
    k = cpu_runtime.cores()
    if k < 2 or batch_size % k:
        return 1, 1
    share = batch_size // k
    calls = next(c for c in range(1, share + 1) if share % c == 0 and (
        k * activation_bytes(config, share // c) <= CPU_STEP_ACTIVATIONS or c == share))
    return k, calls


def make_core_parallel_train_step(model: GPT, optimizer: OptimizerGroup, data: Tensor, cfg: TrainConfig):
    """make_train_step's step on the CPU's cores at once (step_cores), each the forward and backward of its share of
    the rows (for every micro-step) into gradient buffers of its own, in one or more calls of equal rows, every kernel
    on its core: one jit, captured once and copied for the other cores (cpu.replica: a capture is the slowest Python of
    a start); then one jitted sum of those gradients, clip and AdamW, split across the cores. The same
    arithmetic up to the order of the gradients' sums. Split kernel by kernel instead, each kernel's output crosses to
    the other core, which on a VM whose vCPUs move apart is up to 1.45x slower (cpu/runtime.py, BENCHMARKS.md)."""
    cores, calls = step_cores(model.config, cfg.batch_size, data.device)
    params = optimizer.params
    dtype = DTYPES[resolve_dtype(cfg.dtype, data.device)[0]]
    rows, accum = cfg.batch_size // (cores * calls), cfg.gradient_accumulation_steps
    print(f"each batch of {cfg.batch_size} rows runs as {cores} shares of {rows * calls}, one per CPU core at once"
          + (f", each in {calls} calls of {rows} rows (about {activation_bytes(model.config, rows) / 2**20:,.0f} MiB of "
             f"activations a call)" if calls > 1 else "") + ", gradients summed")

    # per core: its offsets, keep (0.0 at its first call of a step, then 1.0), loss and gradients
    shares = [(offsets_buffer((accum, rows), data.device), *(Tensor.zeros(1, device=data.device).contiguous()
               for _ in range(2)), gradient_buffers(params)) for _ in range(cores)]
    Tensor.realize(*[t for ix, keep, loss_out, _ in shares for t in (keep, loss_out)])

    def make_share(ix: Tensor, keep: Tensor, loss_out: Tensor, grads: list[Tensor]):
        @TinyJit
        @Context(TRAINING=1)
        def share() -> Tensor:
            optimizer.zero_grad()
            with autocast(model, dtype):
                for micro_step in range(accum):
                    x, y = get_batch(data, ix[micro_step], cfg.block_size)
                    _, loss = model(x, y)
                    (loss / (accum * cores * calls)).backward()  # the mean over all rows of all micro-steps
            sums = [g.assign(g * keep + p.grad) for g, p in zip(grads, params)]
            optimizer.zero_grad()  # a live lazy gradient would keep its buffers out of the jit's memory plan
            return loss_out.assign(loss_out * keep + loss.reshape(1) / (cores * calls)).realize(*sums)  # the last micro-step's
        return share
    loss_sum = Tensor.zeros(1, device=data.device).contiguous().realize()

    @TinyJit
    @Context(TRAINING=1)
    def update(*losses: Tensor) -> Tensor:
        grads = [sum(gs[1:], gs[0]) for gs in zip(*(grads for *_, grads in shares))]
        return loss_sum.assign(sum(losses[1:], losses[0])).realize(*update_from(optimizer, grads, cfg.grad_clip))

    jits = [make_share(*shares[0])]  # core 0's; the others' once it is captured (the first step)
    capture_from_first_call(data.device, (jits[0], update), model, optimizer)

    def run_share(k: int, offsets: np.ndarray) -> Tensor:
        ix, keep, loss_out, _ = shares[k]
        for j in range(calls):
            first = (k * calls + j) * rows
            write(ix, np.ascontiguousarray(offsets[:, first:first + rows]))
            if calls > 1:  # with one call, keep stays 0.0
                write(keep, KEEP[int(j > 0)])
            jits[k]()
        return loss_out

    def step(offsets: np.ndarray) -> Tensor:
        if len(jits) == cores:
            losses = cpu_runtime.on_cores([lambda k=k: run_share(k, offsets) for k in range(cores)])
        else:  # the first call captures core 0's jit; every other core takes a copy of it on its own buffers, with
            losses = [run_share(0, offsets)]  # scratch memory of its own (the copies run at once), or where there is
            for k in range(1, cores):  # none, a capture of its own in a scratch lane
                (*core0, grads0), (*own, grads) = shares[0], shares[k]
                swap = dict(zip(core0 + grads0, own + grads))  # core 0's buffers -> this core's
                jits.append(cpu.replica(jits[0], k, swap) or capture_on_first_call(make_share(*shares[k])))
                with cpu.scratch_lane(k):
                    losses.append(run_share(k, offsets))
        return update(*losses)  # the last micro-step's loss, as nanoGPT logs it
    return step


def make_eval_steps(model: GPT, splits: dict[str, Tensor], cfg: TrainConfig, gen: TorchGenerator,
                    devices: tuple[str, ...] = ()) -> dict:
    """{split: step()}, each step the loss of one batch of its split at offsets drawn from gen, all through one jit.

    The splits' tokens are concatenated once and a step writes its offsets, shifted to its split, into the buffer
    the jit reads: one capture serves every split. The jit captures on its first call: TinyJit's usual eager first
    call only serves lazy state, and a forward pass has none once the weights are realized. One capture for both
    splits instead of one each: one capture less before the first iter line."""
    first = next(iter(splits.values()))
    dtype = DTYPES[resolve_dtype(cfg.dtype, first.device)[0]]
    data = Tensor.cat(*splits.values()).contiguous().realize() if len(splits) > 1 else first
    ix = offsets_buffer((cfg.batch_size,), first.device)

    @TinyJit
    def eval_step() -> Tensor:
        x, y = get_batch(data, ix, cfg.block_size)
        with autocast(model, dtype):
            return model(split_batch(x, devices), split_batch(y, devices))[1].realize()

    Tensor.realize(*get_parameters(model))
    capture_on_first_call(eval_step)

    def step_at(start: int, n_tokens: int):
        def step() -> Tensor:
            write(ix, random_offsets(gen, n_tokens, cfg.batch_size, cfg.block_size) + start)
            return eval_step()
        return step
    steps, start = {}, 0
    for split, tokens in splits.items():
        steps[split] = step_at(start, tokens.shape[0])
        start += tokens.shape[0]
    return steps


def estimate_loss(eval_steps: dict, eval_iters: int, before_batch=None) -> dict[str, float] | None:
    """Mean loss over eval_iters random batches of each split (nanoGPT's estimate_loss). before_batch(i), if given,
    is called before batch i of each split; when it returns True the eval ends there and this returns None."""
    out = {}
    for split, step in eval_steps.items():
        losses = []
        for i in progress(range(eval_iters), f"eval {split}", unit="batches"):
            if before_batch is not None and before_batch(i):
                return None
            losses.append(item(step()))
        out[split] = float(np.mean(losses))
    return out


def check_writable(out_dir: Path):
    """Fail before any compile when out_dir cannot hold checkpoints. The directories made to find out are removed
    again: the run makes them at its first record, so a run that fails before it leaves none behind."""
    made = [p for p in (out_dir, *out_dir.parents) if not p.exists()]  # deepest first
    try:
        fsio.check_writable(out_dir)
    except OSError as e:
        raise ConfigError(f"--out_dir={out_dir} cannot be written ({e.strerror or e}); choose a writable directory") from None
    finally:
        for p in made:
            with contextlib.suppress(OSError):  # gone already, or another process wrote into it meanwhile
                p.rmdir()


@dataclass
class RunState:
    """Where a run stands, besides the weights and AdamW's moments: what a checkpoint saves with them."""
    iter_num: int
    best_val_loss: float
    batches: TorchGenerator  # the batch offsets' random stream (nanoGPT's torch generator)
    device: str  # whose tinygrad RNG draws the dropout masks
    last_saved: str = "none saved yet"

    def rng(self) -> dict[str, np.ndarray]:
        """Where the batch offsets' and dropout's random streams are now."""
        return {"rng.batches": self.batches.get_state(), "rng.state": rng_state(self.device)}

    def restore_rng(self, arrays: dict[str, np.ndarray], seed: int):
        """The random streams as a checkpoint saved them; fresh ones for a checkpoint without (nanoGPT's), so a
        resume does not replay the first run's batches."""
        if "rng.batches" in arrays:
            self.batches.set_state(arrays["rng.batches"])
            set_rng_state(self.device, arrays["rng.state"])
        else:
            self.batches.set_state(TorchGenerator(seed + self.iter_num).get_state())
            Tensor.manual_seed(seed + self.iter_num)


@dataclass
class Run:
    """A training run set up (setup): its config, data, model, optimizer, jitted steps and state."""
    cfg: TrainConfig
    out_dir: Path
    model_args: dict
    tokenizer: object
    model: object
    optimizer: OptimizerGroup
    scaler: LossScaler | None
    train_step: object  # step(offsets) -> loss
    eval_steps: dict
    n_train: int  # tokens in the train split
    state: RunState

    def checkpoint(self, rng: dict[str, np.ndarray]):
        """Save the run as it stands before iteration state.iter_num, with the RNG states rng (RunState.rng()) of then."""
        s = self.state
        info = dict(model_args=self.model_args, iter_num=s.iter_num, best_val_loss=s.best_val_loss,
                    config=asdict(self.cfg), meta=self.tokenizer.meta(), device=s.device)
        print(f"saving checkpoint to {self.out_dir}")
        extra = rng | (self.scaler.state() if self.scaler is not None else {})
        try:
            save_checkpoint(self.out_dir, self.model, self.optimizer, info, extra)
        except FloatingPointError:  # non-finite weights are never saved (checkpoint.check_finite), on any path
            raise self.diverged("a weight", "inf or nan") from None
        s.last_saved = f"{self.out_dir / CKPT_NAME} (iter {s.iter_num})"

    def diverged(self, what: str, value: float | str) -> FloatingPointError:
        s = self.state
        if s.last_saved == RunState.last_saved:  # nothing saved by this run or before it
            kept = "No checkpoint was saved; lower --learning_rate or --grad_clip and start again"
        else:
            kept = (f"The last good checkpoint, {s.last_saved}, is untouched; lower --learning_rate or --grad_clip "
                    "and resume from it")
        return FloatingPointError(f"{what} is {value} at iter {s.iter_num}; training diverged. {kept}")


def load_dataset(dataset: str) -> tuple[Path, object, dict[str, Tensor]]:
    """data/<dataset>: its meta file, tokenizer, and train and val splits as tensors on the device."""
    data_dir = Path("data") / dataset
    meta_path = next((data_dir / n for n in ("meta.json", "meta.pkl") if (data_dir / n).is_file()), None)  # ours, nanoGPT's
    if meta_path is None:
        raise FileNotFoundError(f"{data_dir / 'meta.json'} not found; prepare the dataset first: python "
                                f"data/{dataset}/prepare.py (or python -m nanogpt_tg.prepare --input FILE --dataset {dataset})")
    tokenizer = load_tokenizer(meta_path) if meta_path.suffix == ".json" else from_meta(read_vocabulary(meta_path))
    print(f"found vocab_size = {tokenizer.vocab_size} (inside {meta_path})")
    return meta_path, tokenizer, {split: load_split(data_dir, split, tokenizer.vocab_size) for split in ("train", "val")}


def setup(cfg: TrainConfig) -> Run:
    """nanoGPT's train.py up to its loop: device, data, model (scratch or resume), optimizer, the jitted steps."""
    check_train_config(cfg)
    device = set_device(cfg.device)
    devices = parse_devices(cfg.devices, device)
    check_batch(cfg.batch_size, devices)
    dtype, note = resolve_dtype(cfg.dtype, device)
    if note:
        print(note)
    if device.split(":")[0] == "CPU":
        print(cpu.describe())
    if devices:
        print(f"data parallel over {len(devices)} devices: {', '.join(devices)} ({cfg.batch_size // len(devices)} rows each)")
    tokens_per_iter = cfg.gradient_accumulation_steps * cfg.batch_size * cfg.block_size
    print(f"tokens per iteration will be: {tokens_per_iter:,}")
    out_dir = Path(cfg.out_dir)
    check_writable(out_dir)
    gen = TorchGenerator(cfg.seed)  # nanoGPT's torch.manual_seed: the same initial weights and batches as nanoGPT
    Tensor.manual_seed(cfg.seed)  # tinygrad's, for dropout on the device
    meta_path, tokenizer, splits = load_dataset(cfg.dataset)

    # model init
    state = RunState(iter_num=0, best_val_loss=1e9, batches=gen, device=device)
    model_args = dict(n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, block_size=cfg.block_size,
                      bias=cfg.bias, vocab_size=tokenizer.vocab_size, dropout=cfg.dropout)
    arrays = pretrained = None
    if cfg.init_from == "scratch":
        print("Initializing a new model from scratch")
    elif cfg.init_from == "resume":
        print(f"Resuming training from {out_dir}")
        arrays, info = load_any_checkpoint(out_dir)  # ours, or nanoGPT's ckpt.pt
        # force these config attributes to be equal otherwise we can't even resume training
        shape = ["n_layer", "n_head", "n_embd", "block_size", "bias"]
        overridden = [f"{k}={info['model_args'][k]} (not --{k}={getattr(cfg, k)})" for k in shape
                      if info["model_args"][k] != getattr(cfg, k)]
        if overridden:
            print(f"--init_from=resume: the model's shape is the checkpoint's: {', '.join(overridden)}")
        for k in shape + ["vocab_size"]:
            model_args[k] = info["model_args"][k]
        model_args["activation"] = info["model_args"].get("activation", "gelu")  # GPT-2's gelu_new, once finetuned
        if "meta" in info and from_meta(info["meta"]).meta() != tokenizer.meta():
            raise ValueError(f"the checkpoint in {out_dir} was trained on another vocabulary than {meta_path}; "
                             f"resume with the dataset it was trained on ({info['config'].get('dataset')})")
        if info["config"].get("model", "gpt") != cfg.model:
            raise ValueError(f"the checkpoint in {out_dir} holds a {info['config'].get('model', 'gpt')} model; "
                             f"resume with --model={info['config'].get('model', 'gpt')}")
        state.iter_num, state.best_val_loss = info["iter_num"], info["best_val_loss"]
        state.last_saved = f"{out_dir / CKPT_NAME} (iter {state.iter_num})"
    else:  # OpenAI's GPT-2 weights, by size (gpt2, ..., gpt2-xl) or a Hugging Face directory: nanogpt_tg/gpt2.py
        print(f"Initializing from OpenAI GPT-2 weights: {cfg.init_from}")
        pretrained, model_dir = gpt2.from_pretrained(cfg.init_from, dict(dropout=cfg.dropout))
        gpt2.check_finetune(pretrained, model_dir, cfg.block_size, tokenizer, meta_path)
        if cfg.block_size < pretrained.config.block_size:  # crop down the model block size, using model surgery
            gpt2.crop_block_size(pretrained, cfg.block_size)
        model_args = asdict(pretrained.config)  # so that the checkpoint will have the right values
    cfg = replace(cfg, dtype=dtype, block_size=model_args["block_size"])  # what this run computes with, as saved
    for split, data in splits.items():
        if data.shape[0] <= cfg.block_size:
            raise ConfigError(f"--block_size={cfg.block_size} is too large for data/{cfg.dataset}/{split}.bin "
                              f"({data.shape[0]:,} tokens); use --block_size={data.shape[0] - 1} or less, or a longer text")
    # the steps' scratch memory as this shape's last run needed it, faulted in on the idle core while they are built
    cpu.expect_scratch(repr((model_args, cfg.model, cfg.batch_size, cfg.gradient_accumulation_steps, dtype, devices)))
    model = build_model(cfg.model, model_args, generator=gen) if pretrained is None else pretrained
    if devices:  # before the optimizer, so that its moments are replicated too
        replicate(model.parameters(), devices)
    optimizer = configure_optimizer(model, cfg)
    scaler = LossScaler(devices or device) if cfg.dtype == "float16" else None
    if arrays is not None:
        load_weights(model, arrays, out_dir)
        load_optimizer(model, optimizer, arrays, out_dir)
        if scaler is not None:  # float16: the loss scale goes on where it was (a checkpoint without one starts afresh)
            scaler.load_state(arrays)
        state.restore_rng(arrays, cfg.seed)  # batches and dropout go on exactly where the interrupted run was
    return Run(cfg=cfg, out_dir=out_dir, model_args=model_args, tokenizer=tokenizer, model=model, optimizer=optimizer,
               scaler=scaler, train_step=make_train_step(model, optimizer, splits["train"], cfg, devices, scaler),
               eval_steps=make_eval_steps(model, splits, cfg, state.batches, devices), n_train=splits["train"].shape[0],
               state=state)


def train(cfg: TrainConfig, on_metrics=None) -> dict:
    """Train per cfg (nanoGPT's train.py); returns iter_num, best_val_loss, the eval losses and the model.

    Appends to out_dir/metrics.jsonl as it goes; on_metrics(record), if given, sees each record too (a live plot).
    """
    check_train_config(cfg)
    check_writable(Path(cfg.out_dir))
    with fsio.DirLock(cfg.out_dir):  # one run per out_dir, from the start: a second would replace its checkpoints
        return loop(setup(cfg), on_metrics)


def loop(run: Run, on_metrics=None) -> dict:
    """nanoGPT's training loop on a set-up run (lr, eval/checkpoint, step, log), until max_iters or a signal (which
    raises interrupt.Stopped, after its checkpoint once a step is done)."""
    cfg, model, s = run.cfg, run.model, run.state
    tokens_per_iter = cfg.gradient_accumulation_steps * cfg.batch_size * cfg.block_size
    metrics = MetricsLog(run.out_dir, s.iter_num, cfg.init_from, on_record=on_metrics)
    eta = ETA(cfg.max_iters)  # on a terminal, the iter line ends with the time left
    estimate = RunEstimate(cfg, s.iter_num, s.device, kind(s.device) == "cpu", len(run.eval_steps))  # hours: says so
    if not cfg.eval_only:
        print(f"note: mfu in the iter lines is nanoGPT's, a percentage of an A100's bfloat16 peak "
              f"({A100_BF16_FLOPS / 1e12:.0f} TFLOP/s); python bench.py gives it against this device's peak too")
    losses_log = []
    flops_per_iter = model.flops_per_iter(cfg.batch_size * cfg.gradient_accumulation_steps)
    t0 = time.time()
    local_iter_num = 0  # number of iterations in the lifetime of this process
    running_mfu = -1.0
    # until the first step is done a signal stops at once (nothing new to save); after, at the next step or eval batch
    with Interrupt("nothing to save yet" if cfg.init_from != "resume" else
                   f"nothing new to save; {s.last_saved} is as it was") as interrupt:

        def before_batch(i: int) -> bool:
            estimate.eval_batch(i)
            return interrupt.requested is not None
        while True:
            # determine and set the learning rate for this iteration
            lr = get_lr(s.iter_num, cfg)
            set_lr(run.optimizer, lr)

            # nanoGPT fetches a step's first batch before it evaluates (the end of the previous step), the rest after
            evaluating = s.iter_num % cfg.eval_interval == 0 or cfg.eval_only  # eval_only: at any iteration
            rng_before_eval = s.rng() if evaluating else None  # a resume from here repeats this eval, then the step
            ix = [random_offsets(s.batches, run.n_train, cfg.batch_size, cfg.block_size)]

            # evaluate the loss on train/val sets and write checkpoints
            if evaluating:
                losses = estimate_loss(run.eval_steps, cfg.eval_iters, before_batch)
                if losses is None:  # a signal: the eval ends here, and the checkpoint is the run as it was before it
                    run.checkpoint(rng_before_eval)
                    raise Stopped(f"stopped by {interrupt.requested} at iter {s.iter_num}, in its eval; resume with "
                                  "--init_from=resume")
                print(f"step {s.iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
                losses_log.append({"iter": s.iter_num, **losses})
                metrics.log("eval", s.iter_num, train_loss=losses["train"], val_loss=losses["val"], lr=lr)
                if not math.isfinite(losses["val"]):
                    raise run.diverged("val loss", losses["val"])
                if losses["val"] < s.best_val_loss or cfg.always_save_checkpoint:
                    s.best_val_loss = losses["val"]
                    if s.iter_num > 0 and not cfg.eval_only:  # evaluating a checkpoint leaves it as it is
                        run.checkpoint(rng_before_eval)
            if cfg.eval_only:  # nanoGPT tests iter_num == 0 too, so a resumed eval_only run trained on; here it stops
                break

            # forward backward update, with optional gradient accumulation, in one jitted call (a large CPU step: one per
            # row chunk, then one for the update)
            ix += [random_offsets(s.batches, run.n_train, cfg.batch_size, cfg.block_size)
                   for _ in range(cfg.gradient_accumulation_steps - 1)]
            loss = run.train_step(np.stack(ix))
            lossf = item(loss)  # also waits for the step to finish
            if run.scaler is not None and run.scaler.skipped.item():
                print(f"iter {s.iter_num}: float16 gradients overflowed; step skipped, loss scale now "
                      f"{run.scaler.scale.item():g}")

            # timing and logging
            t1 = time.time()
            dt = t1 - t0
            t0 = t1
            estimate.step(dt)
            if s.iter_num % cfg.log_interval == 0:
                if local_iter_num >= 5:  # let the training loop settle a bit
                    mfu = flops_per_iter / dt / A100_BF16_FLOPS  # model.estimate_mfu, its parameter count taken once
                    running_mfu = mfu if running_mfu == -1.0 else 0.9 * running_mfu + 0.1 * mfu
                print(f"iter {s.iter_num}: loss {lossf:.4f}, time {dt * 1000:.2f}ms, mfu {running_mfu * 100:.2f}%"
                      f"{eta.suffix(s.iter_num)}")
                metrics.log("iter", s.iter_num, loss=lossf, lr=lr, ms_per_iter=dt * 1000,
                            tokens_per_s=tokens_per_iter / dt)
            if not math.isfinite(lossf):
                raise run.diverged("loss", lossf)
            s.iter_num += 1
            local_iter_num += 1
            interrupt.armed = True  # a step is done: from here a signal saves it

            if interrupt.requested:
                run.checkpoint(s.rng())
                # saved: cli.run prints the line and quits at once (quit_now), as a normal exit can hang on tinygrad's
                # compile workers when the same signal, sent to the process group, killed them
                raise Stopped(f"stopped by {interrupt.requested} at iter {s.iter_num}; resume with --init_from=resume")
            # termination conditions
            if s.iter_num > cfg.max_iters:
                break
    return {"iter_num": s.iter_num, "best_val_loss": s.best_val_loss, "losses": losses_log, "model": model}
