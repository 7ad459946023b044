"""Progress on long work, shown only on a terminal: an ETA for training, a counter redrawn in place for the rest.

Off a terminal (CI, log files, notebooks) everything here is silent, so logs keep nanoGPT's plain lines.
"""
import sys
import time


def on_terminal(stream) -> bool:
    """True when stream is an interactive terminal (not a file, a pipe or a notebook)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def format_duration(seconds: float) -> str:
    """12s, 3m05s, 1h02m."""
    s = int(round(seconds))
    h, m, s = s // 3600, s // 60 % 60, s % 60
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class ETA:
    """Time left in a training run: the mean wall time per iteration since the second logged one, times the
    iterations left. The first two steps compile (eager run, then jit capture) and are left out; evals count."""

    def __init__(self, max_iters: int, stream=None):
        self.max_iters = max_iters
        self.enabled = on_terminal(stream if stream is not None else sys.stdout)
        self.calls = 0
        self.mark: tuple[int, float] | None = None  # (iter_num, time) of the second call

    def seconds_left(self, iter_num: int) -> float | None:
        """None until the rate is known: at the first two calls."""
        now = time.time()
        self.calls += 1
        if self.calls == 2:
            self.mark = (iter_num, now)
        if self.mark is None:
            return None
        it0, t0 = self.mark
        if iter_num <= it0:
            return None
        return max(self.max_iters - iter_num, 0) * (now - t0) / (iter_num - it0)

    def suffix(self, iter_num: int) -> str:
        """', eta 1m23s' to append to the iter line on a terminal; '' off a terminal, so plain logs stay nanoGPT's."""
        if not self.enabled:
            return ""
        left = self.seconds_left(iter_num)
        return "" if left is None else f", eta {format_duration(left)}"


class Progress:
    """`desc: n/total unit [elapsed<left]`, redrawn in place on stderr when it is a terminal and the work has lasted
    longer than `delay` seconds; erased by close(). Silent off a terminal. total 0: unknown, no time left shown."""

    def __init__(self, total: int, desc: str, unit: str = "", stream=None, delay: float = 0.5):
        self.total, self.desc, self.unit, self.delay = total, desc, unit, delay
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = on_terminal(self.stream)
        self.n, self.start, self.last, self.drawn = 0, time.monotonic(), 0.0, False

    def update(self, n: int = 1):
        self.n += n
        now = time.monotonic()
        done = 0 < self.total <= self.n
        if not self.enabled or now - self.start < self.delay or (now - self.last < 0.1 and not done):
            return  # off a terminal, in the first delay seconds, or redrawn less than 0.1 s ago
        self.last, elapsed = now, now - self.start
        unit = f" {self.unit}" if self.unit else ""
        if self.total > 0:
            left = elapsed * max(self.total - self.n, 0) / max(self.n, 1)
            text = f"{self.n:,}/{self.total:,}{unit} [{format_duration(elapsed)}<{format_duration(left)}]"
        else:
            text = f"{self.n:,}{unit} [{format_duration(elapsed)}]"
        self.stream.write(f"\r{self.desc}: {text}\x1b[K")
        self.stream.flush()
        self.drawn = True

    def close(self):
        """Erase the line, so what is printed next starts on a clean line."""
        if self.drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.drawn = False


def progress(iterable, desc: str, total: int | None = None, unit: str = "", stream=None):
    """Yield from iterable with a Progress counter (like tqdm); total defaults to len(iterable)."""
    bar = Progress(len(iterable) if total is None else total, desc, unit, stream)
    try:
        for item in iterable:
            yield item
            bar.update()
    finally:
        bar.close()
