"""Labelling, shards and real data: exact round trips, trajectory splits, nested subsets."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import QUICK_PROTOCOL
from defaults import protocol

from synthpre.frames import read_frames, to_record, write_frames
from synthpre.label import label_frames
from synthpre.lammps_system import isolated_atom_energy, single_point
from synthpre.md import run_trajectory
from synthpre.real_data import ingest, training_subset
from synthpre.shard import build_shards, shard_paths
from synthpre.shard_files import read_shard, sha256, write_shard
from synthpre.teachers import get_teacher


@pytest.fixture(scope="module")
def md_frames():
    frames = []
    for k in range(3):
        result = run_trajectory(get_teacher("tersoff"), {"C": 16}, 2.4, 3000,
                                protocol(**QUICK_PROTOCOL), seed=k, traj_id=f"t{k}", min_distance=1.0)
        frames += result.frames
    return frames


def test_labels_equal_fresh_single_point_relative_to_e0(md_frames, tmp_path):
    snap = get_teacher("snap_c")
    labelled = label_frames(md_frames[:3], snap)
    e0 = isolated_atom_energy("C", snap)
    write_frames(tmp_path / "l.extxyz", labelled)
    back = read_frames(tmp_path / "l.extxyz")
    for frame, original in zip(back, md_frames[:3]):
        energy, forces = single_point(original, snap)
        assert frame.info["energy"] == pytest.approx(energy - 16 * e0, abs=1e-8)
        np.testing.assert_allclose(frame.arrays["forces"], forces, atol=1e-8)
        assert frame.info["labeller"] == "snap_c" and frame.info["e0_C"] == pytest.approx(e0)
        assert frame.info["traj_id"] == original.info["traj_id"]


def test_shard_round_trips_exactly(md_frames, tmp_path):
    labelled = label_frames(md_frames, get_teacher("tersoff"))
    records = [to_record(a, "mem", i) for i, a in enumerate(labelled)]
    records[0]["config_type"] = "liquid"
    write_shard(tmp_path / "s.h5", records)
    back = read_shard(tmp_path / "s.h5")
    assert len(back) == len(records)
    for a, b in zip(records, back):
        assert set(a) == set(b)
        for key in ("numbers", "positions", "cell", "pbc", "forces"):
            assert np.array_equal(a[key], b[key]), key
        assert a["energy"] == b["energy"] and a["time_ps"] == b["time_ps"]
        assert a["traj_id"] == b["traj_id"]
    assert back[0]["config_type"] == "liquid"


def labelled_per_trajectory(md_frames, folder):
    """The MD frames labelled with Tersoff, one extxyz file per trajectory (as the pipeline)."""
    labelled = label_frames(md_frames, get_teacher("tersoff"))
    files = []
    for k in range(3):
        path = folder / f"t{k}.extxyz"
        write_frames(path, [a for a in labelled if a.info["traj_id"] == f"t{k}"])
        files.append(str(path))
    return labelled, files


def test_build_shards_splits_by_trajectory(md_frames, tmp_path):
    labelled, files = labelled_per_trajectory(md_frames, tmp_path)
    status = tmp_path / "bad.json"
    status.write_text(json.dumps({"traj_id": "t9", "failure": "lost atoms (3 of 16)"}))
    manifest = build_shards(files, [str(status)], str(tmp_path / "shards"), min_time_ps=0.2,
                            max_force=1e9, val_fraction=0.34, seed=0, frames_per_shard=5,
                            r_max=4.0)
    train_t, val_t = manifest["trajectories"]["train"], manifest["trajectories"]["val"]
    assert train_t and val_t and not set(train_t) & set(val_t)
    n_kept = sum(1 for a in labelled if a.info["time_ps"] >= 0.2)
    assert manifest["counts"]["train"] + manifest["counts"]["val"] == n_kept
    assert manifest["dropped"]["before_min_time"] == len(labelled) - n_kept
    assert manifest["failed_trajectories"] == [{"traj_id": "t9",
                                                "reason": "lost atoms (3 of 16)"}]
    assert all(s["n_structures"] <= 5 for s in manifest["shards"])
    mpath = str(tmp_path / "shards" / "manifest.json")
    for entry, path in zip([s for s in manifest["shards"] if s["split"] == "train"],
                           shard_paths(mpath, "train")):
        assert sha256(path) == entry["sha256"]
    assert manifest["stats"]["train"]["mean_neighbours"] > 5
    assert manifest["elements"] == ["C"] and manifest["e0"] == {"C": 0.0}


def test_nested_subsets_and_fixed_test_split(real_like_file, tmp_path):
    summary = ingest(str(real_like_file), str(tmp_path), ["C"])
    a3, a6 = training_subset(str(tmp_path), 3, 1), training_subset(str(tmp_path), 6, 1)
    assert [r["positions"].tobytes() for r in a3] == [r["positions"].tobytes() for r in a6[:3]]
    b6 = training_subset(str(tmp_path), 6, 2)
    assert [r["positions"].tobytes() for r in b6] != [r["positions"].tobytes() for r in a6]
    test = {r["positions"].tobytes() for r in read_shard(tmp_path / "test.h5")}
    val = {r["positions"].tobytes() for r in read_shard(tmp_path / "val.h5")}
    pool = {r["positions"].tobytes() for r in read_shard(tmp_path / "pool.h5")}
    assert not test & pool and not val & pool and not test & val
    assert len(pool) == summary["n_pool"]
    ingest(str(real_like_file), str(tmp_path / "again"), ["C"])
    assert [r["positions"].tobytes() for r in training_subset(str(tmp_path / "again"), 6, 1)] \
        == [r["positions"].tobytes() for r in a6]
    with pytest.raises(ValueError, match="finetune.n_train"):
        training_subset(str(tmp_path), summary["n_pool"] + 1, 1)


def test_split_column_is_kept_and_e0_fitted(real_like_file, tmp_path):
    frames = read_frames(real_like_file)
    for i, atoms in enumerate(frames):
        atoms.info["split"] = "test" if i < 4 else "train"
        atoms.info["E_dft"] = atoms.info.pop("energy") - 7.5 * len(atoms)  # a total energy
        atoms.arrays["F_dft"] = atoms.arrays.pop("forces")
    frames.append(frames[0].copy())
    frames[-1].info["config_type"] = "dimer"
    write_frames(tmp_path / "paper-style.extxyz", frames)
    summary = ingest(str(tmp_path / "paper-style.extxyz"), str(tmp_path / "out"), ["C"],
                     energy_key="E_dft", forces_key="F_dft", e0="fit",
                     exclude_config_types=["dimer"])
    assert summary["n_test"] == 4
    assert summary["n_test"] + summary["n_val"] + summary["n_pool"] == len(frames) - 1
    assert summary["e0"]["C"] < -7.0  # the fitted reference absorbs the -7.5 eV/atom shift


@pytest.mark.parametrize("breakage, message", [
    (lambda a: a.info.pop("energy"), "structure 2: missing energy key 'energy'"),
    (lambda a: a.arrays.pop("forces"), "structure 2: missing forces key 'forces'"),
    (lambda a: a.info.update(energy=float("nan")), "structure 2: key 'energy' is not finite"),
    (lambda a: a.set_chemical_symbols(["Si"] + a.get_chemical_symbols()[1:]),
     r"structure 2: element\(s\) \['Si'\] outside the model's set"),
])
def test_bad_real_data_names_file_index_and_key(real_like_file, tmp_path, breakage, message):
    frames = read_frames(real_like_file)
    breakage(frames[2])
    bad = tmp_path / "bad.extxyz"
    write_frames(bad, frames)
    with pytest.raises(ValueError, match=f"{bad}.*{message}"):
        ingest(str(bad), str(tmp_path / "out"), ["C"])
    assert not (tmp_path / "out").exists()


def test_fetch_through_load_atoms_reads_a_local_file(real_like_file, tmp_path):
    from synthpre.fetch_real import run_fetch_real_job

    n = run_fetch_real_job(str(real_like_file), str(tmp_path / "fetched.extxyz"),
                           str(tmp_path / "la"))
    original, fetched = read_frames(real_like_file), read_frames(tmp_path / "fetched.extxyz")
    assert n == len(original) == len(fetched)
    for a, b in zip(original, fetched):
        assert np.allclose(a.positions, b.positions)
        assert a.info["energy"] == pytest.approx(b.info["energy"])
        assert np.allclose(a.arrays["forces"], b.arrays["forces"])
        assert a.info["config_type"] == b.info["config_type"]


def test_committed_demo_dft_set_is_physically_sane():
    """The ranges docs/demo-data.md promises for data/demo/carbon-dft.extxyz."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "data" / "demo" / "carbon-dft.extxyz"
    frames = read_frames(path)
    assert len(frames) == 160 and all(len(a) == 32 for a in frames)
    assert {a.info["config_type"] for a in frames} == {"quench", "anneal"}
    assert all(a.info["labeller"] == "gpaw" for a in frames)
    assert all(a.info["e0_C"] == pytest.approx(-0.367598, abs=1e-6) for a in frames)
    per_atom = np.array([a.info["energy"] / len(a) for a in frames])
    assert -9.0 < per_atom.min() and per_atom.max() < -6.5
    forces = np.concatenate([a.arrays["forces"] for a in frames])
    assert 1.0 < np.sqrt(np.mean(forces**2)) < 5.0 and np.abs(forces).max() < 30.0
    assert max(np.abs(a.arrays["forces"].sum(axis=0)).max() for a in frames) < 0.1


def test_pretraining_subsets_are_nested_and_keep_trajectories_whole(md_frames, tmp_path):
    from synthpre.shard import pretraining_subset, shard_paths

    labelled, files = labelled_per_trajectory(md_frames, tmp_path)
    build_shards(files, [], str(tmp_path / "shards"), min_time_ps=0.0, max_force=1e9,
                 val_fraction=0.0, seed=0, frames_per_shard=4, r_max=4.0)
    paths = shard_paths(str(tmp_path / "shards" / "manifest.json"), "train")
    per_traj = len(labelled) // 3

    def chosen(size, seed=5):
        subset = pretraining_subset(paths, size, seed)
        records = {p: read_shard(p) for p in subset}
        return [(p, i, records[p][i]["traj_id"]) for p in paths for i in subset.get(p, [])]

    small, large = chosen(per_traj - 1), chosen(2 * per_traj + 1)
    assert len(small) == per_traj - 1 and len(large) == 2 * per_traj + 1
    assert {(p, i) for p, i, _ in small} <= {(p, i) for p, i, _ in large}
    counts = sorted(np.unique([t for *_, t in large], return_counts=True)[1].tolist())
    assert counts == [1, per_traj, per_traj]  # two whole trajectories and one frame of a third
    assert len({t for *_, t in small}) == 1
    with pytest.raises(ValueError, match="config field 'pretrain.sizes' asks for 999"):
        pretraining_subset(paths, 999, 0)


def test_neighbour_counts_match_the_graphs_for_a_slab():
    """Mean neighbours (the model's message normalisation) counts the graphs' own edges: a
    slab periodic in x and y only has fewer than the same cell periodic in all three."""
    from ase.build import diamond111

    from synthpre.graph import build_graph
    from synthpre.stats import neighbour_count

    slab = diamond111("C", size=(2, 2, 3), vacuum=0.0)  # no vacuum: z images would bond
    record = {"numbers": slab.numbers, "positions": slab.positions, "cell": slab.cell[:],
              "pbc": np.array([True, True, False])}
    edges = build_graph(record, ["C"], 2.0).edge_index.shape[1]
    assert neighbour_count(record, 2.0) == edges
    bulk_like = neighbour_count({**record, "pbc": np.array([True, True, True])}, 2.0)
    assert edges < bulk_like
