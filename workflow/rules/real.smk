# Real (DFT) data: fixed test and validation splits and nested training subsets per seed.


rule real_data:
    input:
        config["real"]["path"],
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
        "synthpre real --settings {params.settings:q} --out-dir $(dirname {output.subsets}) "
        "> {log} 2>&1"
