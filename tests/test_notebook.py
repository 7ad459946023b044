"""The Colab notebook: committed without outputs, and executed top to bottom, headless, with a tiny configuration
against this checkout and a local text; any cell error fails the test."""
import json
import os
import re
import sys

import pytest

from conftest import ROOT, shakespeare_path

NOTEBOOK = ROOT / "notebooks" / "nanogpt_tg_colab.ipynb"
# a model and run small enough to compile and train in well under a minute on a 2-core CPU
TINY = """
SOURCE = {source!r}
TEXT_PATH = {text!r}
device = {device!r}
n_layer, n_head, n_embd, block_size = 1, 2, 16, 16
batch_size = 4
max_iters = 20
eval_interval = 10
eval_iters = 2
log_interval = 5
max_new_tokens = 30
"""


def cells() -> list[dict]:
    return json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def test_committed_notebook_has_no_outputs_and_no_model_code():
    code = [c for c in cells() if c["cell_type"] == "code"]
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in code), "strip the outputs before committing"
    text = "\n".join(source(c) for c in code)
    for banned in ("class ", "def ", "backward(", "TinyJit", "AdamW", "scaled_dot_product_attention"):
        assert banned not in text, f"{banned!r} in a notebook cell: model and loop code belongs in nanogpt_tg"


def test_badge_and_install_source_name_the_same_repository():
    badge = re.search(r"colab\.research\.google\.com/github/([^/]+/[^/]+)/blob/[^/]+/notebooks/nanogpt_tg_colab\.ipynb",
                      source(cells()[0]))
    params = [c for c in cells() if "parameters" in c["metadata"].get("tags", [])]
    assert badge and len(params) == 1, "the first cell needs the Colab badge; one code cell is tagged 'parameters'"
    repo = re.findall(r'^REPO = "([^"]+)"', source(params[0]), re.M)
    assert repo == [badge.group(1)], "the badge and REPO must name one repository: python tools/set_repo.py OWNER/NAME"
    assert any('f"git+https://github.com/{REPO}.git"' in source(c) for c in cells())  # what the install cell installs


def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[test]' to run the notebook")
    nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[test]' to run the notebook")
    pytest.importorskip("ipykernel", reason="pip install -e '.[test]' (the notebook's kernel)")
    pytest.importorskip("matplotlib", reason="pip install -e '.[test]' (the notebook draws its loss curve)")
    text = shakespeare_path()
    if text is None:  # a stand-in that has every character the notebook encodes
        text = tmp_path / "input.txt"
        text.write_text("ROMEO:\nHello world, the quick brown fox jumps over the lazy dog.\n\n" * 400, encoding="utf-8")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    tiny = TINY.format(source=str(ROOT), text=str(text), device=os.environ.get("DEV", "cpu").lower())
    nb.cells.insert(params + 1, nbformat.v4.new_code_cell(tiny))  # papermill's way: override after the knobs
    # the kernel: this very Python (not whatever the machine's python3 kernelspec names), importing this checkout
    spec = tmp_path / "jupyter" / "kernels" / "nanogpt-tg-test"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "test", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    # started in the notebooks/ folder of a checkout (a stand-in: the notebook is what marks one), as Jupyter does:
    # it must work from the checkout's root, with its data/ and out_dir, and write nothing into notebooks/
    checkout = tmp_path / "checkout"
    run_dir = checkout / "notebooks"
    run_dir.mkdir(parents=True)
    (run_dir / NOTEBOOK.name).write_text(NOTEBOOK.read_text(encoding="utf-8"), encoding="utf-8")
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="nanogpt-tg-test",
                                     resources={"metadata": {"path": str(run_dir)}})
    client.execute()  # raises CellExecutionError at the first cell that fails

    outputs = {i: "".join(o.get("text", "") for o in c.get("outputs", [])) for i, c in enumerate(nb.cells)}
    everything = "\n".join(outputs.values())
    assert f"nanogpt_tg from {ROOT / 'nanogpt_tg'}" in everything  # the checkout, not some installed copy
    assert "encode('Hello world') =" in everything and "the target is" in everything
    assert re.search(r"^step 20: train loss [\d.]+, val loss [\d.]+$", everything, re.M)
    assert f"working in {checkout}" in everything
    assert (checkout / "out-shakespeare-char" / "loss.png").stat().st_size > 10_000
    assert (checkout / "data" / "shakespeare_char" / "train.bin").is_file()
    assert sorted(p.name for p in run_dir.iterdir()) == [NOTEBOOK.name]  # no data/ or out_dir in notebooks/
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
               for c in nb.cells for o in c.get("outputs", []))  # the live loss curve
    assert everything.count("---------------") == 2  # two samples
