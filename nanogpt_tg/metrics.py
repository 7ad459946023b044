"""Training metrics as JSON lines in out_dir/metrics.jsonl: what nanoGPT sends to wandb, kept in a file you can plot.

Records, one per line, all with "kind", "iter" and "time" (unix seconds):
  start  a run begins (init_from: scratch or resume)
  eval   train_loss, val_loss, lr              (nanoGPT's `step N: train loss ..., val loss ...` line)
  iter   loss, lr, ms_per_iter, tokens_per_s   (nanoGPT's `iter N: loss ..., time ...ms` line)
The file is only ever appended to. A resumed run starts again at its checkpoint's iteration, so readers keep the
latest run: a start at iteration n replaces the records at n and after (read_metrics does this).
"""
import json
import time
from pathlib import Path
from typing import Callable

METRICS_NAME = "metrics.jsonl"


class MetricsLog:
    """Appends records to out_dir/metrics.jsonl, opening with a start record; on_record sees each one (a live plot)."""

    def __init__(self, out_dir: str | Path, iter_num: int, init_from: str,
                 on_record: Callable[[dict], None] | None = None):
        self.path = Path(out_dir) / METRICS_NAME
        self.on_record = on_record
        self.log("start", iter_num, init_from=init_from)

    def log(self, kind: str, iter_num: int, **values):
        record = {"kind": kind, "iter": iter_num, **values, "time": round(time.time(), 3)}
        with open(self.path, "a", encoding="utf-8") as f:  # opened per line: a crash loses at most the line
            f.write(json.dumps(record) + "\n")
        if self.on_record is not None:
            self.on_record(record)


def read_metrics(path: str | Path) -> list[dict]:
    """The records of the latest run in a metrics.jsonl (or an out_dir holding one), resumes stitched in.

    A start record at iteration n drops the earlier records at n and after: a resumed run repeats them.
    A line cut short by a crash is skipped.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; train first (train.py writes it into --out_dir), e.g. "
                                f"python train.py config/train_shakespeare_char.py --out_dir={path.parent}")
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "kind" in record and "iter" in record:
            append_record(records, record)
    return records


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
