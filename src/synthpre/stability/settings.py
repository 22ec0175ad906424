"""Settings of the stability stage (config section ``stability``), built through
``job_settings.strict`` like every stage's: a missing or unknown field raises ValueError naming
``stability.<field>``. Types and ranges are the config schema's alone (with the defaults):
Snakemake checks them at parse time, and a job checks its section against the schema's own
``stability`` entry (``check_section``), since its JSON may have been written by hand. Here
only what the schema cannot say: the density window's order. Also the cell-size rule for the
'hot' criterion."""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

from ..job_settings import strict
from .structure import pair_thresholds


def check_section(cfg: dict) -> None:
    """Refuse a ``stability`` section the config schema refuses, naming the field: the ranges
    live in the schema only, and a job's settings may not have passed Snakemake's check."""
    import jsonschema

    error = jsonschema.exceptions.best_match(_validator().iter_errors(cfg))
    if error is not None:
        where = "".join(f".{p}" for p in error.absolute_path)
        raise ValueError(f"config field 'stability{where}': {error.message}")


@functools.cache
def _validator():
    import jsonschema
    import yaml

    from ..config import SCHEMA

    schema = yaml.safe_load(SCHEMA.read_text())
    entry = {**schema["properties"]["stability"], "$schema": schema["$schema"],
             "definitions": schema.get("definitions", {})}
    return jsonschema.validators.validator_for(entry)(entry)


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
        """The ``stability`` section (schema-valid: see ``check_section``), strictly (see the
        module docstring). With ``elements``, the distance thresholds become one per element
        pair: ``auto`` ones derived from covalent radii (``structure.pair_thresholds``),
        numbers the same for every pair."""
        # engine: how a model runs, a run option (job_settings.stability_run_options)
        top = strict(_Raw, {k: v for k, v in cfg.items() if k != "engine"}, "stability")
        # starts.quench is rule stability_starts' business (stability.starts)
        starts = strict(StartSelection, {k: v for k, v in top.starts.items() if k != "quench"},
                        "stability.starts")
        if starts.density_max < starts.density_min:
            raise ValueError("config field 'stability.starts.density_max' is below density_min")
        protocol = strict(StabilityProtocol, top.protocol, "stability.protocol")
        failure = strict(FailureCriteria, top.failure, "stability.failure")
        analysis = strict(Analysis, top.analysis, "stability.analysis")
        if elements is not None:
            failure = dataclasses.replace(failure, min_distance=pair_thresholds(
                elements, failure.min_distance, failure.close_pair_factor))
            analysis = dataclasses.replace(analysis, coordination_cutoff=pair_thresholds(
                elements, analysis.coordination_cutoff, analysis.coordination_factor))
        return cls(starts, [int(s) for s in top.velocity_seeds], protocol, failure, analysis)


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
