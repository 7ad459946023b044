import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from nanogpt_tg.data import prepare_text  # noqa: E402
from nanogpt_tg.device import set_device  # noqa: E402

# the tests run on tinygrad's CPU device unless DEV says otherwise
set_device(os.environ.get("DEV", "cpu").lower())


PERIOD = "abcdefghij"  # the tiny tests' dataset: a stream that repeats every 10 characters


@pytest.fixture(scope="module")
def periodic(tmp_path_factory):
    """A directory holding data/periodic/ (PERIOD * 300), the working directory while the test module runs."""
    d = tmp_path_factory.mktemp("periodic")
    prepare_text(PERIOD * 300, d / "data" / "periodic", block_size=8)
    mp = pytest.MonkeyPatch()
    mp.chdir(d)
    yield d
    mp.undo()


@pytest.fixture(scope="session")
def tiny_cpu_run(tmp_path_factory):
    """tiny_run.tiny_run on the CPU in this process (the speed layer on): the numbers other runs are compared with."""
    from tiny_run import tiny_run

    cwd = os.getcwd()
    try:
        return tiny_run(str(tmp_path_factory.mktemp("tiny_cpu_run")))
    finally:
        os.chdir(cwd)


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run the slow tests too")
    parser.addoption("--opencl", action="store_true", default=False,
                     help="run the OpenCL device test too (PoCL compiles slowly: minutes)")


def pytest_collection_modifyitems(config, items):
    skips = {"slow": None if config.getoption("--runslow") else pytest.mark.skip(reason="slow: run with --runslow"),
             "opencl": None if config.getoption("--opencl") else pytest.mark.skip(reason="OpenCL: run with --opencl")}
    for item in items:
        for marker, skip in skips.items():
            if skip is not None and marker in item.keywords:
                item.add_marker(skip)


def shakespeare_path() -> Path | None:
    """The real Tiny Shakespeare text, where this machine has it (NANOGPT_TG_SHAKESPEARE or ../shared)."""
    for p in (os.environ.get("NANOGPT_TG_SHAKESPEARE"), ROOT.parent / "shared/data/tinyshakespeare/input.txt",
              ROOT / "data/shakespeare_char/input.txt"):
        if p and Path(p).is_file():
            return Path(p)
    return None


@pytest.fixture(scope="session", autouse=True)
def no_half_written_checkpoints(tmp_path_factory):
    """After all tests: no temporary file (fsio's .NAME.RANDOM.tmp: checkpoints, datasets, tokenizers) is left
    anywhere under the tests' temporary directories."""
    yield
    left = sorted(str(p) for p in tmp_path_factory.getbasetemp().rglob(".*.tmp"))
    assert not left, f"half-written files left behind: {left}"
