# Training: pre-train on each labeller's shards, then for each n and seed fine-tune the
# pre-trained model (in each mode of finetune.modes) and, as the baseline, train the same
# model from scratch. Each job gets only its own recipe (synthpre.job_settings.train), never the lists of sizes and seeds.

REAL_DATA = {"pool": f"{RESULTS}/real/pool.h5", "val": f"{RESULTS}/real/val.h5"}


# A pre-trained model's folder: <labeller> (all synthetic structures) or <labeller>/k<size>.
wildcard_constraints:
    pre=points.FAMILY,
    n=r"[0-9]+",
    seed=r"[0-9]+",


rule pretrain:
    input:
        manifest=lambda w: shards_of(w.pre),
    output:
        model=f"{RESULTS}/pretrain/{{pre}}/model.pt",
    params:
        settings=lambda w: settings("train", "pretrain"),
        size=lambda w: pretrain_size(w.pre),
        launch=lambda w, resources: data_parallel(resources),
    resources:
        run_options=RUN_OPTIONS["pretrain"],
    log:
        f"{RESULTS}/logs/pretrain/{{pre}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/pretrain/{{pre}}.tsv",
    conda:
        "../../envs/core.yaml"
    shell:
        '{params.launch}"$(command -v synthpre)" train --settings {params.settings:q} '
        "--run-options {resources.run_options:q} --stage pretrain "
        "--manifest {input.manifest:q} {params.size} --out {output.model:q} "
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
        stage="finetune",
        extra="",
    resources:
        run_options=RUN_OPTIONS["finetune"],
    log:
        f"{RESULTS}/logs/finetune/{{pre}}/n{{n}}/s{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/finetune/{{pre}}/n{{n}}/s{{seed}}.tsv",
    conda:
        "../../envs/core.yaml"
    shell:
        "synthpre train --settings {params.settings:q} --run-options {resources.run_options:q} "
        "--stage {params.stage:q} --real-dir {params.real_dir:q} --n {wildcards.n:q} "
        "--seed {wildcards.seed:q} "
        "--init {input.init:q} {params.extra} --out {output.model:q} > {log:q} 2>&1"


# The other fine-tuning modes (finetune.modes): the same job, its own recipe and curve.
# Replay mixes in the synthetic frames the model was pre-trained on (its labeller's shards).
use rule finetune as replay with:
    input:
        init=f"{RESULTS}/pretrain/{{pre}}/model.pt",
        manifest=lambda w: shards_of(w.pre),
        **REAL_DATA,
    output:
        model=f"{RESULTS}/replay/{{pre}}/n{{n}}/s{{seed}}/model.pt",
    params:
        settings=lambda w: settings("train", "replay"),
        real_dir=folder_of("pool"),
        stage="replay",
        extra=lambda w, input: f"--manifest {shlex.quote(input.manifest)}",
    log:
        f"{RESULTS}/logs/replay/{{pre}}/n{{n}}/s{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/replay/{{pre}}/n{{n}}/s{{seed}}.tsv",


use rule finetune as frozen with:
    output:
        model=f"{RESULTS}/frozen/{{pre}}/n{{n}}/s{{seed}}/model.pt",
    params:
        settings=lambda w: settings("train", "frozen"),
        real_dir=folder_of("pool"),
        stage="frozen",
        extra="",
    log:
        f"{RESULTS}/logs/frozen/{{pre}}/n{{n}}/s{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/frozen/{{pre}}/n{{n}}/s{{seed}}.tsv",


rule scratch:
    input:
        **REAL_DATA,
    output:
        model=f"{RESULTS}/scratch/n{{n}}/s{{seed}}/model.pt",
    params:
        settings=lambda w: settings("train", "scratch"),
        real_dir=folder_of("pool"),
    resources:
        run_options=RUN_OPTIONS["finetune"],
    log:
        f"{RESULTS}/logs/scratch/n{{n}}/s{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/scratch/n{{n}}/s{{seed}}.tsv",
    conda:
        "../../envs/core.yaml"
    shell:
        "synthpre train --settings {params.settings:q} --run-options {resources.run_options:q} "
        "--stage scratch --real-dir {params.real_dir:q} --n {wildcards.n:q} "
        "--seed {wildcards.seed:q} "
        "--out {output.model:q} > {log:q} 2>&1"
