"""The CPU speed layer (nanogpt_tg/cpu/) changes speed only: training losses and sampled tokens with it on and off
agree; a tinygrad internal a patch needs that has gone makes install() skip that patch with a warning."""
import pytest
from tinygrad import Device

from nanogpt_tg import cpu
from tiny_run import assert_same_run, run_elsewhere

pytestmark = pytest.mark.skipif(not Device.DEFAULT.startswith("CPU"), reason="the layer patches the CPU device")


@pytest.fixture
def layer_on(tiny_cpu_run):
    return tiny_cpu_run


def test_the_layer_changes_speed_only(layer_on, tmp_path):
    assert layer_on["status"] == {"kernels": "on", "program_cache": "on", "runtime": "on", "scratch": "on"}
    assert layer_on["losses"][-1] < 0.5 * layer_on["losses"][0]  # it learned: the comparison is not of noise
    off, _ = run_elsewhere(tmp_path, NANOGPT_TG_CPU="0")
    assert set(off["status"].values()) == {"off (NANOGPT_TG_CPU=0)"}
    assert_same_run(layer_on, off)


def test_a_missing_tinygrad_internal_skips_its_patch_with_a_warning(layer_on, tmp_path):
    """As if tinygrad had renamed a method the CPU runtime's graph needs (only graph runners use it, so tinygrad's own
    CPU path still works): the package imports, the other patches apply, training and sampling run the same."""
    broken, stderr = run_elsewhere(tmp_path, "import tinygrad.engine.jit as j\ndel j.GraphRunner.updated_vars")
    assert broken["status"]["runtime"].startswith("off (cannot apply"), broken["status"]
    assert broken["status"]["kernels"] == "on" and broken["status"]["program_cache"] == "on"
    warnings = [line for line in stderr.splitlines() if line.startswith("warning: nanogpt_tg.cpu.runtime")]
    assert len(warnings) == 1 and "GraphRunner.updated_vars" in warnings[0], stderr[-2000:]
    assert_same_run(layer_on, broken)


def test_another_tinygrad_version_turns_the_layer_off(monkeypatch, capsys):
    assert cpu.compatible("0.14.0") and cpu.compatible("0.14") and cpu.compatible("0.14.2")
    assert not cpu.compatible("0.15.0") and not cpu.compatible("0.1") and not cpu.compatible("1.0.0")
    monkeypatch.setattr(cpu, "tinygrad_version", lambda: "0.15.0")
    monkeypatch.setattr(cpu, "status", {})
    status = cpu.install("CPU")
    assert status == {name: "off (tinygrad 0.15.0)" for name in cpu.PATCHES}
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "written for tinygrad 0.14, this is 0.15.0" in err[0]


def test_missing_names_are_reported():
    assert cpu.missing(("tinygrad.engine.jit:GraphRunner.updated_vars", "tinygrad.helpers:prod")) == []
    assert cpu.missing(("tinygrad.engine.jit:GraphRunner.no_such", "tinygrad.no_such_module:x")) == [
        "tinygrad.engine.jit:GraphRunner.no_such", "tinygrad.no_such_module:x"]
