"""How long a training run will take, from the first timed eval batches and steps of this process. When that is
hours, one line says so and names a run that fits the device: nanoGPT's GPU preset started on a CPU would otherwise
look stuck for an hour in its first eval."""
import sys
import time
from statistics import median

from .config import TrainConfig
from .progress import format_duration, on_terminal

LONG = 3600.0  # seconds: a run estimated at this or more gets the line
CPU_PRESET = "config/train_shakespeare_char_cpu.py"  # nanoGPT's README CPU command
STEP_FORWARDS = 3  # a micro-step (forward and backward) costs about three forward passes: 6N against 2N FLOPs a token


class RunEstimate:
    """Call eval_batch(i) before each eval batch and step(dt) after each training step; after the first few of
    either, prints once when the run is estimated to take hours. Nothing is timed that the run does not do anyway."""

    def __init__(self, cfg: TrainConfig, iter_num: int, device: str, on_cpu: bool, n_splits: int = 2):
        self.cfg, self.start, self.device, self.on_cpu, self.n_splits = cfg, iter_num, device, on_cpu, n_splits
        self.batch_s: list[float] = []  # eval batches: the first of them compiles, the median leaves it out
        self.step_s: list[float] = []
        self.last = 0.0
        self.checked: set[str] = set()
        self.said = False

    def eval_batch(self, i: int):
        """Before batch i of an eval split: the time since batch i-1 started is that batch's."""
        now = time.perf_counter()
        if i > 0:
            self.batch_s.append(now - self.last)
            if len(self.batch_s) == 4:
                self.check("eval")
        self.last = now

    def step(self, dt: float):
        """After a training step that took dt seconds (the first ones compile, an eval's iteration is longer)."""
        self.step_s.append(dt)
        if len(self.step_s) == 5:
            self.check("step")

    def counts(self) -> tuple[int, int]:
        """(training steps, evals) left from the iteration this process started at."""
        cfg = self.cfg
        if cfg.eval_only:
            return 0, 1
        evals = cfg.max_iters // cfg.eval_interval - (self.start - 1) // cfg.eval_interval  # multiples in the range
        return max(cfg.max_iters + 1 - self.start, 0), max(evals, 0)

    def seconds(self) -> float:
        """The whole run's seconds from this process's start, from the medians timed so far."""
        per_forward = STEP_FORWARDS * self.cfg.gradient_accumulation_steps
        batch = median(self.batch_s) if self.batch_s else median(self.step_s) / per_forward
        step = median(self.step_s) if self.step_s else batch * per_forward
        steps, evals = self.counts()
        return steps * step + evals * self.n_splits * self.cfg.eval_iters * batch

    def check(self, source: str):
        if self.said or source in self.checked:
            return
        self.checked.add(source)
        seconds = self.seconds()
        if seconds < LONG:
            return
        self.said = True
        steps, evals = self.counts()
        cfg = self.cfg
        if self.on_cpu:
            other = "" if cfg.dataset == "shakespeare_char" else f" --dataset={cfg.dataset} --out_dir=out-{cfg.dataset}-cpu"
            hint = f"nanoGPT's CPU run takes minutes: python train.py {CPU_PRESET}{other}"
        else:
            hint = "fewer --max_iters or --eval_iters, or a smaller model, make it shorter"
        erase = "\r\x1b[K" if on_terminal(sys.stdout) else ""  # an eval's counter may be drawn on this line
        print(f"{erase}note: this run will take about {format_duration(seconds)} on {self.device} ({steps:,} iterations, "
              f"{evals:,} evals of {self.n_splits} x {cfg.eval_iters} batches); {hint}", flush=True)
