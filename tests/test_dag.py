"""The README's DAG command: `snakemake --rulegraph | synthpre dag > dag.svg` draws the rule
graph without Graphviz; every rule is a box, every edge points from producer down to consumer."""
from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from synthpre.dag import layout, parse_dot, render_svg

from snakemake_run import REPO, SNAKEMAKE, write_override

SVG = "{http://www.w3.org/2000/svg}"
RULES = {"all", "md", "label", "shard", "real_data", "pretrain", "finetune", "scratch",
         "evaluate", "evaluate_pretrained", "aggregate", "stability_reference", "stability",
         "stability_curves"}


@pytest.fixture(scope="module")
def rulegraph_dot(tmp_path_factory) -> str:
    """`snakemake --rulegraph` of the tiny config, as the README runs it."""
    workdir = tmp_path_factory.mktemp("dag")
    write_override(workdir, REPO / "data" / "demo" / "carbon-dft.extxyz")
    proc = subprocess.run(
        [*SNAKEMAKE, "--directory", str(workdir), "--rulegraph", "--configfile",
         str(REPO / "configs" / "tiny.yaml"),
         str(workdir / "override.yaml")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_the_cli_draws_every_rule_and_edge_of_the_workflow(rulegraph_dot, tmp_path):
    out = tmp_path / "dag.svg"
    subprocess.run([sys.executable, "-m", "synthpre", "dag", "--out", str(out)],
                   input=rulegraph_dot, text=True, check=True)
    root = ET.fromstring(out.read_text())
    assert root.tag == f"{SVG}svg" and float(root.get("width")) > 100
    names = {t.text for t in root.iter(f"{SVG}text")}
    assert names == RULES
    graph = parse_dot(rulegraph_dot)
    assert len(graph.edges) >= 20
    assert len(list(root.iter(f"{SVG}path"))) == len(graph.edges) + 1  # + the arrow marker


def test_edges_point_down_and_boxes_do_not_overlap(rulegraph_dot):
    graph = parse_dot(rulegraph_dot)
    pos, chains, width, height = layout(graph)
    by_name = {label: pos[n] for n, label in graph.labels.items()}
    for chain in chains:
        ys = [pos[n][1] for n in chain]
        assert all(b > a for a, b in zip(ys, ys[1:])), chain
    assert by_name["md"][1] < by_name["label"][1] < by_name["shard"][1] < by_name["pretrain"][1]
    assert by_name["all"][1] == max(y for _, y, _ in pos.values())
    boxes = sorted(pos.values(), key=lambda p: (p[1], p[0]))
    for (x1, y1, w1), (x2, y2, w2) in zip(boxes, boxes[1:]):
        if y1 == y2:
            assert x1 + w1 / 2 < x2 - w2 / 2
    assert all(0 < x - w / 2 and x + w / 2 < width and 0 < y < height for x, y, w in pos.values())


def test_readme_command_works_without_graphviz(tmp_path):
    """The README's pipe, with the venv's scripts first on PATH and no Graphviz `dot`."""
    bin_dir = Path(sys.executable).parent
    path = [str(bin_dir)] + [d for d in os.environ["PATH"].split(os.pathsep)
                             if d and not (Path(d) / "dot").exists()]
    write_override(tmp_path, REPO / "data" / "demo" / "carbon-dft.extxyz")
    configs = " ".join(str(p) for p in (REPO / "configs" / "tiny.yaml",
                                        tmp_path / "override.yaml"))
    command = (f"set -o pipefail; snakemake --snakefile {REPO}/Snakefile --rulegraph "
               f"--configfile {configs} | synthpre dag > dag.svg")
    proc = subprocess.run(["/bin/bash", "-c", command], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600,
                          env={**os.environ, "PATH": os.pathsep.join(path),
                               "PYTHONPATH": str(REPO / "src")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = {t.text for t in ET.parse(tmp_path / "dag.svg").getroot().iter(f"{SVG}text")}
    assert names == RULES


def test_bad_input_fails_naming_the_problem():
    with pytest.raises(ValueError, match="no rules"):
        parse_dot("digraph snakemake_dag {\n}\n")
    with pytest.raises(ValueError, match="do not define|does not define"):
        parse_dot('digraph {\n\t0[label = "a", color = "0.1 0.6 0.85"];\n\t1 -> 0\n}')
    cyclic = parse_dot('digraph {\n\t0[label = "a"];\n\t1[label = "b"];\n\t0 -> 1\n\t1 -> 0\n}')
    with pytest.raises(ValueError, match="cycle"):
        render_svg(cyclic)


def test_every_rule_that_computes_writes_a_benchmark(tmp_path):
    """`benchmark:` on every rule that computes: its wall time, memory and CPU time in
    results/<run>/benchmarks/ (all but `all` and the download fetch_real)."""
    write_override(tmp_path, REPO / "data" / "demo" / "carbon-dft.extxyz")
    proc = subprocess.run(
        [*SNAKEMAKE, "--directory", str(tmp_path), "-n", "--configfile",
         str(REPO / "configs" / "tiny.yaml"), str(tmp_path / "override.yaml")],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    without = set()
    for job in proc.stdout.split("\nrule ")[1:]:
        rule = job.split(":", 1)[0].strip()
        if "benchmark: results/tiny/benchmarks/" not in job:
            without.add(rule)
    assert without == {"all"}


def test_a_job_killed_by_a_signal_says_so_in_its_log(tmp_path):
    """SIGTERM from outside (a time limit, scancel): the log names the signal and the job
    still dies of it (exit status -15 here, 143 in a shell), so Snakemake sees a failure."""
    import signal
    import time

    code = ("import sys, time; from synthpre.cli import log_kill_signals; "
            "log_kill_signals('md'); print('ready', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGTERM
    assert "synthpre md: killed by signal SIGTERM after" in err
