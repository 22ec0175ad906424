# Synthetic data: teacher MD (fan-out over density x anneal temperature x replica),
# labelling by each labeller, and shards per labeller.

from synthpre.teachers import get_teacher


def mpi_prefix(resources, potential):
    """'mpiexec -n N ' when the job has tasks > 1 (resource "mpi" names another launcher).
    An ASE-calculator potential runs on one rank (its Python callback is not parallel)."""
    tasks = int(getattr(resources, "tasks", 1) or 1)
    if tasks <= 1 or get_teacher(potential, config.get("teachers")).is_ase:
        return ""
    return f"{getattr(resources, 'mpi', None) or 'mpiexec'} -n {tasks} "


wildcard_constraints:
    job=r"d[0-9.]+-T[0-9.]+-r[0-9]+",
    labeller=r"[A-Za-z0-9_.-]+",


rule md:
    output:
        frames=RESULTS + "/md/{teacher}/{job}/frames.extxyz",
        status=RESULTS + "/md/{teacher}/{job}/md.json",
    params:
        settings=lambda w: settings("md", w.teacher),
        # MPI ranks: resources tasks > 1 (profiles set them) prefix the command with the MPI
        # launcher (resource "mpi", default mpiexec; "srun" on SLURM); one rank runs plain.
        mpi=lambda w, resources: mpi_prefix(resources, w.teacher),
    log:
        RESULTS + "/logs/md/{teacher}/{job}.log",
    benchmark:
        RESULTS + "/benchmarks/md/{teacher}/{job}.tsv",
    shell:
        "{params.mpi}synthpre md --settings {params.settings:q} --teacher {wildcards.teacher} "
        "--job {wildcards.job} --out-frames {output.frames:q} --out-status {output.status:q} "
        "> {log:q} 2>&1"


rule label:
    input:
        frames=RESULTS + "/md/" + SYN["teacher"] + "/{job}/frames.extxyz",
    output:
        RESULTS + "/labels/{labeller}/{job}.extxyz",
    params:
        settings=lambda w: settings("label", w.labeller),
        mpi=lambda w, resources: mpi_prefix(resources, w.labeller),
    log:
        RESULTS + "/logs/label/{labeller}/{job}.log",
    benchmark:
        RESULTS + "/benchmarks/label/{labeller}/{job}.tsv",
    shell:
        "{params.mpi}synthpre label --settings {params.settings:q} --labeller {wildcards.labeller} "
        "--frames {input.frames:q} --out {output:q} > {log:q} 2>&1"


rule shard:
    input:
        labelled=expand(RESULTS + "/labels/{{labeller}}/{job}.extxyz", job=JOBS),
        status=expand(RESULTS + "/md/" + SYN["teacher"] + "/{job}/md.json", job=JOBS),
    output:
        manifest=RESULTS + "/shards/{labeller}/manifest.json",
    params:
        settings=lambda w: settings("shard"),
    log:
        RESULTS + "/logs/shard/{labeller}.log",
    shell:
        "synthpre shard --settings {params.settings:q} --labelled {input.labelled:q} "
        "--status {input.status:q} --manifest {output.manifest:q} > {log:q} 2>&1"
