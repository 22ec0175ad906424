"""GPAW labelling: same numbers as a direct GPAW run, resumable from its cache, clear errors."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from defaults import MINIMAL, dft_settings
from synthpre.config import complete

from synthpre import dft
from synthpre.dft import DFTSettings, label_with_gpaw
from synthpre.frames import read_frames, write_frames

HAVE_GPAW = importlib.util.find_spec("gpaw") is not None
needs_gpaw = pytest.mark.skipif(not HAVE_GPAW, reason="gpaw is not installed (envs/dft.txt)")

# Low cutoff and a small E0 box keep this to seconds; the demo uses the defaults.
FAST = {"ecut_eV": 250}
E0_BOX = 6.0


def tiny_frames() -> list[Atoms]:
    frames = []
    for i, shift in enumerate([0.08, -0.05]):
        atoms = bulk("C", "diamond", a=3.57)  # 2-atom primitive cell
        atoms.positions[1] += [shift, 0.03, -0.02]
        atoms.info.update(config_type="test", traj_id=f"t{i}", time_ps=0.25 * i)
        frames.append(atoms)
    return frames


def test_settings_defaults_are_the_demo_contract():
    """The schema holds the DFT defaults; the settings object takes them strictly."""
    s = dft_settings()
    assert (s.ecut_eV, s.xc, s.kpts, s.smearing_eV, s.spinpol) == (500.0, "LDA", (1, 1, 1), 0.1,
                                                                  False)
    assert dft_settings(kpts=[2, 2, 2]).kpts == (2, 2, 2)
    assert dft_settings(ecut_eV=400).key() != s.key()
    with pytest.raises(ValueError, match="'dft.settings.cutoff' is unknown"):
        dft_settings(cutoff=500)
    with pytest.raises(ValueError, match="'dft.settings.maxiter' is missing"):
        DFTSettings.from_config({k: v for k, v in dft_settings().to_dict().items()
                                 if k != "maxiter"})
    with pytest.raises(Exception, match="total"):  # the schema refuses it before any job
        complete({**MINIMAL, "dft": {"settings": {"energy": "total"}}})


def test_bad_input_names_file_and_structure(tmp_path):
    frames = tiny_frames()
    frames[1].pbc = [True, True, False]
    bad = tmp_path / "bad.extxyz"
    write_frames(bad, frames)
    with pytest.raises(ValueError, match=r"bad\.extxyz: structure 1: .*periodic"):
        label_with_gpaw(bad, tmp_path / "out.extxyz", dft_settings(), tmp_path / "cache", log=None)
    with pytest.raises(FileNotFoundError, match="missing.extxyz"):
        label_with_gpaw(tmp_path / "missing.extxyz", tmp_path / "out.extxyz", dft_settings(),
                        tmp_path / "cache", log=None)
    assert not (tmp_path / "out.extxyz").exists()


def test_failed_structure_is_skipped_and_remembered(tmp_path, monkeypatch):
    """on_error="skip": a failing structure is left out, cached as failed, not retried."""
    calls = []

    def fake(atoms, settings, txt=None):  # no GPAW: E = -1 eV per atom, zero forces
        calls.append(len(atoms))
        if len(atoms) == 2 and atoms.positions[1, 0] < 0.9:
            raise RuntimeError("SCF did not converge")
        return -1.0 * len(atoms), np.zeros((len(atoms), 3))

    monkeypatch.setattr(dft, "compute_energy_forces", fake)
    src, out, cache = tmp_path / "in.extxyz", tmp_path / "out.extxyz", tmp_path / "cache"
    write_frames(src, tiny_frames())  # structure 1 is the failing one
    with pytest.raises(RuntimeError, match=r"in\.extxyz: structure 1: GPAW failed: .*converge"):
        label_with_gpaw(src, out, dft_settings(), cache, log=None)
    assert not out.exists()
    summary = label_with_gpaw(src, out, dft_settings(), tmp_path / "cache2", on_error="skip",
                              log=None)
    assert [f["index"] for f in summary["failed"]] == [1]
    frames = read_frames(out)
    assert [a.info["traj_id"] for a in frames] == ["t0"]
    assert frames[0].info["energy"] == pytest.approx(-2.0 - 2 * -1.0)
    n_calls = len(calls)
    summary = label_with_gpaw(src, out, dft_settings(), tmp_path / "cache2", on_error="skip",
                              log=None)
    assert len(calls) == n_calls and summary["n_computed"] == 0  # the failure is remembered


@needs_gpaw
def test_label_matches_direct_gpaw_and_resumes(tmp_path, monkeypatch):
    settings = dft_settings(**FAST)
    src, out, cache = tmp_path / "in.extxyz", tmp_path / "out.extxyz", tmp_path / "cache"
    write_frames(src, tiny_frames())

    summary = label_with_gpaw(src, out, settings, cache, e0_box=E0_BOX, log=None)
    assert (summary["n_computed"], summary["n_cached"]) == (2, 0)
    labelled = read_frames(out)
    assert len(labelled) == 2

    # the same calculation, done by hand with GPAW
    from gpaw import GPAW, PW, FermiDirac

    def direct(atoms):
        atoms = atoms.copy()
        atoms.calc = GPAW(mode=PW(250), xc="LDA", kpts=(1, 1, 1), occupations=FermiDirac(0.1),
                          spinpol=False, txt=None)
        return atoms.get_potential_energy(force_consistent=True), atoms.get_forces()

    e0, _ = direct(Atoms("C", positions=[(E0_BOX / 2,) * 3], cell=[E0_BOX] * 3, pbc=True))
    for atoms, got in zip(read_frames(src), labelled):
        energy, forces = direct(atoms)
        assert got.info["energy"] == pytest.approx(energy - 2 * e0, abs=1e-6)
        np.testing.assert_allclose(got.arrays["forces"], forces, atol=1e-6)
        assert np.abs(forces).max() > 0.1  # displaced atoms: a real force test
        assert got.info["labeller"] == "gpaw"
        assert got.info["e0_C"] == pytest.approx(e0, abs=1e-6)
        assert got.info["traj_id"] == atoms.info["traj_id"]  # provenance kept
        np.testing.assert_allclose(got.positions, atoms.positions)

    # resume: every structure (and E0) comes from the cache, no GPAW call at all
    mtimes = {p: p.stat().st_mtime_ns for p in cache.iterdir()}

    def no_gpaw(*args, **kwargs):
        raise AssertionError("GPAW was called although the cache holds the result")

    monkeypatch.setattr(dft, "compute_energy_forces", no_gpaw)
    out2 = tmp_path / "out2.extxyz"
    summary2 = label_with_gpaw(src, out2, settings, cache, e0_box=E0_BOX, log=None)
    assert (summary2["n_computed"], summary2["n_cached"]) == (0, 2)
    assert out2.read_text() == out.read_text()
    assert {p: p.stat().st_mtime_ns for p in cache.iterdir()} == mtimes

    # a moved atom is a new structure: the stale cache entry is not reused
    moved = read_frames(src)
    moved[0].positions[0] += 0.01
    write_frames(src, moved)
    with pytest.raises(RuntimeError, match=r"in\.extxyz: structure 0: GPAW failed: AssertionError: GPAW was"):
        label_with_gpaw(src, out2, settings, cache, e0_box=E0_BOX, log=None)
