# Training: pre-train on each labeller's shards, then for each n and seed fine-tune the
# pre-trained model and, as the baseline, train the same model from scratch.


rule pretrain:
    input:
        manifest=RESULTS + "/shards/{labeller}/manifest.json",
    output:
        model=RESULTS + "/pretrain/{labeller}/model.pt",
    params:
        settings=lambda w: settings("elements", "model", "train", "pretrain"),
    log:
        RESULTS + "/logs/pretrain/{labeller}.log",
    shell:
        "synthpre train --settings {params.settings:q} --stage pretrain "
        "--manifest {input.manifest} --out {output.model} > {log} 2>&1"


rule finetune:
    input:
        init=RESULTS + "/pretrain/{labeller}/model.pt",
        subsets=RESULTS + "/real/subsets.json",
    output:
        model=RESULTS + "/finetune/{labeller}/n{n}/s{seed}/model.pt",
    params:
        settings=lambda w: settings("elements", "model", "train", "finetune"),
    log:
        RESULTS + "/logs/finetune/{labeller}/n{n}/s{seed}.log",
    shell:
        "synthpre train --settings {params.settings:q} --stage finetune "
        "--real-dir $(dirname {input.subsets}) --n {wildcards.n} --seed {wildcards.seed} "
        "--init {input.init} --out {output.model} > {log} 2>&1"


rule scratch:
    input:
        subsets=RESULTS + "/real/subsets.json",
    output:
        model=RESULTS + "/scratch/n{n}/s{seed}/model.pt",
    params:
        settings=lambda w: settings("elements", "model", "train", "finetune"),
    log:
        RESULTS + "/logs/scratch/n{n}/s{seed}.log",
    shell:
        "synthpre train --settings {params.settings:q} --stage finetune "
        "--real-dir $(dirname {input.subsets}) --n {wildcards.n} --seed {wildcards.seed} "
        "--out {output.model} > {log} 2>&1"
