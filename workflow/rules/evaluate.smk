# Evaluation of every learning-curve point on the fixed real test set, the curves, and the
# tables and figures of the Snakemake report.

wildcard_constraints:
    point=r"(scratch|(finetune|replay|frozen)/[A-Za-z0-9_.-]+(/k[0-9]+)?)/n[0-9]+/s[0-9]+",


def forgetting_inputs(w):
    """A fine-tuned point is also measured on its labeller's synthetic validation set, beside
    the pre-trained model it started from; scratch has no synthetic data of its own."""
    mode, rest = w.point.split("/", 1)
    if mode == "scratch":
        return {}
    pre = rest.rsplit("/n", 1)[0]
    return {"init": RESULTS + f"/pretrain/{pre}/model.pt",
            "synthetic_val": RESULTS + f"/shards/{pre.split('/')[0]}/manifest.json"}


def forgetting_args(w, input):
    if "init" not in input.keys():
        return ""
    return (f"--init {shlex.quote(input.init)} "
            f"--synthetic-val {shlex.quote(input.synthetic_val)}")


rule evaluate:
    input:
        unpack(forgetting_inputs),
        model=RESULTS + "/{point}/model.pt",
        test=RESULTS + "/real/test.h5",
        val=RESULTS + "/real/val.h5",
    output:
        metrics=RESULTS + "/{point}/metrics.json",
        parity=RESULTS + "/{point}/parity.npz",
    params:
        forgetting=forgetting_args,
    log:
        RESULTS + "/logs/evaluate/{point}.log",
    shell:
        "synthpre evaluate --model {input.model:q} --test {input.test:q} --val {input.val:q} "
        "--point {wildcards.point} {params.forgetting} --out {output.metrics:q} "
        "--parity {output.parity:q} > {log:q} 2>&1"


rule aggregate:
    input:
        metrics=expand(RESULTS + "/{point}/metrics.json", point=curve_points()),
        parity=expand(RESULTS + "/{point}/parity.npz", point=curve_points()),
        manifests=expand(RESULTS + "/shards/{labeller}/manifest.json", labeller=LABELLERS),
        real=RESULTS + "/real/summary.json",
        md=expand(RESULTS + "/md/" + SYN["teacher"] + "/{job}/md.json", job=JOBS),
    output:
        csv=report(RESULTS + "/curves/learning_curve.csv", category="Learning curves",
                   caption="../report/learning_curve_table.rst"),
        png=RESULTS + "/curves/learning_curve.png",
        svg=report(RESULTS + "/curves/learning_curve.svg", category="Learning curves",
                   caption="../report/learning_curve.rst"),
        sizes=report(RESULTS + "/curves/synthetic_size.png", category="Learning curves",
                     caption="../report/synthetic_size.rst"),
        forgetting=report(RESULTS + "/curves/forgetting.png", category="Learning curves",
                          caption="../report/forgetting.rst"),
        parity=report(RESULTS + "/curves/parity.png", category="Parity",
                      caption="../report/parity.rst"),
        datasets=report(RESULTS + "/curves/datasets.csv", category="Data sets",
                        caption="../report/datasets.rst"),
        wall=report(RESULTS + "/curves/wall_times.csv", category="Wall times",
                    caption="../report/wall_times.rst"),
    params:
        out_dir=RESULTS + "/curves",
    log:
        RESULTS + "/logs/aggregate.log",
    shell:
        "synthpre aggregate --metrics {input.metrics:q} --parity {input.parity:q} "
        "--manifests {input.manifests:q} --real-summary {input.real:q} --md-status {input.md:q} "
        "--out-dir {params.out_dir:q} > {log:q} 2>&1"
