"""Stability of a fitted potential in MD: objective failure criteria, and for what survives,
how far it strays from its teacher.

A run starts from a start cell with velocities at ``T_initial``, ramps NVT to ``T_anneal``
over ``warmup_ps``, holds for ``hold_ps`` (the paper's protocol), then runs ``nve_ps`` without
thermostat to measure energy drift. The potential is any ``Teacher``: a model file of this
pipeline enters LAMMPS through ``fix external`` (the teacher-MD driver, ``LammpsSystem``), a
LAMMPS teacher runs natively, so the model and its teacher run the identical protocol.

Every ``check_every_fs`` (and at t = 0) the detector (``detect``) stops the run at the first
of: an error in the model, non-finite energy/temperature/forces, lost atoms, a pair closer
than ``min_distance``, a force component above ``max_force``, or a temperature above
``max_temperature_factor`` x the stage's target. A failure is a result (reason, time), not an
error. Config fields are read strictly (``from_config``): a missing, unknown or out-of-range
field raises ValueError naming ``stability.<field>``; defaults live in the config schema only.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms

from .cells import density_of
from .lammps_system import LammpsSystem, single_point
from .structure_analysis import (closest_violation, coordination_by_pair,
                                 coordination_fractions, pair_thresholds, rdf)
from .teachers import Teacher

REASONS = ("model_error", "non_finite", "lost_atoms", "close_pair", "large_force", "hot",
           "lammps_error")


def _build(cls, cfg: dict, where: str, positive=(), non_negative=()):
    """A dataclass from a config mapping: every field required, unknown fields refused."""
    if not isinstance(cfg, dict):
        raise ValueError(f"config field '{where}' must be a mapping")
    names = [f.name for f in dataclasses.fields(cls)]
    for key in cfg:
        if key not in names:
            raise ValueError(f"config field '{where}.{key}' is unknown (known: {names})")
    for key in names:
        if key not in cfg:
            raise ValueError(f"config field '{where}.{key}' is missing")
    for key in (*positive, *non_negative):
        if isinstance(cfg[key], bool) or not isinstance(cfg[key], (int, float)):
            raise ValueError(f"config field '{where}.{key}' must be a number (got {cfg[key]!r})")
    for key in positive:
        if not cfg[key] > 0:
            raise ValueError(f"config field '{where}.{key}' must be > 0 (got {cfg[key]})")
    for key in non_negative:
        if not cfg[key] >= 0:
            raise ValueError(f"config field '{where}.{key}' must be >= 0 (got {cfg[key]})")
    return cls(**cfg)


@dataclass(frozen=True)
class StabilityProtocol:
    T_initial: float
    T_anneal: float
    warmup_ps: float
    hold_ps: float
    nve_ps: float
    timestep_fs: float
    tdamp_fs: float
    dump_every_ps: float

    def steps(self, ps: float) -> int:
        return round(ps * 1000.0 / self.timestep_fs)

    def stages(self) -> list[tuple[str, float | None, float | None, int]]:
        """(name, T_start, T_end, steps); NVE has no target temperature."""
        stages = [("warmup", self.T_initial, self.T_anneal, self.steps(self.warmup_ps)),
                  ("hold", self.T_anneal, self.T_anneal, self.steps(self.hold_ps)),
                  ("nve", None, None, self.steps(self.nve_ps))]
        return [s for s in stages if s[3] > 0]


@dataclass(frozen=True)
class FailureCriteria:
    check_every_fs: float
    min_distance: float | str | dict  # Å; "auto" or, resolved, one per element pair
    max_force: float
    max_temperature_factor: float
    close_pair_factor: float          # min_distance "auto": x sum of covalent radii
    unphysical_factor: float          # see classify_unphysical


@dataclass(frozen=True)
class Analysis:
    relabel_frames: int
    coordination_cutoff: float | str | dict  # Å; "auto" or, resolved, one per element pair
    rdf_r_max: float
    rdf_bins: int
    coordination_factor: float               # coordination_cutoff "auto": x covalent radii


@dataclass(frozen=True)
class StartSelection:
    source: str
    count: int
    density_min: float
    density_max: float


@dataclass(frozen=True)
class StabilitySettings:
    starts: StartSelection
    velocity_seeds: list[int]
    protocol: StabilityProtocol
    failure: FailureCriteria
    analysis: Analysis

    @classmethod
    def from_config(cls, cfg: dict, elements: list[str] | None = None) -> "StabilitySettings":
        """Strictly parse the ``stability`` config section (see the module docstring). With
        ``elements``, the distance thresholds become one per element pair: ``auto`` ones
        derived from covalent radii (``structure_analysis.pair_thresholds``), numbers the
        same for every pair."""
        # engine: how a model runs, a run option (job_settings.stability_run_options)
        top = _build(_Raw, {k: v for k, v in cfg.items() if k != "engine"}, "stability")
        if not top.velocity_seeds:
            raise ValueError("config field 'stability.velocity_seeds' is empty")
        # starts.quench is rule stability_starts' business (synthpre.stability_starts)
        selection = {k: v for k, v in top.starts.items() if k != "quench"}
        starts = _build(StartSelection, selection, "stability.starts", positive=("count",),
                        non_negative=("density_min",))
        if starts.density_max < starts.density_min:
            raise ValueError("config field 'stability.starts.density_max' is below density_min")
        protocol = _build(StabilityProtocol, top.protocol, "stability.protocol",
                          positive=("T_initial", "T_anneal", "hold_ps", "timestep_fs",
                                    "tdamp_fs", "dump_every_ps"),
                          non_negative=("warmup_ps", "nve_ps"))
        _check_auto(top.failure, "stability.failure", "min_distance", minimum_ok=True)
        _check_auto(top.analysis, "stability.analysis", "coordination_cutoff")
        failure = _build(FailureCriteria, top.failure, "stability.failure",
                         positive=("check_every_fs", "max_force", "close_pair_factor",
                                   "unphysical_factor"))
        if not failure.max_temperature_factor > 1:
            raise ValueError("config field 'stability.failure.max_temperature_factor' must be > 1")
        analysis = _build(Analysis, top.analysis, "stability.analysis",
                          positive=("rdf_r_max", "rdf_bins", "coordination_factor"),
                          non_negative=("relabel_frames",))
        if elements is not None:
            failure = dataclasses.replace(failure, min_distance=pair_thresholds(
                elements, failure.min_distance, failure.close_pair_factor))
            analysis = dataclasses.replace(analysis, coordination_cutoff=pair_thresholds(
                elements, analysis.coordination_cutoff, analysis.coordination_factor))
        return cls(starts, [int(s) for s in top.velocity_seeds], protocol, failure, analysis)


def _check_auto(section, where: str, key: str, minimum_ok: bool = False) -> None:
    """A distance threshold: "auto" (from the elements) or a number > 0 (>= 0 where 0 turns
    the criterion off)."""
    value = section.get(key) if isinstance(section, dict) else None
    if value == "auto" or value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not (value >= 0 if minimum_ok else value > 0):
        raise ValueError(f"config field '{where}.{key}' must be 'auto' or a number "
                         f"{'>=' if minimum_ok else '>'} 0 (got {value!r})")


@dataclass(frozen=True)
class _Raw:
    starts: dict
    velocity_seeds: list
    protocol: dict
    failure: dict
    analysis: dict


# ---------------------------------------------------------------- start structures

def select_starts(frames: list[Atoms], sel: StartSelection, elements: list[str],
                  source: str) -> list[Atoms]:
    """Periodic cells in the density window, ``count`` of them spread evenly over density
    (deterministic). Errors name ``source`` for unknown elements or an empty selection."""
    for k, atoms in enumerate(frames):
        unknown = sorted(set(atoms.get_chemical_symbols()) - set(elements))
        if unknown:
            raise ValueError(f"start structures {source}: structure {k} has element(s) "
                             f"{unknown} outside {elements}")
    # bounds widened by float rounding: a cell made at density_max (source "teacher") is in
    pool = [a for a in frames if a.pbc.all()
            and sel.density_min * (1 - 1e-9) <= density_of(a) <= sel.density_max * (1 + 1e-9)]
    if not pool:
        raise ValueError(f"start structures {source}: no periodic cell with density in "
                         f"[{sel.density_min}, {sel.density_max}] g/cm^3 (config fields "
                         f"'stability.starts.density_min/max'); {len(frames)} structures read")
    pool.sort(key=density_of)
    picks = sorted(set(np.linspace(0, len(pool) - 1, min(sel.count, len(pool)))
                       .round().astype(int).tolist()))
    return [Atoms(pool[i].numbers, positions=pool[i].positions, cell=pool[i].cell, pbc=True)
            for i in picks]


def read_start_source(path: str) -> list[Atoms]:
    """Structures from a real-data shard (``.h5``) or any file ASE reads (extxyz...)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"start structures {path} not found")
    if path.endswith(".h5"):
        from .shard_files import read_shard

        return [Atoms(r["numbers"], positions=r["positions"], cell=r["cell"], pbc=r["pbc"])
                for r in read_shard(path)]
    from .frames import read_frames

    return read_frames(path)


def check_species(starts: list[Atoms], species: list[str], source: str, model: str) -> None:
    unknown = sorted({s for a in starts for s in a.get_chemical_symbols()} - set(species))
    if unknown:
        raise ValueError(f"start structures {source}: element(s) {unknown} unknown to model "
                         f"{model} (species {species})")


# ---------------------------------------------------------------- failure detection

def detect(atoms: Atoms | None, forces: np.ndarray | None, energy: float, temperature: float,
           target_T: float, crit: FailureCriteria, lost: int = 0) -> tuple[str, str] | None:
    """(reason, detail) of the first failed criterion for this state, or None.

    ``lost`` is how many atoms LAMMPS no longer has (then ``atoms``/``forces`` may be None)."""
    if not (math.isfinite(energy) and math.isfinite(temperature)):
        return "non_finite", f"energy {energy} eV, temperature {temperature} K"
    if lost:
        return "lost_atoms", f"{lost} atoms lost"
    if not (np.isfinite(forces).all() and np.isfinite(atoms.positions).all()):
        return "non_finite", "non-finite forces or positions"
    limits = crit.min_distance
    if isinstance(limits, str):
        raise ValueError("stability.failure.min_distance 'auto' is not resolved: parse the "
                         "settings with the elements (StabilitySettings.from_config)")
    if isinstance(limits, dict):
        limits = {pair: v for pair, v in limits.items() if v > 0}
    closest = closest_violation(atoms, limits) if limits else None
    if closest is not None:
        d, pair, limit = closest
        name = f"{pair} pair" if isinstance(crit.min_distance, dict) else "pair"
        return "close_pair", f"{name} at {d:.3f} Å < {limit} Å"
    fmax = float(np.abs(forces).max()) if len(forces) else 0.0
    if fmax > crit.max_force:
        return "large_force", f"force component {fmax:.3g} eV/Å > {crit.max_force} eV/Å"
    t_max = crit.max_temperature_factor * target_T
    if temperature > t_max:
        return "hot", f"temperature {temperature:.0f} K > {t_max:.0f} K"
    return None


# ---------------------------------------------------------------- one MD run

@dataclass
class RunResult:
    run_id: str
    start: int
    seed: int
    natoms: int
    density: float
    failure: dict | None          # {"reason", "time_ps", "detail"}
    time_ps: float                # simulated time reached
    frames: list[Atoms]           # dumped frames (all passed the detector)
    nve: list[tuple[float, float]] = field(default_factory=list)  # (time_ps, total energy eV)
    wall_s: float = 0.0
    cpu_s: float = 0.0            # this process's CPU time: comparable on a shared machine


def run_md(potential: Teacher, start: Atoms, protocol: StabilityProtocol,
           crit: FailureCriteria, seed: int, run_id: str, start_index: int,
           lammps_args: tuple[str, ...] = ()) -> RunResult:
    """One stability run of ``potential`` from ``start`` (see the module docstring)."""
    t0, c0 = time.perf_counter(), time.process_time()
    system = LammpsSystem(start, potential, lammps_args=lammps_args)
    lmp = system.lmp
    dt_ps = protocol.timestep_fs / 1000.0
    check = max(1, round(crit.check_every_fs / protocol.timestep_fs))
    dump = max(1, protocol.steps(protocol.dump_every_ps))
    result = RunResult(run_id, start_index, seed, len(start), density_of(start), None, 0.0, [])
    step = 0

    def state_failure(target_T: float) -> tuple[str, str] | None:
        if system.callback_error:
            return "model_error", system.callback_error
        lost = system.natoms - int(lmp.get_natoms())
        atoms, forces = (None, None) if lost else (system.atoms(), system.forces())
        return detect(atoms, forces, system.potential_energy(), float(lmp.get_thermo("temp")),
                      target_T, crit, lost)

    try:
        lmp.commands_list([f"timestep {dt_ps!r}",
                           f"velocity all create {protocol.T_initial!r} {seed % 900_000 + 1} "
                           f"mom yes rot no dist gaussian", "run 0 post no"])
        bad = state_failure(protocol.T_anneal)
        for name, t_a, t_b, nsteps in protocol.stages():
            if bad:
                break
            target = protocol.T_anneal if t_a is None else max(t_a, t_b)
            fix = "nve" if t_a is None else f"nvt temp {t_a!r} {t_b!r} {protocol.tdamp_fs / 1000.0!r}"
            lmp.command(f"fix integrate all {fix}")
            first, end = step, step + nsteps
            while step < end:
                chunk = min(check - step % check, dump - step % dump, end - step)
                lmp.command(f"run {chunk} start {first} stop {end} "
                            f"pre {'yes' if step == first else 'no'} post no")
                step += chunk
                bad = state_failure(target)
                if bad:
                    break
                if name == "nve":
                    result.nve.append((step * dt_ps, float(lmp.get_thermo("etotal"))))
                if step % dump == 0:
                    result.frames.append(_frame(system, run_id, step * dt_ps, name))
            lmp.command("unfix integrate")
    except Exception as err:  # LAMMPS raises plain Exceptions for its own errors
        bad = ("lammps_error", f"{type(err).__name__}: {err}")
    finally:
        system.close()
    if bad:
        result.failure = {"reason": bad[0], "time_ps": round(step * dt_ps, 6), "detail": bad[1]}
    result.time_ps = round(step * dt_ps, 6)
    result.wall_s = time.perf_counter() - t0
    result.cpu_s = time.process_time() - c0
    return result


def _frame(system: LammpsSystem, run_id: str, time_ps: float, stage: str) -> Atoms:
    frame = system.atoms()
    frame.info.update(run=run_id, time_ps=round(time_ps, 6), stage=stage,
                      temperature_K=float(system.lmp.get_thermo("temp")),
                      model_energy=system.potential_energy())
    frame.arrays["model_forces"] = system.forces()
    return frame


# ---------------------------------------------------------------- analysis

def drift_meV_per_atom_ps(nve: list[tuple[float, float]], natoms: int) -> float | None:
    """Slope of the NVE total energy per atom (meV/atom/ps); None with < 3 points."""
    if len(nve) < 3:
        return None
    t, e = np.array(nve).T
    return float(np.polyfit(t, e / natoms, 1)[0] * 1000.0)


def structure(frames: list[Atoms], analysis: Analysis) -> dict:
    """Coordination fractions and g(r) over the hold-stage frames."""
    hold = [f for f in frames if f.info["stage"] == "hold"]
    if not hold:
        return {"coordination": None, "coordination_by_pair": None, "rdf": None}
    return {"coordination": coordination_fractions(hold, analysis.coordination_cutoff),
            "coordination_by_pair": coordination_by_pair(hold, analysis.coordination_cutoff),
            "rdf": rdf(hold, analysis.rdf_r_max, analysis.rdf_bins)[1].tolist()}


def relabel(frames: list[Atoms], count: int, teacher: Teacher, e0_model: dict,
            e0_teacher: dict, calculator=None) -> dict:
    """Model vs teacher on ``count`` evenly spaced frames of one run: squared-error sums
    (pooled later) of force components and per-atom energies relative to isolated atoms."""
    if not frames or count == 0:
        return {"n_frames": 0, "force_sq_sum": 0.0, "n_force": 0, "energy_diff_per_atom": []}
    picks = sorted(set(np.linspace(0, len(frames) - 1, min(count, len(frames)))
                       .round().astype(int).tolist()))
    f_sq, n_f, e_diff = 0.0, 0, []
    for k in picks:
        frame = frames[k]
        symbols = frame.get_chemical_symbols()
        energy, forces = single_point(frame, teacher, calculator)
        e_teacher = energy - sum(e0_teacher[s] for s in symbols)
        e_model = frame.info["model_energy"] - sum(e0_model[s] for s in symbols)
        e_diff.append((e_model - e_teacher) / len(frame))
        f_sq += float(np.sum((frame.arrays["model_forces"] - forces) ** 2))
        n_f += forces.size
    return {"n_frames": len(picks), "force_sq_sum": f_sq, "n_force": n_f,
            "energy_diff_per_atom": e_diff}


def pooled_relabel(parts: list[dict]) -> dict:
    """Force RMSE and per-atom energy RMSE about the mean offset (energy scales of model and
    teacher may differ by a constant per atom: the model may be fine-tuned on DFT)."""
    n_f = sum(p["n_force"] for p in parts)
    diffs = np.array([d for p in parts for d in p["energy_diff_per_atom"]])
    return {"n_frames": int(sum(p["n_frames"] for p in parts)),
            "force_rmse": math.sqrt(sum(p["force_sq_sum"] for p in parts) / n_f) if n_f else None,
            "energy_offset_per_atom": float(diffs.mean()) if diffs.size else None,
            "energy_rmse_per_atom_centered": float(diffs.std()) if diffs.size > 1 else None}


def summarise(runs: list[dict], protocol: StabilityProtocol) -> dict:
    """Survival fraction, times and reasons of failure, over all runs of one potential."""
    failed = [r["failure"] for r in runs if r["failure"]]
    reasons: dict[str, int] = {}
    for f in failed:
        reasons[f["reason"]] = reasons.get(f["reason"], 0) + 1
    total_ps = sum(s[3] for s in protocol.stages()) * protocol.timestep_fs / 1000.0

    def mean(key, f=float):
        values = [f(r[key]) for r in runs if r.get(key) is not None]
        return float(np.mean(values)) if values else None

    return {"n_runs": len(runs), "n_survived": len(runs) - len(failed),
            "survival_fraction": (len(runs) - len(failed)) / len(runs) if runs else None,
            "protocol_ps": round(total_ps, 6),
            "mean_time_survived_ps": float(np.mean([r["time_ps"] for r in runs])) if runs else None,
            "mean_time_to_failure_ps": float(np.mean([f["time_ps"] for f in failed]))
            if failed else None,
            "failure_reasons": reasons,
            "rdf_distance": mean("rdf_distance"),
            "nve_abs_drift_meV_per_atom_ps": mean("nve_drift_meV_per_atom_ps", abs),
            "coordination": _mean_fractions([r["coordination"] for r in runs]),
            "teacher_coordination": _mean_fractions([r.get("teacher_coordination")
                                                     for r in runs]),
            "coordination_by_pair": _mean_fractions([r.get("coordination_by_pair")
                                                     for r in runs]),
            "teacher_coordination_by_pair": _mean_fractions(
                [r.get("teacher_coordination_by_pair") for r in runs]),
            **_outcomes(runs)}


def _outcomes(runs: list[dict]) -> dict:
    """Counts of the three outcomes (classify_unphysical): stable runs are the survivors
    that are not unphysical."""
    unphysical = sum(r.get("outcome") == "unphysical" for r in runs)
    stable = sum(r.get("outcome", "survived" if r["survived"] else "failed") == "survived"
                 for r in runs)
    return {"n_unphysical": unphysical, "n_stable": stable,
            "stable_fraction": stable / len(runs) if runs else None}


def _mean_fractions(items: list[dict | None]) -> dict | None:
    """Means over runs; a key missing from a run counts 0 there (a coordination it never
    showed)."""
    items = [c for c in items if c]
    if not items:
        return None
    keys = sorted({k for c in items for k in c})
    return {k: float(np.mean([c.get(k, 0.0) for c in items])) for k in keys}


# ---------------------------------------------------------------- outcomes and cell size

# A survivor whose teacher-relabel force RMSE exceeds this many times the error one expects of
# it (its own test force RMSE plus the teacher-vs-DFT gap) is "unphysical": it stayed in one
# piece on a surface far from both the data and the teacher (docs/stability.md).
def unphysical_threshold(factor: float, model_test_force_rmse: float,
                         teacher_vs_real_force_rmse: float) -> float:
    """factor x (model's test force RMSE + teacher-vs-DFT force RMSE on the same test set):
    a model that is e away from DFT, when DFT is g away from the teacher, can be e + g away
    from the teacher on data-like structures (triangle inequality)."""
    return factor * (model_test_force_rmse + teacher_vs_real_force_rmse)


def classify(record: dict, threshold: float | None) -> str:
    """The run's outcome: "failed" (the detector stopped it), "unphysical" (it survived but
    its teacher-relabel force RMSE is above ``threshold``) or "survived"."""
    if not record["survived"]:
        return "failed"
    force = (record.get("relabel") or {}).get("force_rmse")
    if threshold is not None and force is not None and force > threshold:
        return "unphysical"
    return "survived"


# Relative standard deviation of the kinetic temperature of N atoms in the canonical
# ensemble, sqrt(2 / 3N): 29 % for 8 atoms, 10 % for 64. A "hot" threshold fewer than
# MIN_HOT_SIGMAS of those above the target fails a correct potential by chance.
MIN_HOT_SIGMAS = 4.0


def temperature_sigma(natoms: int) -> float:
    return math.sqrt(2.0 / (3.0 * natoms))


def small_cell_problem(natoms: int, max_temperature_factor: float) -> str | None:
    """The rule for too-small start cells: a warning when the hot threshold
    (max_temperature_factor - 1 above the target) is fewer than MIN_HOT_SIGMAS canonical
    temperature fluctuations sqrt(2/3N) away; then survival measures the cell size."""
    sigmas = (max_temperature_factor - 1.0) / temperature_sigma(natoms)
    if sigmas >= MIN_HOT_SIGMAS:
        return None
    need = math.ceil(2.0 * MIN_HOT_SIGMAS ** 2 / (3.0 * (max_temperature_factor - 1.0) ** 2))
    return (f"start cells of {natoms} atoms: their temperature fluctuates by "
            f"{100 * temperature_sigma(natoms):.0f} % (sqrt(2/3N)), so the 'hot' limit "
            f"(stability.failure.max_temperature_factor {max_temperature_factor:g}) is only "
            f"{sigmas:.1f} standard deviations above the target and fails correct potentials "
            f"by chance; use cells of at least {need} atoms (or a larger factor)")



def check_stability_config(config: dict) -> str:
    """Parse-time check of the ``stability`` section (Snakefile): bad fields, and a start file
    that is missing, holds unknown elements or no cell in the window, stop the run before any
    job, naming the field or file. Returns ``starts.source``."""
    from .config_check import ConfigError

    try:
        cfg = StabilitySettings.from_config(config["stability"])
        if cfg.starts.source == "teacher":  # made by rule stability_starts
            from . import job_settings
            from .stability_starts import check_window
            check_window(job_settings.stability_starts(config))
        elif cfg.starts.source != "test":
            select_starts(read_start_source(cfg.starts.source), cfg.starts, config["elements"],
                          f"{cfg.starts.source} (config field 'stability.starts.source')")
    except (ValueError, FileNotFoundError) as err:
        raise ConfigError(str(err)) from None
    return cfg.starts.source
