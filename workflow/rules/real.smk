# Real (DFT) data: a file on disk or a public data set fetched with load-atoms, then fixed
# test and validation splits and nested training subsets per seed.

from synthpre.config_check import FETCH_PREFIX

REAL_SOURCE = config["real"]["source"]
if REAL_SOURCE.startswith(FETCH_PREFIX):
    REAL_SOURCE = RESULTS + "/real/fetched.extxyz"


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
