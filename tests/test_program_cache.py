"""The disk-backed program and schedule caches (program_cache.py): a second process schedules no graph and generates
no kernel code, gets the same results, and a change of kernel options generates its own programs."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = """
import json, sys
sys.path.insert(0, {root!r})
import numpy as np
from nanogpt_tg.device import set_device
set_device("cpu")
import tinygrad.codegen as codegen
from tinygrad import Tensor
import tinygrad.schedule as schedule
generated, scheduled = [], []
real = codegen.do_to_program
codegen.do_to_program = lambda ast, ren: (generated.append(1), real(ast, ren))[1]
real_schedule = schedule.get_kernel_graph
schedule.get_kernel_graph = lambda f: (scheduled.append(1), real_schedule(f))[1]
rng = np.random.default_rng(11)
a, b = rng.standard_normal((72, 40)).astype(np.float32), rng.standard_normal((40, 56)).astype(np.float32)
from nanogpt_tg.layers import softmax  # a tinygrad function call with its own gradient: a CallInfo in the graph's key
out = softmax((Tensor(a) @ Tensor(b)).relu() + 2).numpy()
print(json.dumps({{"generated": len(generated), "scheduled": len(scheduled), "out": out.tolist()}}))
"""


def run(cachedb, **env):
    proc = subprocess.run([sys.executable, "-c", SCRIPT.format(root=str(ROOT))], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "CACHEDB": str(cachedb), "PARALLEL": "0", **env})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_second_process_reads_programs_from_disk(tmp_path):
    first, second = run(tmp_path / "cache.db"), run(tmp_path / "cache.db")
    assert first["generated"] > 0 and second["generated"] == 0, (first["generated"], second["generated"])
    assert first["scheduled"] > 0 and second["scheduled"] == 0, (first["scheduled"], second["scheduled"])
    assert second["out"] == first["out"]  # the same programs: bit for bit
    other = run(tmp_path / "cache.db", NANOGPT_TG_MATMUL_OPTS="0")  # other kernel options: not the cached programs
    assert other["generated"] > 0
    off = run(tmp_path / "off.db", NANOGPT_TG_PROGRAM_CACHE="0")
    off2 = run(tmp_path / "off.db", NANOGPT_TG_PROGRAM_CACHE="0")
    assert off["generated"] > 0 and off2["generated"] > 0 and off2["scheduled"] > 0
