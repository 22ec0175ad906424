"""Rattle-and-relax sampling (synthpre.rattle_relax): every kept frame is the teacher's short
relaxation of a rattled, strained structure, so its forces are smaller than the rattled
structure's; chains repeat from their job's seed; MD configs are untouched by the option."""
from __future__ import annotations

import copy

import numpy as np
import pytest
from defaults import MINIMAL

from synthpre import job_settings
from synthpre.cells import density_of
from synthpre.config import complete
from synthpre.frames import read_frames
from synthpre.lammps_system import single_point
from synthpre.md import run_md_job
from synthpre.teachers import get_teacher


def _config(**rattle) -> dict:
    config = copy.deepcopy(MINIMAL)
    config["synthetic"].update(n_atoms=16, sampling="rattle-relax",
                               rattle_relax={"chain_length": 6, **rattle})
    return complete(config)


def _chain(tmp_path, job="d2.5-T3000-r0", name="a", **rattle):
    settings = job_settings.md(_config(**rattle), "lcbop")
    status = run_md_job(settings, "lcbop", job, str(tmp_path / f"{name}.extxyz"),
                        str(tmp_path / f"{name}.json"))
    return status, read_frames(tmp_path / f"{name}.extxyz")


def test_forces_fall_along_each_relaxation_and_the_cell_is_strained(tmp_path):
    status, frames = _chain(tmp_path)
    assert status["failure"] is None and len(frames) == 6 == status["n_frames"]
    teacher = get_teacher("lcbop")
    for frame in frames:
        _, forces = single_point(frame, teacher)
        assert np.abs(forces).max() < frame.info["rattled_max_force"], frame.info["chain_step"]
    assert [f.info["chain_step"] for f in frames] == list(range(6))
    # relaxed but not to a minimum: the teacher still has forces to teach
    assert min(np.abs(single_point(f, teacher)[1]).max() for f in frames) > 0.05
    cells = [np.array(f.cell) for f in frames]
    assert all(not np.allclose(a, b) for a, b in zip(cells, cells[1:]))
    assert np.abs(cells[-1] - np.diag(np.diag(cells[-1]))).max() > 1e-3  # sheared
    assert all(abs(density_of(f) / 2.5 - 1) < 0.25 for f in frames)


def test_a_chain_repeats_from_its_seed(tmp_path):
    _, first = _chain(tmp_path, name="a")
    _, again = _chain(tmp_path, name="b")
    _, other = _chain(tmp_path, job="d2.5-T3000-r1", name="c")
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(np.array(a.cell), np.array(b.cell))
    assert not np.allclose(first[0].positions, other[0].positions)


def test_more_relaxation_lowers_the_forces_and_md_configs_keep_their_settings(tmp_path):
    teacher = get_teacher("lcbop")
    _, short = _chain(tmp_path, name="s", relax_steps=2)
    _, long = _chain(tmp_path, name="l", relax_steps=30)
    fmax = [np.mean([np.abs(single_point(f, teacher)[1]).max() for f in fs])
            for fs in (short, long)]
    assert fmax[1] < fmax[0]
    # the option reaches MD jobs only when chosen: a default config's jobs are as before
    md = complete(copy.deepcopy(MINIMAL))
    assert md["synthetic"]["sampling"] == "md"
    assert "rattle_relax" not in job_settings.md(md, "lcbop")
    assert job_settings.md(_config(), "lcbop")["rattle_relax"]["chain_length"] == 6


@pytest.mark.parametrize("field, value", [("sigma", -0.1), ("relax_steps", 0)])
def test_bad_rattle_settings_are_refused_by_the_schema(field, value):
    with pytest.raises(Exception, match=field):
        _config(**{field: value})
