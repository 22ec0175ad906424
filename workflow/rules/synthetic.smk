# Synthetic data: teacher MD (fan-out over density x anneal temperature x replica),
# labelling by each labeller, and shards per labeller.


wildcard_constraints:
    job=md.JOB,
    labeller=points.NAME,
    teacher=points.NAME,


rule teacher_finetune:
    input:
        pool=f"{RESULTS}/real/pool.h5",  # the training pool only: the test set never reaches it
    output:
        model=f"{RESULTS}/teachers/{{teacher}}/model.pth",
        summary=f"{RESULTS}/teachers/{{teacher}}/model.pth.json",
    params:
        settings=lambda w: settings("teacher_finetune", w.teacher),
    log:
        f"{RESULTS}/logs/teacher_finetune/{{teacher}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/teacher_finetune/{{teacher}}.tsv",
    conda:
        "../../envs/foundation.yaml"
    shell:
        "synthpre teacher-finetune --settings {params.settings:q} --pool {input.pool:q} "
        "--out {output.model:q} > {log:q} 2>&1"


rule md:
    input:
        teacher_model=lambda w: finetuned_teacher_file(w.teacher),
        potential=lambda w: teacher_input(w.teacher),
    output:
        frames=f"{RESULTS}/md/{{teacher}}/{{job}}/frames.extxyz",
        status=f"{RESULTS}/md/{{teacher}}/{{job}}/md.json",
    params:
        settings=lambda w: settings("md", w.teacher),
        content=lambda w: content(w.teacher),
        # MPI ranks: resources tasks > 1 (profiles set them) prefix the command with the MPI
        # launcher (resource "mpi", default mpiexec; "srun" on SLURM); one rank runs plain.
        mpi=lambda w, resources: mpi_prefix(resources, w.teacher),
    log:
        f"{RESULTS}/logs/md/{{teacher}}/{{job}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/md/{{teacher}}/{{job}}.tsv",
    conda:
        "../../envs/foundation.yaml"
    shell:
        "{params.mpi}synthpre md --settings {params.settings:q} --teacher {wildcards.teacher:q} "
        "--job {wildcards.job:q} --out-frames {output.frames:q} --out-status {output.status:q} "
        "> {log:q} 2>&1"


rule label:
    input:
        frames=lambda w: f"{RESULTS}/md/{md_folder(config, w.labeller)}/{w.job}/frames.extxyz",
        labeller_model=lambda w: finetuned_teacher_file(w.labeller),
        potential=lambda w: teacher_input(w.labeller),
    output:
        f"{RESULTS}/labels/{{labeller}}/{{job}}.extxyz",
    params:
        settings=lambda w: settings("label", w.labeller),
        content=lambda w: content(w.labeller),
        mpi=lambda w, resources: mpi_prefix(resources, w.labeller),
    log:
        f"{RESULTS}/logs/label/{{labeller}}/{{job}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/label/{{labeller}}/{{job}}.tsv",
    conda:
        "../../envs/foundation.yaml"
    shell:
        "{params.mpi}synthpre label --settings {params.settings:q} --labeller {wildcards.labeller:q} "
        "--frames {input.frames:q} --out {output:q} > {log:q} 2>&1"


rule shard:
    input:
        labelled=expand(f"{RESULTS}/labels/{{labeller}}/{{job}}.extxyz", job=JOBS,
                        allow_missing=True),
        status=lambda w: expand(f"{RESULTS}/md/{md_folder(config, w.labeller)}/{{job}}/md.json",
                                job=JOBS),
    output:
        manifest=f"{RESULTS}/shards/{{labeller}}/manifest.json",
    params:
        settings=lambda w: settings("shard", w.labeller),
    log:
        f"{RESULTS}/logs/shard/{{labeller}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/shard/{{labeller}}.tsv",
    conda:
        "../../envs/core.yaml"
    shell:
        "synthpre shard --settings {params.settings:q} --labelled {input.labelled:q} "
        "--status {input.status:q} --manifest {output.manifest:q} > {log:q} 2>&1"
