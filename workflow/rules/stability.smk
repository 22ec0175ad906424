# Stability: every learning-curve model and each pre-trained model in MD (NVT ramp, hold,
# NVE), from the same start cells as the teacher's own reference run; then one table and
# figure. A run that fails is a result in stability.json, never a failed job.

from synthpre.config_check import check_stability_config

STAB_STARTS = check_stability_config(config)  # file errors name the field before any job
# a start file of the study's own: its content is a param of the jobs that read it
STAB_OWN_STARTS = {} if STAB_STARTS in ("test", "teacher") else {"starts": STAB_STARTS}
if STAB_STARTS == "test":
    STAB_STARTS = f"{RESULTS}/real/test.h5"
elif STAB_STARTS == "teacher":
    STAB_STARTS = f"{RESULTS}/stability/starts.extxyz"
STAB_MODELS = stability_models()


wildcard_constraints:
    model_dir=points.MODEL_DIR,


# stability.starts.source "teacher": the start cells, melted and quenched by the teacher.
rule stability_starts:
    input:
        teacher_model=finetuned_teacher_file(SYN["teacher"]),
        potential=teacher_input(SYN["teacher"]),
    output:
        f"{RESULTS}/stability/starts.extxyz",
    params:
        settings=lambda w: settings("stability_starts"),
        content=lambda w: content(SYN["teacher"]),
        mpi=lambda w, resources: mpi_prefix(resources, SYN["teacher"]),  # as rule md
    log:
        f"{RESULTS}/logs/stability/starts.log",
    benchmark:
        f"{RESULTS}/benchmarks/stability/starts.tsv",
    conda:
        "../../envs/foundation.yaml"
    shell:
        "{params.mpi}synthpre stability-starts --settings {params.settings:q} --out {output:q} "
        "> {log:q} 2>&1"


rule stability_reference:
    input:
        starts=STAB_STARTS,
        test=f"{RESULTS}/real/test.h5",
        teacher_model=finetuned_teacher_file(SYN["teacher"]),
        potential=teacher_input(SYN["teacher"]),
    output:
        json=f"{RESULTS}/stability/reference/stability.json",
        frames=f"{RESULTS}/stability/reference/frames.extxyz",
    params:
        settings=lambda w: settings("stability"),
        content=lambda w: content(SYN["teacher"], **STAB_OWN_STARTS),
    log:
        f"{RESULTS}/logs/stability/reference.log",
    benchmark:
        f"{RESULTS}/benchmarks/stability/reference.tsv",
    conda:
        "../../envs/foundation.yaml"
    shell:
        "synthpre stability --settings {params.settings:q} --starts {input.starts:q} "
        "--test {input.test:q} --out {output.json:q} --frames {output.frames:q} > {log:q} 2>&1"


rule stability:
    input:
        model=f"{RESULTS}/{{model_dir}}/model.pt",
        starts=STAB_STARTS,
        reference=f"{RESULTS}/stability/reference/stability.json",
        metrics=stability_metrics,
        teacher_model=finetuned_teacher_file(SYN["teacher"]),
        potential=teacher_input(SYN["teacher"]),  # relabels the model's frames
    output:
        json=f"{RESULTS}/{{model_dir}}/stability.json",
        frames=f"{RESULTS}/{{model_dir}}/stability-frames.extxyz",
    params:
        settings=lambda w: settings("stability"),
        content=lambda w: content(SYN["teacher"], **STAB_OWN_STARTS),
    resources:
        run_options=RUN_OPTIONS["stability"],
    log:
        f"{RESULTS}/logs/stability/{{model_dir}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/stability/{{model_dir}}.tsv",
    conda:
        "../../envs/foundation.yaml"
    shell:
        "synthpre stability --settings {params.settings:q} --run-options {resources.run_options:q} "
        "--starts {input.starts:q} --model {input.model:q} --reference {input.reference:q} "
        "--metrics {input.metrics:q} "
        "--point {wildcards.model_dir:q} --out {output.json:q} --frames {output.frames:q} "
        "> {log:q} 2>&1"


rule stability_curves:
    input:
        results=expand(f"{RESULTS}/{{model_dir}}/stability.json", model_dir=STAB_MODELS),
        reference=f"{RESULTS}/stability/reference/stability.json",
    output:
        csv=report(f"{RESULTS}/curves/stability.csv", category="Stability",
                   caption="../report/stability_table.rst"),
        png=f"{RESULTS}/curves/stability.png",
        svg=report(f"{RESULTS}/curves/stability.svg", category="Stability",
                   caption="../report/stability.rst"),
    log:
        f"{RESULTS}/logs/stability_curves.log",
    benchmark:
        f"{RESULTS}/benchmarks/stability_curves.tsv",
    conda:
        "../../envs/core.yaml"
    shell:
        "synthpre stability-curves --results {input.results:q} --reference {input.reference:q} "
        "--out-csv {output.csv:q} --out-figure {output.png:q} {output.svg:q} > {log:q} 2>&1"
