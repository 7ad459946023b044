import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from nanogpt_tg.device import set_device  # noqa: E402

# the tests run on tinygrad's CPU device unless DEV says otherwise
set_device(os.environ.get("DEV", "cpu").lower())


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run the slow tests too")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
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
    """After all tests: no temporary checkpoint file is left anywhere under the tests' temporary directories."""
    yield
    left = sorted(str(p) for p in tmp_path_factory.getbasetemp().rglob(".*.tmp"))
    assert not left, f"half-written checkpoints left behind: {left}"
