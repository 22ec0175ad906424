# Evaluation of every learning-curve point on the fixed real test set, and the curves.

wildcard_constraints:
    point=r"(scratch|finetune/[A-Za-z0-9_.-]+)/n[0-9]+/s[0-9]+",


rule evaluate:
    input:
        model=RESULTS + "/{point}/model.pt",
        test=RESULTS + "/real/test.h5",
        val=RESULTS + "/real/val.h5",
    output:
        RESULTS + "/{point}/metrics.json",
    log:
        RESULTS + "/logs/evaluate/{point}.log",
    shell:
        "synthpre evaluate --model {input.model} --test {input.test} --val {input.val} "
        "--point {wildcards.point} --out {output} > {log} 2>&1"


rule aggregate:
    input:
        expand(RESULTS + "/{point}/metrics.json", point=curve_points()),
    output:
        csv=report(RESULTS + "/curves/learning_curve.csv", caption="../report/learning_curve_table.rst",
                   category="Learning curves"),
        png=RESULTS + "/curves/learning_curve.png",
        svg=report(RESULTS + "/curves/learning_curve.svg", caption="../report/learning_curve.rst",
                   category="Learning curves"),
    log:
        RESULTS + "/logs/aggregate.log",
    shell:
        "synthpre aggregate --metrics {input} --out-dir $(dirname {output.csv}) > {log} 2>&1"
