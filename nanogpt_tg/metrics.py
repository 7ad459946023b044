"""Training metrics as JSON lines in out_dir/metrics.jsonl: what nanoGPT sends to wandb, kept in a file you can plot.

Records, one per line, all with "kind", "iter" and "time" (unix seconds):
  start  a run begins (init_from: scratch or resume)
  eval   train_loss, val_loss, lr              (nanoGPT's `step N: train loss ..., val loss ...` line)
  iter   loss, lr, ms_per_iter, tokens_per_s   (nanoGPT's `iter N: loss ..., time ...ms` line)
A resumed run appends to the file and starts again at its checkpoint's iteration, so readers keep the latest run: a
start at iteration n replaces the records at n and after (read_metrics does this). A run from scratch starts a new
file and keeps the old one as metrics.jsonl.1 (or .2, ...).
"""
import errno
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

METRICS_NAME = "metrics.jsonl"


class MetricsLog:
    """Appends records to out_dir/metrics.jsonl, opening with a start record; on_record sees each one (a live plot).

    The file (and out_dir) is written from the first record after the start, so a run that fails before its first
    eval or iter line leaves nothing behind. A write that fails (a full disk) prints one warning and training goes
    on: the metrics are a log, the checkpoint is what must not be lost (checkpoint.py keeps the previous one whole).
    """

    def __init__(self, out_dir: str | Path, iter_num: int, init_from: str,
                 on_record: Callable[[dict], None] | None = None):
        self.path = Path(out_dir) / METRICS_NAME
        self.on_record = on_record
        self.pending: list[dict] = []  # the start record, until there is a record to write with it
        self.failed = False  # the last write failed: the next one starts on a new line
        if init_from == "scratch" and self.path.exists():
            kept = next(p for n in range(1, 10**6) if not (p := self.path.with_name(f"{METRICS_NAME}.{n}")).exists())
            try:
                self.path.rename(kept)
            except OSError as e:
                raise OSError(f"could not keep {self.path} (an earlier run's) as {kept.name}: {e.strerror or e}; move "
                              "it away or choose another --out_dir") from None
            print(f"{self.path} held an earlier run's metrics: kept as {kept.name}; this run starts a new file")
        self.log("start", iter_num, init_from=init_from)

    def log(self, kind: str, iter_num: int, **values):
        record = {"kind": kind, "iter": iter_num, **values, "time": round(time.time(), 3)}
        self.pending.append(record)
        if kind != "start":
            self.write()
        if self.on_record is not None:
            self.on_record(record)

    def write(self):
        """Append the pending records, each on a line of its own, even after a line cut short by a crash."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # opened per record, so a crash loses at most the line being written; a symlink here is refused
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
            try:
                size = os.fstat(fd).st_size
                cut = size > 0 and (self.failed or os.pread(fd, 1, size - 1) != b"\n")
                data = memoryview(b"\n" * cut + b"".join(json.dumps(r).encode() + b"\n" for r in self.pending))
                while data:
                    data = data[os.write(fd, data):]
            finally:
                os.close(fd)
            self.pending, self.failed = [], False
        except OSError as e:
            if not self.failed:
                fix = ("free disk space (checkpoints need it too)" if e.errno in (errno.ENOSPC, errno.EDQUOT) else
                       "make it a file this run can write")
                print(f"warning: could not append to {self.path} ({e.strerror or e}); training goes on and the metrics "
                      f"are written again once it can: {fix}", file=sys.stderr)
            self.pending = [r for r in self.pending if r["kind"] == "start"]  # a resume's start still stitches right
            self.failed = True


def read_metrics(path: str | Path) -> list[dict]:
    """The records of the latest run in a metrics.jsonl (or an out_dir holding one), resumes stitched in.

    A start record at iteration n drops the earlier records at n and after: a resumed run repeats them. Of records
    that are still repeated (a start record lost to a crash), the last of each kind and iteration is kept. A line
    cut short by a crash is skipped; a record an older version appended to such a line is read.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; train first (train.py writes it into --out_dir), e.g. "
                                f"python train.py config/train_shakespeare_char.py --out_dir={path.parent}")
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line[max(line.rfind('{"kind": '), 0):])  # past a cut line, if one came before it
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "kind" in record and isinstance(record.get("iter"), int):
            append_record(records, record)
    last = {(r["kind"], r["iter"]): i for i, r in enumerate(records)}
    return [r for i, r in enumerate(records) if last[r["kind"], r["iter"]] == i]


def append_record(records: list[dict], record: dict):
    """Append record to records in place; a start record at iteration n first drops the records at n and after."""
    if record["kind"] == "start":
        records[:] = [r for r in records if r["iter"] < record["iter"]]
    records.append(record)


def curves(records: list[dict]) -> dict[str, tuple[list[int], list[float]]]:
    """(iters, losses) for: train (each logged iteration), eval_train and eval_val (each eval)."""
    out = {"train": ([], []), "eval_train": ([], []), "eval_val": ([], [])}
    sources = {"iter": [("train", "loss")], "eval": [("eval_train", "train_loss"), ("eval_val", "val_loss")]}
    for r in records:
        for name, key in sources.get(r["kind"], []):
            out[name][0].append(r["iter"])
            out[name][1].append(r[key])
    return out
