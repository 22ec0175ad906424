"""DFT labels with GPAW: the demo's "real" data (plane waves, LDA, Γ point, Fermi-Dirac).

``label_with_gpaw`` labels every frame of an extxyz file and writes energies relative to
isolated atoms (E - sum E0, E0 from one atom in a periodic cube with the same settings) and
forces. It is resumable: each finished structure is saved atomically in a cache folder,
keyed by its index and a hash of its numbers, positions, cell, pbc and the DFT settings, and
reused on a rerun; the output file is written atomically once every structure is done.

Energies are GPAW's *free* energy (``force_consistent=True``), whose derivatives are the forces,
for the structures and for E0 alike (``DFTSettings.energy="extrapolated"`` gives GPAW's
zero-width extrapolation instead). GPAW runs serially: set ``OMP_NUM_THREADS=1`` (done here
when unset, before GPAW and its BLAS load).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
from ase import Atoms

from .atomic import write_json
from .cells import isolated_atom
from .frames import labelled_copy, read_frames, write_frames
from .job_settings import strict

LABELLER = "gpaw"
CACHE_VERSION = 1


@dataclass(frozen=True)
class DFTSettings:
    """Everything that fixes a GPAW label (and so goes into the cache key); the config schema's
    ``dft.settings`` holds the values and their defaults (GPAW's SCF criteria written out, so
    they are pinned with the data)."""
    ecut_eV: float
    xc: str
    kpts: tuple[int, int, int]
    smearing_eV: float                   # Fermi-Dirac width
    spinpol: bool
    energy: str                          # "free" (force-consistent) or "extrapolated"
    conv_energy_eV: float                # per valence electron, last 3 iterations
    conv_density: float
    conv_eigenstates: float              # eV^2 per valence electron
    maxiter: int
    extra: dict                          # further GPAW keyword arguments, as given

    @classmethod
    def from_config(cls, cfg: Mapping) -> "DFTSettings":
        """From the validated ``dft.settings`` (the schema checks the types and ranges)."""
        return strict(cls, {**cfg, "kpts": tuple(int(k) for k in cfg.get("kpts", ()))},
                      "dft.settings")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["kpts"] = list(self.kpts)
        return d

    def key(self) -> str:
        """A short hash of the settings (part of every cache key)."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def _import_gpaw():
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", os.environ["OMP_NUM_THREADS"])
    try:
        import gpaw
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("GPAW is not installed: pip install -r envs/dft.txt "
                          "(needs libxc, BLAS and FFTW; see the file's header)") from err
    return gpaw


def gpaw_versions() -> dict:
    gpaw = _import_gpaw()
    out = {"gpaw": gpaw.__version__}
    try:
        from importlib.metadata import version
        out["gpaw-data"] = version("gpaw-data")
    except Exception:  # gpaw-data absent: setups come from GPAW_SETUP_PATH
        pass
    return out


def gpaw_calculator(settings: DFTSettings, txt=None):
    """A GPAW calculator with these settings; ``txt=None`` writes no log."""
    gpaw = _import_gpaw()
    from gpaw import PW, FermiDirac
    kwargs = dict(mode=PW(settings.ecut_eV), xc=settings.xc, kpts=tuple(settings.kpts),
                  occupations=FermiDirac(settings.smearing_eV), spinpol=settings.spinpol,
                  convergence={"energy": settings.conv_energy_eV,
                               "density": settings.conv_density,
                               "eigenstates": settings.conv_eigenstates},
                  maxiter=settings.maxiter, txt=None if txt is None else str(txt))
    kwargs.update(settings.extra)
    return gpaw.GPAW(**kwargs)


def compute_energy_forces(atoms: Atoms, settings: DFTSettings, txt=None) -> tuple[float, np.ndarray]:
    """Total energy (eV, per ``settings.energy``) and forces (eV/Å) of one structure."""
    atoms = atoms.copy()
    atoms.calc = gpaw_calculator(settings, txt=txt)
    energy = atoms.get_potential_energy(force_consistent=settings.energy == "free")
    forces = atoms.get_forces()
    return float(energy), np.array(forces, dtype=float)


def isolated_atom_energy(symbol: str, settings: DFTSettings, box: float = 10.0,
                         txt=None) -> float:
    """E0: one atom in a periodic cube of side ``box`` Å with the same settings. Its own
    function beside ``lammps_system.isolated_atom_energy`` because a plane-wave box costs
    with its volume (10 Å, the demo's contract, cached per settings), where a potential only
    needs a box wider than twice its cutoff; both build the cell with ``cells.isolated_atom``."""
    energy, _ = compute_energy_forces(isolated_atom(symbol, box), settings, txt=txt)
    return energy


def structure_key(atoms: Atoms, settings: DFTSettings) -> str:
    """Hash of what the label depends on: numbers, positions, cell, pbc and settings."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(atoms.numbers, dtype=np.int64).tobytes())
    # rounded so that a round trip through extxyz (8 decimals) keeps the key
    h.update(np.ascontiguousarray(np.round(atoms.positions, 6), dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(np.round(np.asarray(atoms.cell), 6), dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(atoms.pbc, dtype=bool).tobytes())
    h.update(settings.key().encode())
    return h.hexdigest()[:16]


def _read_cache(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if data.get("version") != CACHE_VERSION:
        return None
    return data


def cached_isolated_energy(symbol: str, settings: DFTSettings, cache_dir: str | os.PathLike,
                           box: float = 10.0) -> float:
    """E0 from the cache folder, or computed and cached."""
    path = Path(cache_dir) / f"e0-{symbol}-box{box:g}-{settings.key()}.json"
    data = _read_cache(path)
    if data is not None:
        return float(data["energy"])
    start = time.perf_counter()
    energy = isolated_atom_energy(symbol, settings, box=box)
    write_json(path, {"version": CACHE_VERSION, "symbol": symbol, "box": box,
                      "energy": energy, "settings": settings.to_dict(),
                      "wall_s": time.perf_counter() - start, **gpaw_versions()})
    return energy


def _check_structure(atoms: Atoms, path, index: int) -> None:
    where = f"{path}: structure {index}"
    if len(atoms) == 0:
        raise ValueError(f"{where}: no atoms")
    if not np.all(np.isfinite(atoms.positions)):
        raise ValueError(f"{where}: non-finite positions")
    if not np.all(atoms.pbc):
        raise ValueError(f"{where}: plane-wave DFT needs a periodic cell (pbc={atoms.pbc.tolist()})")
    volume = abs(float(np.linalg.det(np.asarray(atoms.cell))))
    if not (math.isfinite(volume) and volume > 1e-6):
        raise ValueError(f"{where}: cell has no volume ({atoms.cell.tolist()})")


def label_with_gpaw(in_path: str | os.PathLike, out_path: str | os.PathLike,
                    settings: DFTSettings, cache_dir: str | os.PathLike, *,
                    e0_box: float = 10.0, txt_dir: str | os.PathLike | None = None,
                    on_error: str = "raise",
                    log: Callable[[str], None] | None = print) -> dict:
    """Label every frame of ``in_path`` with GPAW and write ``out_path`` (atomically).

    Each frame keeps its info (provenance) and gets ``energy`` (E - sum E0), ``forces``,
    ``labeller="gpaw"`` and ``e0_<Symbol>``. Finished structures are cached in ``cache_dir``
    and reused; ``txt_dir`` keeps GPAW's text logs. ``on_error="skip"`` leaves out a structure
    whose calculation fails (e.g. SCF not converged), records why in the cache (a rerun does
    not retry it; delete its ``.json`` to retry) and in the summary's ``failed`` list;
    ``"raise"`` stops with an error naming the file and structure. Returns a summary dict.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    in_path = Path(in_path)
    if not in_path.is_file():
        raise FileNotFoundError(f"{in_path}: no such structures file")
    try:
        frames = read_frames(in_path)
    except Exception as err:
        raise ValueError(f"{in_path}: cannot read as extxyz: {err}") from err
    for i, atoms in enumerate(frames):
        _check_structure(atoms, in_path, i)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    if txt_dir is not None:
        Path(txt_dir).mkdir(parents=True, exist_ok=True)
    say = log or (lambda msg: None)

    symbols = sorted({s for atoms in frames for s in atoms.get_chemical_symbols()})
    e0 = {}
    for s in symbols:
        e0[s] = cached_isolated_energy(s, settings, cache_dir, box=e0_box)
        say(f"E0({s}) = {e0[s]:.6f} eV")

    n_cached = n_computed = 0
    wall = []
    out = []
    failed = []
    for i, atoms in enumerate(frames):
        key = structure_key(atoms, settings)
        path = cache_dir / f"s{i:05d}-{key}.json"
        data = _read_cache(path)
        if data is None:
            start = time.perf_counter()
            txt = None if txt_dir is None else Path(txt_dir) / f"s{i:05d}.txt"
            try:
                energy, forces = compute_energy_forces(atoms, settings, txt=txt)
            except Exception as err:
                msg = f"{in_path}: structure {i}: GPAW failed: {type(err).__name__}: {err}"
                if on_error == "raise":
                    raise RuntimeError(msg) from err
                data = {"version": CACHE_VERSION, "index": i, "key": key, "error": msg,
                        "wall_s": time.perf_counter() - start}
                write_json(path, data)
                say(msg + " (skipped)")
            else:
                seconds = time.perf_counter() - start
                data = {"version": CACHE_VERSION, "index": i, "key": key,
                        "energy_total": energy, "forces": forces.tolist(), "wall_s": seconds}
                write_json(path, data)
                n_computed += 1
                wall.append(seconds)
                say(f"structure {i + 1}/{len(frames)}: E = {energy:.6f} eV, {seconds:.1f} s")
        else:
            n_cached += 1
        if "error" in data:
            if on_error == "raise":
                raise RuntimeError(data["error"] + f" (cached in {path}; delete it to retry)")
            failed.append({"index": i, "error": data["error"]})
            continue
        out.append(labelled_copy(atoms, data["energy_total"], data["forces"], LABELLER, e0))
    write_frames(out_path, out)
    summary = {"n": len(frames), "n_computed": n_computed, "n_cached": n_cached, "e0": e0,
               "mean_wall_s": float(np.mean(wall)) if wall else None, "failed": failed,
               "settings": settings.to_dict()}
    say(f"wrote {out_path}: {len(out)} of {len(frames)} structures ({n_computed} computed, "
        f"{n_cached} cached, {len(failed)} failed)")
    return summary


def run_dft_job(settings: dict, structures: str, batch: int, cache_dir: str, out: str) -> dict:
    """Rule ``dft``: label batch number ``batch`` (``dft.batch_size`` structures each) of the
    structures file; structures whose SCF fails are skipped and recorded in the summary."""
    size = settings["dft"]["batch_size"]
    frames = read_frames(structures)[batch * size:(batch + 1) * size]
    if not frames:
        raise ValueError(f"{structures}: batch {batch} of {size} structures is empty "
                         f"(dft.batch_size)")
    selection = Path(cache_dir) / f"batch{batch}-structures.extxyz"
    write_frames(selection, frames)
    return label_with_gpaw(selection, out, DFTSettings.from_config(settings["dft"]["settings"]),
                           cache_dir, on_error="skip")

