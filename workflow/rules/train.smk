# Training: pre-train on each labeller's shards, then for each n and seed fine-tune the
# pre-trained model and, as the baseline, train the same model from scratch. Each job gets
# only its own recipe (synthpre.job_settings.train), never the lists of sizes and seeds.

REAL_DATA = {"pool": f"{RESULTS}/real/pool.h5", "val": f"{RESULTS}/real/val.h5"}


# A pre-trained model's folder: <labeller> (all synthetic structures) or <labeller>/k<size>.
wildcard_constraints:
    pre=r"[A-Za-z0-9_.-]+(/k[0-9]+)?",


rule pretrain:
    input:
        manifest=lambda w: f"{RESULTS}/shards/{w.pre.split('/')[0]}/manifest.json",
    output:
        model=f"{RESULTS}/pretrain/{{pre}}/model.pt",
    params:
        settings=lambda w: settings("train", "pretrain"),
        size=lambda w: pretrain_size(w.pre),
        launch=lambda w, resources: data_parallel(resources),
    log:
        f"{RESULTS}/logs/pretrain/{{pre}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/pretrain/{{pre}}.tsv",
    conda:
        "../../envs/core.yaml"
    shell:
        '{params.launch}"$(command -v synthpre)" train --settings {params.settings:q} '
        "--stage pretrain --manifest {input.manifest:q} {params.size} --out {output.model:q} "
        "> {log:q} 2>&1"


rule finetune:
    input:
        init=f"{RESULTS}/pretrain/{{pre}}/model.pt",
        **REAL_DATA,
    output:
        model=f"{RESULTS}/finetune/{{pre}}/n{{n}}/s{{seed}}/model.pt",
    params:
        settings=lambda w: settings("train", "finetune"),
        real_dir=folder_of("pool"),
    log:
        f"{RESULTS}/logs/finetune/{{pre}}/n{{n}}/s{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/finetune/{{pre}}/n{{n}}/s{{seed}}.tsv",
    conda:
        "../../envs/core.yaml"
    shell:
        "synthpre train --settings {params.settings:q} --stage finetune "
        "--real-dir {params.real_dir:q} --n {wildcards.n} --seed {wildcards.seed} "
        "--init {input.init:q} --out {output.model:q} > {log:q} 2>&1"


rule scratch:
    input:
        **REAL_DATA,
    output:
        model=f"{RESULTS}/scratch/n{{n}}/s{{seed}}/model.pt",
    params:
        settings=lambda w: settings("train", "scratch"),
        real_dir=folder_of("pool"),
    log:
        f"{RESULTS}/logs/scratch/n{{n}}/s{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/scratch/n{{n}}/s{{seed}}.tsv",
    conda:
        "../../envs/core.yaml"
    shell:
        "synthpre train --settings {params.settings:q} --stage scratch "
        "--real-dir {params.real_dir:q} --n {wildcards.n} --seed {wildcards.seed} "
        "--out {output.model:q} > {log:q} 2>&1"
