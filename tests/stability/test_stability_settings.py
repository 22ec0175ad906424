"""stability/settings.py: strict fields, the schema's ranges for hand-written job settings,
thresholds per element pair, and the small-cell warning."""
from __future__ import annotations

import copy
import json

import pytest
from ase.build import bulk
from .stability_setup import STABILITY, job_settings

from synthpre.frames import write_frames
from synthpre.stability.job import run_stability_job
from synthpre.stability.settings import StabilitySettings


@pytest.mark.parametrize("change, message", [
    ({"protocol": {"hold_ps": -1.0}},
     "config field 'stability.protocol.hold_ps': -1.0 is less than or equal to the minimum of 0"),
    ({"protocol": {"warmup_ps": -0.1}}, "'stability.protocol.warmup_ps': -0.1 is less than the "
                                        "minimum of 0"),
    ({"failure": {"speed": 3}}, "config field 'stability.failure': Additional properties are "
                                "not allowed \\('speed' was unexpected\\)"),
    ({"velocity_seeds": []}, "config field 'stability.velocity_seeds': \\[\\] should be non-empty"),
    ({"analysis": {"rdf_bins": "many"}},
     "config field 'stability.analysis.rdf_bins': 'many' is not of type 'integer'"),
    ({"failure": {"min_distance": "near"}}, "'stability.failure.min_distance': 'near' is not "
                                            "valid"),
    ({"starts": {"density_min": 2.5}}, "'stability.starts.density_max' is below density_min"),
])
def test_bad_settings_name_the_field(change, message, starts_file, tmp_path):
    """A job's settings may be written by hand: checked against the config schema's ranges
    (the one place they live), and the window's order, which the schema cannot express."""
    with pytest.raises(ValueError, match=message):
        run_stability_job(job_settings(**change), str(starts_file), tmp_path / "o.json",
                          tmp_path / "o.extxyz")
    assert not (tmp_path / "o.json").exists()


def test_missing_field_is_named():
    broken = copy.deepcopy(STABILITY)
    del broken["analysis"]["rdf_bins"]
    with pytest.raises(ValueError, match="'stability.analysis.rdf_bins' is missing"):
        StabilitySettings.from_config(broken)


def test_cli_names_a_bad_field(starts_file, tmp_path):
    import subprocess
    import sys

    settings = json.dumps(job_settings(protocol={"nve_ps": -1}))
    proc = subprocess.run([sys.executable, "-m", "synthpre", "stability", "--settings", settings,
                           "--starts", str(starts_file), "--out", str(tmp_path / "o.json"),
                           "--frames", str(tmp_path / "o.extxyz")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "synthpre stability: error: config field 'stability.protocol.nve_ps': -1 is less " \
        "than the minimum of 0" in proc.stderr


def test_thresholds_left_auto_come_from_the_elements_not_carbon():
    """The schema's defaults (auto) give a silicon study Si-Si thresholds from covalent
    radii (close pair 1.00 Å, coordination 2.78 Å), carbon its own (0.68, 1.90), and a
    binary one per pair; a number applies to every pair."""
    from defaults import MINIMAL

    from synthpre.config import complete

    def resolved(elements):
        config = complete({**MINIMAL, "elements": elements})
        return StabilitySettings.from_config(config["stability"], elements)

    si = resolved(["Si"])
    assert si.failure.min_distance == {"Si-Si": 1.0}
    assert si.analysis.coordination_cutoff == {"Si-Si": 2.78}
    c = resolved(["C"])
    assert c.failure.min_distance == {"C-C": 0.68} and c.analysis.coordination_cutoff == {"C-C": 1.9}
    assert resolved(["Si", "Li"]).failure.min_distance == {"Li-Li": 1.15, "Li-Si": 1.08,
                                                           "Si-Si": 1.0}
    assert StabilitySettings.from_config(STABILITY, ["Si"]).failure.min_distance == {"Si-Si": 0.7}


def test_start_cells_too_small_for_a_temperature_are_warned_before_any_job(tmp_path):
    """8-atom cells fluctuate by 29 % in temperature: the hot limit (2 x target) is 3.5
    standard deviations away and fails correct potentials by chance; 16 atoms pass."""
    from defaults import MINIMAL

    from synthpre.config import complete
    from synthpre.config_check import config_warnings
    from synthpre.stability.settings import small_cell_problem

    assert "use cells of at least 11 atoms" in small_cell_problem(8, 2.0)
    assert small_cell_problem(16, 2.0) is None and small_cell_problem(8, 3.0) is None
    small = tmp_path / "small.extxyz"
    write_frames(small, [bulk("C", "diamond", a=3.567, cubic=True)])  # 8 atoms, 3.5 g/cm^3
    config = complete({**MINIMAL, "real": {"source": str(small)},
                       "stability": {"starts": {"source": str(small), "density_min": 3.0,
                                                "density_max": 4.0}}})
    (warning,) = [w for w in config_warnings(config) if "stability" in w]
    assert "start cells of 8 atoms" in warning and "3.5 standard deviations" in warning
    big = complete({**config, "stability": {"starts": {"source": "teacher"}}})  # 64 atoms
    assert not [w for w in config_warnings(big) if "stability" in w]
