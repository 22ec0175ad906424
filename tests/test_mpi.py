"""MD and labelling under ``mpiexec -n 2`` (the wheel's MPICH): same frames as one rank,
only rank 0 writes, ASE teachers refuse several ranks."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from defaults import DEFAULTS
from synthpre.frames import read_frames

MPIEXEC = Path(sys.executable).parent / "mpiexec"
pytestmark = pytest.mark.skipif(not MPIEXEC.exists(), reason="no mpiexec next to python")

SETTINGS = {
    "elements": ["C"],
    "n_atoms": 32, "seed": 0, "min_distance": 1.2, "protocol": {
        **DEFAULTS["synthetic"]["protocol"], "dump_every_ps": 0.02,
        "stages": [{"name": "melt", "T_start": 3000, "T_end": 3000, "duration_ps": 0.04},
                   {"name": "anneal", "T_start": "anneal", "T_end": "anneal",
                    "duration_ps": 0.06}]},
    "teachers": {"emt": {"kind": "ase", "calculator": "ase.calculators.emt:EMT",
                         "elements": ["C"]}},
}


def _synthpre(tmp_path, ranks: int, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "settings.json").write_text(json.dumps(SETTINGS))
    cmd = [sys.executable, "-m", "synthpre", *args]
    if ranks > 1:
        cmd = [str(MPIEXEC), "-n", str(ranks), *cmd]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env,
                          cwd=tmp_path)


def _md(tmp_path, ranks: int, teacher: str = "tersoff") -> subprocess.CompletedProcess:
    out = tmp_path / f"n{ranks}"
    return _synthpre(tmp_path, ranks, "md", "--settings", "@settings.json", "--teacher", teacher,
                     "--job", "d2.5-T2000-r0", "--out-frames", str(out / "frames.extxyz"),
                     "--out-status", str(out / "md.json"))


def test_two_ranks_give_the_frames_of_one_rank_and_rank0_writes(tmp_path):
    one, two = _md(tmp_path, 1), _md(tmp_path, 2)
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("frames,") == 1  # one rank reports and writes
    a, b = (read_frames(tmp_path / f"n{r}" / "frames.extxyz") for r in (1, 2))
    assert len(a) == len(b) == 5
    for fa, fb in zip(a, b):
        d = fa.positions - fb.positions
        d -= np.round(d / fa.cell.lengths()) * fa.cell.lengths()
        assert np.abs(d).max() < 1e-6  # 100 steps: only summation order differs
        assert fa.info["time_ps"] == fb.info["time_ps"]
    status = json.loads((tmp_path / "n2" / "md.json").read_text())
    assert status["failure"] is None and status["n_frames"] == 5

    # Labelling on two ranks: same labels as on one.
    for ranks in (1, 2):
        run = _synthpre(tmp_path, ranks, "label", "--labeller", "snap_c", "--frames",
                        str(tmp_path / "n1" / "frames.extxyz"), "--out",
                        str(tmp_path / f"label{ranks}.extxyz"))
        assert run.returncode == 0, run.stderr
    la, lb = (read_frames(tmp_path / f"label{r}.extxyz") for r in (1, 2))
    for fa, fb in zip(la, lb):
        assert fa.info["energy"] == pytest.approx(fb.info["energy"], abs=1e-8)
        np.testing.assert_allclose(fa.arrays["forces"], fb.arrays["forces"], atol=1e-8)
        # per-atom energies gathered over both ranks' atoms, in the same order
        np.testing.assert_allclose(fa.arrays["energies"], fb.arrays["energies"], atol=1e-8)
        assert fb.arrays["energies"].sum() == pytest.approx(fb.info["energy"], abs=1e-6)  # extxyz digits


def test_ase_teacher_refuses_several_ranks(tmp_path):
    run = _md(tmp_path, 2, teacher="emt")
    assert run.returncode != 0
    assert "runs on one MPI rank only" in run.stderr
    assert not (tmp_path / "n2" / "frames.extxyz").exists()


def test_openmp_threads_give_the_same_forces():
    from synthpre.cells import random_cell
    from synthpre.lammps_system import LammpsSystem, omp_args
    from synthpre.teachers import get_teacher

    assert omp_args(1) == () and omp_args(4) == ("-sf", "omp", "-pk", "omp", "4")
    atoms = random_cell({"C": 32}, 2.5, 1.2, seed=3)
    results = []
    for args in ((), omp_args(2)):
        system = LammpsSystem(atoms, get_teacher("tersoff"), lammps_args=args)
        results.append(system.single_point())
        assert not args or system.lmp.has_style("pair", "tersoff/omp")
        system.close()
    assert results[0][0] == pytest.approx(results[1][0], abs=1e-9)
    np.testing.assert_allclose(results[0][1], results[1][1], atol=1e-9)


RANK0_WRITES_LAST = """
import os, sys, time
from pathlib import Path
from synthpre.lammps_runtime import finalize_mpi, new_lammps
new_lammps().close()
if os.environ["PMI_RANK"] == "0":  # rank 0 still writes long after rank 1 is done
    time.sleep(2)
    Path(sys.argv[1]).write_text("written")
if sys.argv[2] == "finalize":
    finalize_mpi()
"""


@pytest.mark.parametrize("finalize", [True, False])
def test_a_rank_done_early_does_not_kill_rank0_while_it_writes(tmp_path, finalize):
    """MPICH's launcher kills every rank once one exits without MPI_Finalize: the reason every
    synthpre command ends with finalize_mpi (without it, rank 0's file is never written)."""
    script, out = tmp_path / "job.py", tmp_path / "out.txt"
    script.write_text(RANK0_WRITES_LAST)
    run = subprocess.run([str(MPIEXEC), "-n", "2", sys.executable, str(script), str(out),
                          "finalize" if finalize else "exit"], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if finalize:
        assert run.returncode == 0, run.stderr
        assert out.read_text() == "written"
    else:
        assert not out.exists()
