"""stability/starts.py: start cells quenched by the teacher, from their own rule."""
from __future__ import annotations

import numpy as np
import pytest

from synthpre.frames import read_frames
from synthpre.stability.settings import StabilitySettings
from synthpre.stability.starts import select_starts


def test_teacher_quenched_starts_are_cells_at_the_window_densities_cooled_to_the_end(tmp_path):
    """stability.starts.source "teacher": count random cells melted and quenched by the teacher
    (LCBOP here), one per density spread over the window, written for the stability jobs."""
    from synthpre import job_settings as slices
    from synthpre.config import complete
    from synthpre.stability.starts import run_stability_starts_job

    from defaults import MINIMAL

    synthetic = {**MINIMAL["synthetic"],  # a tight thermostat for a short quench
                 "protocol": {**MINIMAL["synthetic"]["protocol"], "tdamp_fs": 10.0}}
    config = complete({**MINIMAL, "synthetic": synthetic, "stability": {"starts": {
        "source": "teacher", "count": 2, "density_min": 1.8, "density_max": 2.6,
        "quench": {"n_atoms": 16, "stages": [
            {"name": "melt", "T_start": 4000, "T_end": 4000, "duration_ps": 0.05},
            {"name": "quench", "T_start": 4000, "T_end": 300, "duration_ps": 0.2},
            {"name": "relax", "T_start": 300, "T_end": 300, "duration_ps": 0.05}]}}}})
    out = tmp_path / "starts.extxyz"
    cells = run_stability_starts_job(slices.stability_starts(config), str(out))
    written = read_frames(out)
    assert len(cells) == len(written) == 2
    for cell, density in zip(written, (1.8, 2.6)):
        assert len(cell) == 16 and cell.pbc.all()
        mass = cell.get_masses().sum() * 1.66053906660  # g/cm^3 from amu / Å^3
        assert mass / cell.get_volume() == pytest.approx(density, rel=1e-6)
        assert cell.info["temperature_K"] < 1500  # quenched from 4000 K towards 300 K
    # the melt moved the atoms away from the random start (synthetic.seed 0 for the first)
    from synthpre.cells import random_cell
    start = random_cell({"C": 16}, 1.8, config["synthetic"]["min_distance"], 0)
    assert not np.allclose(start.positions, written[0].positions, atol=0.1)
    # the same selection the stability jobs apply keeps both
    settings = StabilitySettings.from_config(config["stability"])
    assert len(select_starts(written, settings.starts, ["C"], str(out))) == 2


def test_teacher_starts_come_from_their_own_rule_and_a_jamming_window_is_refused(tmp_path):
    import subprocess

    import yaml
    from defaults import MINIMAL
    from snakemake_run import REPO, SNAKEMAKE

    from synthpre.config import complete
    from synthpre.config_check import ConfigError
    from synthpre.config_check import check_stability_config

    (tmp_path / "override.yaml").write_text(yaml.safe_dump({
        "real": {"source": str(REPO / "data/demo/carbon-dft.extxyz")},
        "stability": {"starts": {"source": "teacher"}}}))
    proc = subprocess.run([*SNAKEMAKE, "--directory", str(tmp_path), "-n", "-p", "--configfile",
                           str(REPO / "configs/tiny.yaml"),
                           str(tmp_path / "override.yaml")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "synthpre stability-starts --settings" in proc.stdout
    assert "--starts results/tiny/stability/starts.extxyz" in proc.stdout
    jammed = complete({**MINIMAL, "stability": {"starts": {"source": "teacher",
                                                           "density_max": 12.0}}})
    with pytest.raises(ConfigError, match="'stability.starts.density_max': density 12.0"):
        check_stability_config(jammed)
