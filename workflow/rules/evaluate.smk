# Evaluation of every learning-curve point on the fixed real test set, the curves, and the
# tables and figures of the Snakemake report.

wildcard_constraints:
    point=points.POINT,


rule evaluate:
    input:
        unpack(forgetting_inputs),
        model=f"{RESULTS}/{{point}}/model.pt",
        test=f"{RESULTS}/real/test.h5",
        val=f"{RESULTS}/real/val.h5",
    output:
        metrics=f"{RESULTS}/{{point}}/metrics.json",
        parity=f"{RESULTS}/{{point}}/parity.npz",
    params:
        forgetting=forgetting_args,
    log:
        f"{RESULTS}/logs/evaluate/{{point}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{point}}.tsv",
    conda:
        "../../envs/core.yaml"
    shell:
        "synthpre evaluate --model {input.model:q} --test {input.test:q} --val {input.val:q} "
        "--point {wildcards.point:q} {params.forgetting} --out {output.metrics:q} "
        "--parity {output.parity:q} > {log:q} 2>&1"


rule evaluate_pretrained:
    input:
        model=f"{RESULTS}/pretrain/{{pre}}/model.pt",
        test=f"{RESULTS}/real/test.h5",
        val=f"{RESULTS}/real/val.h5",
        pool=f"{RESULTS}/real/pool.h5",
    output:
        metrics=f"{RESULTS}/pretrained/{{pre}}/n0/s{{seed}}/metrics.json",
        parity=f"{RESULTS}/pretrained/{{pre}}/n0/s{{seed}}/parity.npz",
    wildcard_constraints:
        seed=r"[0-9]+",
    params:
        extra=shift_fit_args,
        point=lambda w: points.pretrained_point(w.pre, w.seed),
        real_dir=folder_of("pool"),
    log:
        f"{RESULTS}/logs/evaluate/pretrained/{{pre}}/n0/s{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/pretrained/{{pre}}/n0/s{{seed}}.tsv",
    conda:
        "../../envs/core.yaml"
    shell:
        "synthpre evaluate --model {input.model:q} --test {input.test:q} --val {input.val:q} "
        "--point {params.point:q} {params.extra} "
        "--real-dir {params.real_dir:q} --out {output.metrics:q} --parity {output.parity:q} "
        "> {log:q} 2>&1"


rule aggregate:
    input:
        metrics=expand(f"{RESULTS}/{{point}}/metrics.json",
                       point=curve_points() + pretrained_points()),
        parity=expand(f"{RESULTS}/{{point}}/parity.npz",
                      point=curve_points() + pretrained_points()),
        manifests=expand(f"{RESULTS}/shards/{{labeller}}/manifest.json", labeller=LABELLERS),
        real=f"{RESULTS}/real/summary.json",
        md=expand(f"{RESULTS}/md/{{folder}}/{{job}}/md.json", folder=MD_FOLDERS, job=JOBS),
    output:
        csv=report(f"{RESULTS}/curves/learning_curve.csv", category="Learning curves",
                   caption="../report/learning_curve_table.rst"),
        png=f"{RESULTS}/curves/learning_curve.png",
        svg=report(f"{RESULTS}/curves/learning_curve.svg", category="Learning curves",
                   caption="../report/learning_curve.rst"),
        sizes=report(f"{RESULTS}/curves/synthetic_size.png", category="Learning curves",
                     caption="../report/synthetic_size.rst"),
        forgetting=report(f"{RESULTS}/curves/forgetting.png", category="Learning curves",
                          caption="../report/forgetting.rst"),
        parity=report(f"{RESULTS}/curves/parity.png", category="Parity",
                      caption="../report/parity.rst"),
        datasets=report(f"{RESULTS}/curves/datasets.csv", category="Data sets",
                        caption="../report/datasets.rst"),
        wall=report(f"{RESULTS}/curves/wall_times.csv", category="Wall times",
                    caption="../report/wall_times.rst"),
    params:
        out_dir=folder_of("csv"),
    log:
        f"{RESULTS}/logs/aggregate.log",
    benchmark:
        f"{RESULTS}/benchmarks/aggregate.tsv",
    conda:
        "../../envs/core.yaml"
    shell:
        "synthpre aggregate --metrics {input.metrics:q} --parity {input.parity:q} "
        "--manifests {input.manifests:q} --real-summary {input.real:q} --md-status {input.md:q} "
        "--out-dir {params.out_dir:q} > {log:q} 2>&1"
