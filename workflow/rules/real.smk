# Real (DFT) data: a file on disk, a public data set fetched with load-atoms, or structures
# labelled here with GPAW (one job per batch, resumable per structure); then fixed test and
# validation splits and nested training subsets per seed.

from synthpre.config_check import DFT_PREFIX, FETCH_PREFIX, count_frames

REAL_SOURCE = [config["real"]["source"]]
if REAL_SOURCE[0].startswith(FETCH_PREFIX):
    REAL_SOURCE = [RESULTS + "/real/fetched.extxyz"]
elif REAL_SOURCE[0].startswith(DFT_PREFIX):
    DFT_STRUCTURES = REAL_SOURCE[0].removeprefix(DFT_PREFIX)
    DFT_BATCH_SIZE = config.get("dft", {}).get("batch_size", 20)
    DFT_BATCHES = range(-(-count_frames(DFT_STRUCTURES) // DFT_BATCH_SIZE))
    REAL_SOURCE = expand(RESULTS + "/dft/batch{k}.extxyz", k=DFT_BATCHES)


rule dft:
    input:
        DFT_STRUCTURES if config["real"]["source"].startswith(DFT_PREFIX) else [],
    output:
        RESULTS + "/dft/batch{k}.extxyz",
    params:
        settings=lambda w: settings("dft"),
        cache=RESULTS + "/dft/cache",
    log:
        RESULTS + "/logs/dft/batch{k}.log",
    shell:
        "synthpre dft --settings {params.settings:q} --structures {input} --batch {wildcards.k} "
        "--cache-dir {params.cache} --out {output} > {log} 2>&1"


rule fetch_real:
    output:
        RESULTS + "/real/fetched.extxyz",
    params:
        dataset=config["real"]["source"].removeprefix(FETCH_PREFIX),
    log:
        RESULTS + "/logs/fetch_real.log",
    shell:
        "synthpre fetch --dataset {params.dataset:q} --root $(dirname {output})/load-atoms "
        "--out {output} > {log} 2>&1"


rule real_data:
    input:
        REAL_SOURCE,
    output:
        test=RESULTS + "/real/test.h5",
        val=RESULTS + "/real/val.h5",
        pool=RESULTS + "/real/pool.h5",
        subsets=RESULTS + "/real/subsets.json",
    params:
        settings=lambda w: settings("real", "elements", "finetune"),
    log:
        RESULTS + "/logs/real_data.log",
    shell:
        "synthpre real --settings {params.settings:q} --source {input} "
        "--out-dir $(dirname {output.subsets}) > {log} 2>&1"
