"""Settings of the stability stage (config section ``stability``), read strictly: a missing,
unknown or out-of-range field raises ValueError naming ``stability.<field>``; defaults live in
the config schema only. Also the cell-size rule for the 'hot' criterion."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass


from .structure import (pair_thresholds)


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
        derived from covalent radii (``structure.pair_thresholds``), numbers the
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
