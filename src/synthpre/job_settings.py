"""What each rule's job reads from the config, and nothing more.

Snakemake reruns a job when its ``params`` change. A rule handed whole config sections would
rerun whenever any field of them changed (adding one real-data size used to retrain every
point; adding a labeller reran every MD trajectory). So every rule passes its job exactly the
fields that job reads, as one JSON string; the lists of sizes, seeds and labellers that only
fan jobs out never reach a job. The CLI reads these same slices, so a stage run by hand takes
the same JSON.
"""
from __future__ import annotations

import dataclasses
import json

# Fields of the training recipe (``train`` merged with a stage's overrides) that decide a
# training's result.
TRAIN_FIELDS = ("batch_size", "val_batch_size", "lr", "energy_weight", "ema_decay", "patience",
                "min_delta", "max_epochs", "min_steps", "lr_factor", "lr_patience", "seed")
# How a training runs, not what it computes, like the device or the thread count (compiling
# the kernel changes float rounding only, docs/benchmarks.md). They reach the job beside its
# settings (``train_run_options``), so changing one reruns no finished training and lets an
# unfinished one resume: switching the compiled kernel off on a GPU must not retrain a study.
RUN_FIELDS = {"model": ("compile",), "train": ("tensorboard", "loader_workers", "capture")}


def strict(cls, mapping: dict, where: str, **extra):
    """Dataclass ``cls`` from a validated config mapping: every field required, unknown ones
    refused, each named by its config path. The schema fills defaults; code keeps none."""
    if not isinstance(mapping, dict):
        raise ValueError(f"config field '{where}' must be a mapping (got {mapping!r})")
    values = {**mapping, **extra}
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"config field '{where}.{unknown[0]}' is unknown (known: {names})")
    missing = [n for n in names if n not in values]
    if missing:
        raise ValueError(f"config field '{where}.{missing[0]}' is missing (the schema's "
                         f"defaults fill it when the config is validated)")
    return cls(**values)


def as_json(settings: dict) -> str:
    """Canonical JSON (sorted keys), so equal settings give equal params."""
    return json.dumps(settings, sort_keys=True)


def teacher_spec(config: dict, name: str) -> dict:
    """The config's own definition of a teacher, or {} for a built-in one. A fine-tuned
    teacher (``base``) gets its resolved fine-tuning and the file rule ``teacher_finetune``
    writes (``model_path``), so its jobs rerun when its fine-tuning changes."""
    custom = config.get("teachers") or {}
    if name not in custom:
        return {}
    if "base" in custom[name]:
        return {name: {**teacher_finetune(config, name), "model_path": teacher_file(config, name)}}
    return {name: custom[name]}


def is_finetuned(config: dict, name: str) -> bool:
    return "base" in ((config.get("teachers") or {}).get(name) or {})


def teacher_file(config: dict, name: str) -> str:
    """Where rule ``teacher_finetune`` writes teacher ``name``'s model (relative to the
    workflow's directory, like every result)."""
    return f"results/{config['run']}/teachers/{name}/model.pth"


def teacher_finetune(config: dict, name: str) -> dict:
    """A fine-tuned teacher's job: its base, the elements and its ``finetune`` fields, with
    ``n`` (null: the largest ``finetune.n_train``) and ``seed`` (null: the first of
    ``finetune.seeds``) resolved, so adding a smaller n to the study refits nothing."""
    spec = config["teachers"][name]
    ft = dict(spec["finetune"])
    if ft["n"] is None:
        ft["n"] = max(config["finetune"]["n_train"])
    if ft["seed"] is None:
        ft["seed"] = config["finetune"]["seeds"][0]
    return {"name": name, "base": spec["base"], "elements": config["elements"], "finetune": ft}


def teacher_real_structures(config: dict, labeller: str) -> int:
    """How many real structures the teachers behind ``labeller``'s synthetic data saw: the
    MD teacher's and the labeller's fine-tuning subsets. Subsets of one seed are nested (the
    larger); of different seeds counted as their sum (an upper bound)."""
    seen: dict[int, int] = {}
    for name in {config["synthetic"]["teacher"], labeller}:
        if is_finetuned(config, name):
            ft = teacher_finetune(config, name)["finetune"]
            seen[ft["seed"]] = max(seen.get(ft["seed"], 0), ft["n"])
    return sum(seen.values())


def alchemical(config: dict, name: str) -> dict:
    """``{"alchemical": <its entry>}`` for an alchemical labeller (synthpre.alchemical), else
    {}: other labellers' settings stay as they were, so adding one reruns no other job."""
    spec = (config["synthetic"].get("alchemical") or {}).get(name)
    return {"alchemical": spec} if spec else {}


def md(config: dict, teacher: str) -> dict:
    """An MD job: the teacher's, or an alchemical labeller's (its source teacher's MD)."""
    syn = config["synthetic"]
    source = syn["alchemical"][teacher]["teacher"] if alchemical(config, teacher) else teacher
    return {"teachers": teacher_spec(config, source), "elements": config["elements"],
            "n_atoms": syn["n_atoms"], "min_distance": syn["min_distance"],
            "seed": syn["seed"], "protocol": syn["protocol"],
            # only when set, so single-element configs keep their params (no MD reruns)
            **({"composition": syn["composition"]} if syn.get("composition") else {}),
            # only when sampling is not MD, so MD configs keep their params (no reruns)
            **({"rattle_relax": syn["rattle_relax"]}
               if syn.get("sampling", "md") == "rattle-relax" else {}),
            **alchemical(config, teacher)}


def label(config: dict, labeller: str) -> dict:
    spec = alchemical(config, labeller)
    source = spec["alchemical"]["teacher"] if spec else labeller
    return {"teachers": teacher_spec(config, source), **spec}


def shard(config: dict, labeller: str | None = None) -> dict:
    syn = config["synthetic"]
    seen = teacher_real_structures(config, labeller) if labeller else 0
    return {"filters": syn["filters"], "val_fraction": syn["val_fraction"],
            "seed": syn["seed"], "frames_per_shard": syn["frames_per_shard"],
            "r_max": config["model"]["r_max"],
            # only when a teacher was fine-tuned, so other studies keep their params
            **({"teacher_real_structures": seen} if seen else {})}


def real(config: dict) -> dict:
    """The ``real`` section without its source (that is the rule's input file) and the
    elements: not the sizes or seeds, so adding one does not redo the splits."""
    return {"real": {k: v for k, v in config["real"].items() if k != "source"},
            "elements": config["elements"]}


def stability(config: dict) -> dict:
    """The stability section, the elements and the teacher that runs the reference MD; not
    the teacher's quench of the start cells (a changed quench reaches the jobs as a changed
    start file, their input)."""
    teacher = config["synthetic"]["teacher"]
    section = {k: v for k, v in config["stability"].items() if k != "engine"}  # a run option
    starts = {k: v for k, v in section["starts"].items() if k != "quench"}
    return {"stability": {**section, "starts": starts}, "elements": config["elements"],
            "teacher": teacher, "teachers": teacher_spec(config, teacher)}


def stability_starts(config: dict) -> dict:
    """Teacher-quenched start cells: the density window and quench, the teacher, and the
    synthetic MD's cell and integration settings (not its stages)."""
    syn, starts = config["synthetic"], config["stability"]["starts"]
    return {"starts": {k: starts[k] for k in ("count", "density_min", "density_max", "quench")},
            "elements": config["elements"], "teacher": syn["teacher"],
            "teachers": teacher_spec(config, syn["teacher"]),
            "min_distance": syn["min_distance"], "seed": syn["seed"],
            "protocol": {k: v for k, v in syn["protocol"].items() if k != "stages"},
            # only when set, as for md
            **({"composition": syn["composition"]} if syn.get("composition") else {})}


def dft(config: dict) -> dict:
    return {"dft": config["dft"]}


def train(config: dict, stage: str) -> dict:
    """A training job's recipe: the model, and ``train`` merged with the stage's overrides.
    ``stage`` is pretrain, scratch or a fine-tuning mode (finetune, replay, frozen); scratch
    is the finetune recipe from fresh weights (every mode fits the energy shift to its data or
    none does, so the comparison is fair). Only replay jobs read ``finetune.replay`` and only
    frozen jobs ``finetune.freeze_layers``, so changing one reruns that mode alone."""
    merged = _recipe(config, stage)
    model = {k: v for k, v in config["model"].items() if k not in RUN_FIELDS["model"]}
    settings = {"elements": config["elements"], "model": model,
                "train": {k: merged[k] for k in TRAIN_FIELDS}}
    if stage == "pretrain" and config["pretrain"]["per_atom_energy_weight"] > 0:
        # only when on: at 0 the settings (the rule's params) stay as before the term existed
        settings["train"]["per_atom_energy_weight"] = config["pretrain"]["per_atom_energy_weight"]
    if stage != "pretrain":
        settings["fit_shift"] = config["finetune"]["fit_shift"]
    if stage == "replay":
        settings["replay"] = config["finetune"]["replay"]
    if stage == "frozen":
        settings["freeze_layers"] = config["finetune"]["freeze_layers"]
    return settings


def train_run_options(config: dict, stage: str) -> dict:
    """How a training job of ``stage`` runs (``RUN_FIELDS``): not part of its settings."""
    merged = _recipe(config, stage)
    return {**model_run_options(config), **{k: merged[k] for k in RUN_FIELDS["train"]}}


def model_run_options(config: dict) -> dict:
    """How a job that runs a trained model (stability MD) runs it: the compiled kernel or not."""
    return {k: config["model"][k] for k in RUN_FIELDS["model"]}


def stability_run_options(config: dict) -> dict:
    """How a stability job runs its model: ``model_run_options`` and the MD engine
    (``stability.engine``: fix external or the LAMMPS plugin)."""
    return {**model_run_options(config), "engine": config["stability"]["engine"]}


def _recipe(config: dict, stage: str) -> dict:
    """``train`` merged with the stage's section (pretrain, or finetune for every other)."""
    return {**config["train"], **config["pretrain" if stage == "pretrain" else "finetune"]}
