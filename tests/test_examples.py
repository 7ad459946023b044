"""examples/: each script runs as a user would run it, and does what its docstring says."""
import os
import re
import subprocess
import sys
import time

from conftest import ROOT


def test_and_gate_learns_and_in_under_30_seconds():
    env = {**os.environ, "DEV": os.environ.get("DEV", "CPU")}
    t0 = time.time()
    run = subprocess.run([sys.executable, str(ROOT / "examples/and_gate.py")], capture_output=True, text=True, env=env,
                         timeout=120)
    wall = time.time() - t0
    assert run.returncode == 0, run.stderr
    final = re.search(r"^final loss ([\d.]+), accuracy (\d+)%", run.stdout, re.M)
    assert final, run.stdout
    assert float(final.group(1)) < 0.1  # the bar; about 0.056 after 300 steps
    assert final.group(2) == "100"
    assert re.findall(r"^(\d) AND (\d) -> [\d.]+ \((\d)\)", run.stdout, re.M) == [
        ("0", "0", "0"), ("0", "1", "0"), ("1", "0", "0"), ("1", "1", "1")]
    assert wall < 30  # the whole process, start-up and kernel compiles included (about 4 s here)
