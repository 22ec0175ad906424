"""Where each trained model lives: one grammar for the result folders of a study, used by the
rule files (targets and wildcard constraints, workflow/rules/common.smk) and by the jobs that
read a model's place back (evaluate, stability and its curves). A new folder scheme is an edit
here, not in every rule file.

    pretrain/<family>                  a pre-trained model
    pretrained/<family>/n0/s<seed>     the same model as fine-tuning starts it (the n=0 point)
    <mode>/<family>/n<n>/s<seed>       fine-tuned in mode finetune, replay or frozen
    scratch/n<n>/s<seed>               trained on the real data only

where a family is `<labeller>` (pre-trained on all its synthetic structures) or
`<labeller>/k<size>` (on the first <size> of them, pretrain.sizes). Kept free of heavy
imports: Snakemake imports it while it parses the workflow."""
from __future__ import annotations

import re
from dataclasses import dataclass

FINETUNE_MODES = ("finetune", "replay", "frozen")

# Regular expressions for Snakemake's wildcard constraints (no named groups).
NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"  # a teacher or labeller: the config schema's pattern
FAMILY = rf"{NAME}(?:/k[0-9]+)?"
POINT = rf"(?:scratch|(?:{'|'.join(FINETUNE_MODES)})/{FAMILY})/n[1-9][0-9]*/s[0-9]+"  # n > 0
MODEL_DIR = rf"{POINT}|pretrain/{FAMILY}"  # every model the stability MD runs

_PARSE = re.compile(rf"(?P<mode>scratch|pretrained|pretrain|{'|'.join(FINETUNE_MODES)})"
                    rf"(?:/(?P<labeller>{NAME})(?:/k(?P<k>[0-9]+))?)?"
                    r"(?:/n(?P<n>[0-9]+)/s(?P<seed>[0-9]+))?")


def family(labeller: str, size: int | str) -> str:
    """The pre-trained model on `size` synthetic structures of `labeller` ("all": every one)."""
    return labeller if size == "all" else f"{labeller}/k{size}"


def family_labeller(family: str) -> str:
    """The labeller whose shards a family was pre-trained on."""
    return family.partition("/")[0]


def family_size(family: str) -> str | None:
    """The number of synthetic structures a family was pre-trained on; None for all of them."""
    size = family.partition("/")[2]
    return size.removeprefix("k") if size else None


def point(mode: str, n: int, seed: int, family: str | None = None) -> str:
    """A learning-curve point's folder: scratch/n<n>/s<seed> or <mode>/<family>/n<n>/s<seed>."""
    return f"scratch/n{n}/s{seed}" if mode == "scratch" else f"{mode}/{family}/n{n}/s{seed}"


def pretrained_point(family: str, seed: int) -> str:
    return f"pretrained/{family}/n0/s{seed}"


def pretrain_dir(family: str) -> str:
    return f"pretrain/{family}"


@dataclass(frozen=True)
class Place:
    """A model's place in the study, read back from its folder."""

    mode: str  # scratch, pretrained, pretrain, or a fine-tuning mode
    labeller: str  # "none" for scratch
    pretrain_size: str  # "<size>", "all", or "none" for scratch
    n: int | None  # None for a pre-trained model (pretrain/...)
    seed: int | None

    @property
    def family(self) -> str:
        """The pre-trained model this place belongs to or started from (not for scratch)."""
        return family(self.labeller, self.pretrain_size)


def parse(text: str) -> Place:
    """The place of a folder of the grammar above; a ValueError names what is not."""
    match = _PARSE.fullmatch(text or "")
    if (match is None
            or (match["mode"] == "scratch") != (match["labeller"] is None)
            or (match["mode"] == "pretrain") != (match["n"] is None)
            or (match["n"] is not None
                and (match["mode"] == "pretrained") != (int(match["n"]) == 0))):
        raise ValueError(f"point '{text}' is not scratch/n<N>/s<seed>, "
                         f"<{'|'.join(FINETUNE_MODES)}>/<labeller>[/k<size>]/n<N>/s<seed> "
                         f"with N > 0, pretrained/<labeller>[/k<size>]/n0/s<seed> or "
                         f"pretrain/<labeller>[/k<size>]")
    return Place(mode=match["mode"], labeller=match["labeller"] or "none",
                 pretrain_size=match["k"] or ("all" if match["labeller"] else "none"),
                 n=None if match["n"] is None else int(match["n"]),
                 seed=None if match["seed"] is None else int(match["seed"]))
