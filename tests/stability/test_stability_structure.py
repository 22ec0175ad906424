"""stability/structure.py: coordination and RDF on known crystals."""
from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.lattice.hexagonal import Graphite

from synthpre.stability.structure import coordination_fractions, rdf, rdf_distance


def test_coordination_diamond_is_sp3_graphite_is_sp2():
    diamond = bulk("C", "diamond", a=3.567).repeat(2)
    graphite = Graphite(symbol="C", latticeconstant={"a": 2.46, "c": 6.70}, size=(2, 2, 1))
    assert coordination_fractions([diamond], 1.85) == {"sp": 0, "sp2": 0, "sp3": 1.0, "other": 0}
    assert coordination_fractions([graphite], 1.85) == {"sp": 0, "sp2": 1.0, "sp3": 0, "other": 0}


def test_rdf_of_diamond_integrates_to_four_neighbours():
    diamond = bulk("C", "diamond", a=3.567, cubic=True)
    r, g = rdf([diamond], 4.0, 400)
    dr = r[1] - r[0]
    shells = 4 / 3 * np.pi * ((r + dr / 2) ** 3 - (r - dr / 2) ** 3)
    density = len(diamond) / diamond.get_volume()
    first_shell = r < 1.85
    assert np.sum(shells[first_shell] * density * g[first_shell]) == pytest.approx(4.0, rel=1e-9)
    assert r[np.nonzero(g)[0][0]] == pytest.approx(3.567 * np.sqrt(3) / 4, abs=dr)
    assert rdf_distance(g, g) == 0.0
    _, g_graphite = rdf([Graphite(symbol="C", latticeconstant={"a": 2.46, "c": 6.70})], 4.0, 400)
    assert rdf_distance(g, g_graphite) > 1.0


def test_coordination_is_counted_per_element_pair_and_named_sp_only_for_carbon():
    from synthpre.stability.structure import (coordination_by_pair, coordination_fractions,
                                             pair_thresholds)

    silicon = bulk("Si", "diamond", a=5.43, cubic=True)
    cut = pair_thresholds(["Si"], "auto", 1.25)
    assert coordination_fractions([silicon], cut) == {"Si:4": 1.0}
    assert coordination_by_pair([silicon], cut) == {"Si-Si": 4.0}
    sic = bulk("SiC", "zincblende", a=4.36, cubic=True)
    cut = pair_thresholds(["C", "Si"], "auto", 1.25)
    assert coordination_by_pair([sic], cut) == {"C-C": 0.0, "C-Si": 4.0, "Si-C": 4.0,
                                                "Si-Si": 0.0}
    assert coordination_fractions([sic], cut) == {"C:4": 1.0, "Si:4": 1.0}
    diamond = bulk("C", "diamond", a=3.567)
    assert coordination_fractions([diamond], pair_thresholds(["C"], "auto", 1.25))["sp3"] == 1.0
