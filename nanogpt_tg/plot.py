"""Loss curves from out_dir/metrics.jsonl: python -m nanogpt_tg.plot --out_dir=DIR writes DIR/loss.png.

Also a live version for notebooks: train(cfg, on_metrics=LiveLossPlot().update). Needs matplotlib, an optional
extra: pip install "nanogpt-tg[plot]".
"""
import argparse
import io
import time
from pathlib import Path

from .cli import run
from .fsio import write_bytes
from .metrics import METRICS_NAME, append_record, curves, read_metrics

MISSING = "the loss plot needs matplotlib, an optional extra: pip install 'nanogpt-tg[plot]' (or pip install matplotlib)"


def loss_figure(records: list[dict], title: str = ""):
    """A matplotlib Figure: per-iteration train loss (thin), and the train and val loss of each eval (dots)."""
    try:
        from matplotlib.figure import Figure  # no pyplot: no GUI backend, works headless
    except ImportError:
        raise ImportError(MISSING) from None
    c = curves(records)
    fig = Figure(figsize=(8, 4.5), dpi=100)
    ax = fig.subplots()
    if c["train"][0]:
        ax.plot(*c["train"], color="tab:blue", alpha=0.35, linewidth=0.8, label="train loss (logged iterations)")
    if c["eval_train"][0]:
        ax.plot(*c["eval_train"], "o-", color="tab:blue", markersize=4, label="train loss (eval)")
        last = c["eval_val"][1][-1]
        ax.plot(*c["eval_val"], "o-", color="tab:orange", markersize=4, label=f"val loss (eval), last {last:.4f}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (cross-entropy, nats)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    return fig


def plot_metrics(out_dir: str | Path, output: str | Path | None = None) -> Path:
    """Write the loss curves of out_dir/metrics.jsonl to output (default out_dir/loss.png); returns its path."""
    records = read_metrics(Path(out_dir) / METRICS_NAME)
    if not any(r["kind"] in ("iter", "eval") for r in records):
        raise ValueError(f"{Path(out_dir) / METRICS_NAME} has no losses yet; train for at least one iteration")
    output = Path(output) if output is not None else Path(out_dir) / "loss.png"
    buf = io.BytesIO()
    loss_figure(records, title=str(out_dir)).savefig(buf, format=output.suffix.lstrip(".") or "png")
    write_bytes(output, buf.getvalue())  # atomic, and never through a symlink planted at output
    return output


class LiveLossPlot:
    """A loss plot in a notebook, redrawn as training reports: train(cfg, on_metrics=live.update), then live.show().

    Redraws on each eval and at most every min_interval seconds otherwise (drawing costs ~0.1 s)."""

    def __init__(self, title: str = "", min_interval: float = 2.0):
        self.title, self.min_interval = title, min_interval
        self.records: list[dict] = []
        self.handle, self.last = None, 0.0

    def update(self, record: dict):
        append_record(self.records, record)
        if record["kind"] == "eval" or (record["kind"] == "iter" and time.monotonic() - self.last > self.min_interval):
            self.show()

    def show(self):
        from IPython.display import Image, display

        buf = io.BytesIO()
        loss_figure(self.records, self.title).savefig(buf, format="png")
        image = Image(data=buf.getvalue(), format="png")
        if self.handle is None:
            self.handle = display(image, display_id=True)
        else:
            self.handle.update(image)
        self.last = time.monotonic()


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(prog="python -m nanogpt_tg.plot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out_dir", required=True, help="the training run's out_dir (holds metrics.jsonl)")
    parser.add_argument("--output", help="where to write the image (default OUT_DIR/loss.png; .svg and .pdf work too)")
    args = parser.parse_args(argv)
    print(f"wrote {run(plot_metrics, args.out_dir, args.output)}")


if __name__ == "__main__":
    main()
