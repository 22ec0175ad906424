# Training: pre-train on each labeller's shards, then for each n and seed fine-tune the
# pre-trained model (in each mode of finetune.modes) and, as the baseline, train the same
# model from scratch. Each job gets
# only its own recipe (synthpre.job_settings.train), never the lists of sizes and seeds.
import shlex


def data_parallel(resources):
    """Several GPUs for one job: one torchrun rank per GPU (synthpre joins the ranks)."""
    gpus = int(getattr(resources, "gpu", 0) or 0)
    return f"torchrun --standalone --nproc_per_node={gpus} " if gpus > 1 else ""


REAL_DATA = {"pool": RESULTS + "/real/pool.h5", "val": RESULTS + "/real/val.h5"}

# A pre-trained model's folder: <labeller> (all synthetic structures) or <labeller>/k<size>.
wildcard_constraints:
    pre=r"[A-Za-z0-9_.-]+(/k[0-9]+)?",


def pretrain_size(pre):
    """'--n-pretrain K' for a <labeller>/k<K> model, nothing for all structures."""
    return f"--n-pretrain {pre.split('/k')[1]}" if "/k" in pre else ""


rule pretrain:
    input:
        manifest=lambda w: RESULTS + f"/shards/{w.pre.split('/')[0]}/manifest.json",
    output:
        model=RESULTS + "/pretrain/{pre}/model.pt",
    params:
        settings=lambda w: settings("train", "pretrain"),
        size=lambda w: pretrain_size(w.pre),
        launch=lambda w, resources: data_parallel(resources),
    log:
        RESULTS + "/logs/pretrain/{pre}.log",
    benchmark:
        RESULTS + "/benchmarks/pretrain/{pre}.tsv",
    shell:
        '{params.launch}"$(command -v synthpre)" train --settings {params.settings:q} '
        "--stage pretrain --manifest {input.manifest:q} {params.size} --out {output.model:q} "
        "> {log:q} 2>&1"


rule finetune:
    input:
        init=RESULTS + "/pretrain/{pre}/model.pt",
        **REAL_DATA,
    output:
        model=RESULTS + "/finetune/{pre}/n{n}/s{seed}/model.pt",
    params:
        settings=lambda w: settings("train", "finetune"),
        real_dir=RESULTS + "/real",
        extra="",
    log:
        RESULTS + "/logs/finetune/{pre}/n{n}/s{seed}.log",
    benchmark:
        RESULTS + "/benchmarks/finetune/{pre}/n{n}/s{seed}.tsv",
    shell:
        "synthpre train --settings {params.settings:q} --stage {rule} "
        "--real-dir {params.real_dir:q} --n {wildcards.n} --seed {wildcards.seed} "
        "--init {input.init:q} {params.extra} --out {output.model:q} > {log:q} 2>&1"


# The other fine-tuning modes (finetune.modes): the same job, its own recipe and curve.
# Replay mixes in the synthetic frames the model was pre-trained on (its labeller's shards).
use rule finetune as replay with:
    input:
        init=RESULTS + "/pretrain/{pre}/model.pt",
        manifest=lambda w: RESULTS + f"/shards/{w.pre.split('/')[0]}/manifest.json",
        **REAL_DATA,
    output:
        model=RESULTS + "/replay/{pre}/n{n}/s{seed}/model.pt",
    params:
        settings=lambda w: settings("train", "replay"),
        real_dir=RESULTS + "/real",
        extra=lambda w, input: f"--manifest {shlex.quote(input.manifest)}",
    log:
        RESULTS + "/logs/replay/{pre}/n{n}/s{seed}.log",
    benchmark:
        RESULTS + "/benchmarks/replay/{pre}/n{n}/s{seed}.tsv",


use rule finetune as frozen with:
    output:
        model=RESULTS + "/frozen/{pre}/n{n}/s{seed}/model.pt",
    params:
        settings=lambda w: settings("train", "frozen"),
        real_dir=RESULTS + "/real",
        extra="",
    log:
        RESULTS + "/logs/frozen/{pre}/n{n}/s{seed}.log",
    benchmark:
        RESULTS + "/benchmarks/frozen/{pre}/n{n}/s{seed}.tsv",


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
