"""stability/curves.py: learning-curve points parsed, bad ones named."""
from __future__ import annotations

import pytest

from synthpre.stability.curves import parse_point


def test_points_parse_and_bad_ones_are_named():
    assert parse_point("pretrain/snap_c") == {"mode": "pretrain", "labeller": "snap_c",
                                              "pretrain_size": "all", "n": None, "seed": None}
    assert parse_point("finetune/lcbop/n25/s3") == {"mode": "finetune", "labeller": "lcbop",
                                                    "pretrain_size": "all", "n": 25, "seed": 3}
    assert parse_point("finetune/lcbop/k100/n25/s3")["pretrain_size"] == "100"
    assert parse_point("pretrain/lcbop/k100")["pretrain_size"] == "100"
    assert parse_point("scratch/n25/s3")["labeller"] == "none"
    for bad in ("scratch/lcbop/n1/s1", "pretrain/x/n1/s1", "finetune/n1/s1", None):
        with pytest.raises(ValueError, match="is not scratch/n<N>/s<seed>"):
            parse_point(bad)
