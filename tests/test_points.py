"""The result-path grammar (synthpre.points): what the rule files build, their wildcard
constraints accept, and the jobs parse back, in one place."""
import re

import pytest

from synthpre import points
from synthpre.evaluate import point_record
from synthpre.stability.curves import place

FAMILIES = [points.family(lab, size) for lab in ("snap_c", "gap-17.v2") for size in ("all", 100)]


def test_families_name_their_labeller_and_size():
    assert FAMILIES == ["snap_c", "snap_c/k100", "gap-17.v2", "gap-17.v2/k100"]
    assert [points.family_labeller(f) for f in FAMILIES] == ["snap_c"] * 2 + ["gap-17.v2"] * 2
    assert [points.family_size(f) for f in FAMILIES] == [None, "100", None, "100"]
    assert all(re.fullmatch(points.FAMILY, f) for f in FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_folder_a_study_builds_parses_back(family):
    labeller, size = points.family_labeller(family), points.family_size(family) or "all"
    for mode in points.FINETUNE_MODES:
        folder = points.point(mode, 25, 3, family)
        assert re.fullmatch(points.POINT, folder) and re.fullmatch(points.MODEL_DIR, folder)
        assert points.parse(folder) == points.Place(mode, labeller, size, 25, 3)
    pretrained = points.pretrained_point(family, 2)
    assert points.parse(pretrained) == points.Place("pretrained", labeller, size, 0, 2)
    pretrain = points.pretrain_dir(family)
    assert re.fullmatch(points.MODEL_DIR, pretrain)
    assert points.parse(pretrain) == points.Place("pretrain", labeller, size, None, None)
    assert points.parse(pretrain).family == points.parse(pretrained).family == family
    # rule evaluate (POINT) and rule stability (MODEL_DIR) must not claim the n=0 point, which
    # rule evaluate_pretrained makes; rule evaluate must not claim a pre-trained model
    assert not re.fullmatch(points.POINT, pretrained)
    assert not re.fullmatch(points.MODEL_DIR, pretrained)
    assert not re.fullmatch(points.POINT, pretrain)


def test_scratch():
    folder = points.point("scratch", 10, 1)
    assert folder == "scratch/n10/s1" and re.fullmatch(points.POINT, folder)
    assert points.parse(folder) == points.Place("scratch", "none", "none", 10, 1)


@pytest.mark.parametrize("bad", ["scratch/snap_c/n1/s1", "pretrain/x/n1/s1", "finetune/n1/s1",
                                 "finetune/snap_c/n0/s1", "pretrained/snap_c/n5/s1",
                                 "scratch/n0/s1", "tune/snap_c/n1/s1", "finetune/_x/n1/s1",
                                 "finetune/snap_c/k/n1/s1", "", None])
def test_a_bad_folder_is_named(bad):
    with pytest.raises(ValueError, match=rf"point '{bad}' is not scratch/n<N>/s<seed>"):
        points.parse(bad)
    assert not re.fullmatch(points.MODEL_DIR, bad or "")


def test_the_jobs_record_the_fields_they_always_recorded():
    # metrics.json (evaluate) and the stability table keep their columns
    assert point_record("finetune/snap_c/k100/n25/s3") == {"mode": "finetune",
                                                           "labeller": "snap_c", "n": 25,
                                                           "seed": 3}
    assert point_record("pretrained/snap_c/n0/s1")["n"] == 0
    assert place("pretrain/snap_c") == {"mode": "pretrain", "labeller": "snap_c",
                                        "pretrain_size": "all", "n": None, "seed": None}
    assert place("replay/lcbop/k100/n25/s3")["pretrain_size"] == "100"
    with pytest.raises(ValueError, match="evaluated as its pretrained/"):
        point_record("pretrain/snap_c")
    with pytest.raises(ValueError, match="as pretrain/<labeller>"):
        place("pretrained/snap_c/n0/s1")
