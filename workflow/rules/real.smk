# Real (DFT) data: a file on disk, a public data set fetched with load-atoms, or structures
# labelled here with GPAW (one job per batch, resumable per structure); then fixed test and
# validation splits (training subsets are drawn per job from the seed: adding one changes no
# other).

from synthpre.config_check import DFT_PREFIX, FETCH_PREFIX, count_frames

REAL_SOURCE = [config["real"]["source"]]
if REAL_SOURCE[0].startswith(FETCH_PREFIX):
    REAL_SOURCE = [RESULTS + "/real/fetched.extxyz"]
elif REAL_SOURCE[0].startswith(DFT_PREFIX):
    DFT_STRUCTURES = REAL_SOURCE[0].removeprefix(DFT_PREFIX)
    DFT_BATCH_SIZE = config["dft"]["batch_size"]
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
    benchmark:
        RESULTS + "/benchmarks/dft/batch{k}.tsv",
    shell:
        "synthpre dft --settings {params.settings:q} --structures {input:q} "
        "--batch {wildcards.k} --cache-dir {params.cache:q} --out {output:q} > {log:q} 2>&1"


rule fetch_real:
    output:
        RESULTS + "/real/fetched.extxyz",
    params:
        dataset=config["real"]["source"].removeprefix(FETCH_PREFIX),
        root=RESULTS + "/real/load-atoms",
    log:
        RESULTS + "/logs/fetch_real.log",
    shell:
        "synthpre fetch --dataset {params.dataset:q} --root {params.root:q} "
        "--out {output:q} > {log:q} 2>&1"


rule real_data:
    input:
        REAL_SOURCE,
    output:
        test=RESULTS + "/real/test.h5",
        val=RESULTS + "/real/val.h5",
        pool=RESULTS + "/real/pool.h5",
        summary=RESULTS + "/real/summary.json",
    params:
        settings=lambda w: settings("real"),
        out_dir=RESULTS + "/real",
    log:
        RESULTS + "/logs/real_data.log",
    shell:
        "synthpre real --settings {params.settings:q} --source {input:q} "
        "--out-dir {params.out_dir:q} > {log:q} 2>&1"
