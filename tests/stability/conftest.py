"""The stability tests' start cells, quenched once per session (tests/conftest.py holds the
suite's own fixtures)."""
from __future__ import annotations

import pytest
from defaults import protocol

from synthpre.frames import write_frames
from synthpre.md import run_trajectory
from synthpre.teachers import get_teacher


@pytest.fixture(scope="session")
def starts_file(tmp_path_factory):
    """Two 32-atom amorphous cells quenched with LCBOP (about a second)."""
    proto = protocol(**{"dump_every_ps": 0.1, "stages": [
        {"name": "melt", "T_start": 5000, "T_end": 5000, "duration_ps": 0.3},
        {"name": "quench", "T_start": 5000, "T_end": 1000, "duration_ps": 0.5}]})
    cells = [run_trajectory(get_teacher("lcbop"), {"C": 32}, d, 3000, proto, seed=k,
                            traj_id="q", min_distance=1.0).frames[-1] for k, d in enumerate((2.0, 2.2))]
    path = tmp_path_factory.mktemp("starts") / "starts.extxyz"
    write_frames(path, cells)
    return path
