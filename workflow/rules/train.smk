# Training: pre-train on each labeller's shards, then for each n and seed fine-tune the
# pre-trained model and, as the baseline, train the same model from scratch. Each job gets
# only its own recipe (synthpre.job_settings.train), never the lists of sizes and seeds.


def data_parallel(resources):
    """Several GPUs for one job: one torchrun rank per GPU (synthpre joins the ranks)."""
    gpus = int(getattr(resources, "gpu", 0) or 0)
    return f"torchrun --standalone --nproc_per_node={gpus} " if gpus > 1 else ""


REAL_DATA = {"pool": RESULTS + "/real/pool.h5", "val": RESULTS + "/real/val.h5"}


rule pretrain:
    input:
        manifest=RESULTS + "/shards/{labeller}/manifest.json",
    output:
        model=RESULTS + "/pretrain/{labeller}/model.pt",
    params:
        settings=lambda w: settings("train", "pretrain"),
        launch=lambda w, resources: data_parallel(resources),
    log:
        RESULTS + "/logs/pretrain/{labeller}.log",
    benchmark:
        RESULTS + "/benchmarks/pretrain/{labeller}.tsv",
    shell:
        '{params.launch}"$(command -v synthpre)" train --settings {params.settings:q} '
        "--stage pretrain --manifest {input.manifest:q} --out {output.model:q} > {log:q} 2>&1"


rule finetune:
    input:
        init=RESULTS + "/pretrain/{labeller}/model.pt",
        **REAL_DATA,
    output:
        model=RESULTS + "/finetune/{labeller}/n{n}/s{seed}/model.pt",
    params:
        settings=lambda w: settings("train", "finetune"),
        real_dir=RESULTS + "/real",
    log:
        RESULTS + "/logs/finetune/{labeller}/n{n}/s{seed}.log",
    benchmark:
        RESULTS + "/benchmarks/finetune/{labeller}/n{n}/s{seed}.tsv",
    shell:
        "synthpre train --settings {params.settings:q} --stage finetune "
        "--real-dir {params.real_dir:q} --n {wildcards.n} --seed {wildcards.seed} "
        "--init {input.init:q} --out {output.model:q} > {log:q} 2>&1"


rule scratch:
    input:
        **REAL_DATA,
    output:
        model=RESULTS + "/scratch/n{n}/s{seed}/model.pt",
    params:
        settings=lambda w: settings("train", "scratch"),
        real_dir=RESULTS + "/real",
    log:
        RESULTS + "/logs/scratch/n{n}/s{seed}.log",
    benchmark:
        RESULTS + "/benchmarks/scratch/n{n}/s{seed}.tsv",
    shell:
        "synthpre train --settings {params.settings:q} --stage scratch "
        "--real-dir {params.real_dir:q} --n {wildcards.n} --seed {wildcards.seed} "
        "--out {output.model:q} > {log:q} 2>&1"
