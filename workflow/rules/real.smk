# Real (DFT) data: a file on disk, a public data set fetched with load-atoms, or structures
# labelled here with GPAW (one job per batch, resumable per structure); then fixed test and
# validation splits (training subsets are drawn per job from the seed: adding one changes no
# other).

from synthpre.config_check import DFT_PREFIX, FETCH_PREFIX, count_frames

REAL_SOURCE = [config["real"]["source"]]
if REAL_SOURCE[0].startswith(FETCH_PREFIX):
    REAL_SOURCE = [f"{RESULTS}/real/fetched.extxyz"]
elif REAL_SOURCE[0].startswith(DFT_PREFIX):
    DFT_STRUCTURES = REAL_SOURCE[0].removeprefix(DFT_PREFIX)
    DFT_BATCH_SIZE = config["dft"]["batch_size"]
    DFT_BATCHES = range(-(-count_frames(DFT_STRUCTURES) // DFT_BATCH_SIZE))
    REAL_SOURCE = expand(f"{RESULTS}/dft/batch{{k}}.extxyz", k=DFT_BATCHES)


rule dft:
    input:
        DFT_STRUCTURES if config["real"]["source"].startswith(DFT_PREFIX) else [],
    output:
        f"{RESULTS}/dft/batch{{k}}.extxyz",
    params:
        settings=lambda w: settings("dft"),
        # not derived from `input`: Snakemake records no param that is
        content=lambda w: content(structures=config["real"]["source"].removeprefix(DFT_PREFIX)),
        cache=f"{RESULTS}/dft/cache",
    log:
        f"{RESULTS}/logs/dft/batch{{k}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/dft/batch{{k}}.tsv",
    conda:
        "../../envs/dft.yaml"
    shell:
        "synthpre dft --settings {params.settings:q} --structures {input:q} "
        "--batch {wildcards.k:q} --cache-dir {params.cache:q} --out {output:q} > {log:q} 2>&1"


rule fetch_real:
    output:
        f"{RESULTS}/real/fetched.extxyz",
    params:
        dataset=config["real"]["source"].removeprefix(FETCH_PREFIX),
        root=f"{RESULTS}/real/load-atoms",
    log:
        f"{RESULTS}/logs/fetch_real.log",
    conda:
        "../../envs/core.yaml"
    shell:
        "synthpre fetch-real --dataset {params.dataset:q} --root {params.root:q} "
        "--out {output:q} > {log:q} 2>&1"


rule real_data:
    input:
        REAL_SOURCE,
    output:
        test=f"{RESULTS}/real/test.h5",
        val=f"{RESULTS}/real/val.h5",
        pool=f"{RESULTS}/real/pool.h5",
        summary=f"{RESULTS}/real/summary.json",
    params:
        settings=lambda w: settings("real"),
        # a file given as real.source: its content (generated sources are Snakemake outputs)
        content=lambda w: content(source=config["real"]["source"]),
        out_dir=folder_of("summary"),
    log:
        f"{RESULTS}/logs/real_data.log",
    benchmark:
        f"{RESULTS}/benchmarks/real_data.tsv",
    conda:
        "../../envs/core.yaml"
    shell:
        "synthpre real-data --settings {params.settings:q} --source {input:q} "
        "--out-dir {params.out_dir:q} > {log:q} 2>&1"
