"""Replay and frozen-layer fine-tuning: replay batches hold the configured share of synthetic
structures with their loss weight and energy reference; frozen weights stay exactly as
pre-trained while the rest trains; each mode's settings reach only its own jobs."""
from __future__ import annotations

import copy

import pytest
import torch
from defaults import DEFAULTS, train_config

from synthpre import job_settings
from synthpre.freeze import freeze
from synthpre.graph import build_graph
from synthpre.replay import Replay, shift_energies
from synthpre.trainer import gradient_step, loss_fn, rank_share, train

from test_trainer import carbon_records, tiny_model

torch.set_num_threads(1)


@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.75])
def test_replay_batches_hold_the_configured_fraction(fraction):
    replay = Replay(carbon_records(7, 3), fraction=fraction, weight=0.3, seed=1)
    for n_real in range(1, 21):
        k = len(replay.draw(epoch=2, batch=n_real, n_real=n_real))
        assert k == replay.count(n_real) >= 1
        # the share of the whole batch, to within rounding one structure
        assert abs(k - fraction * (k + n_real)) <= 0.5 / (1 - fraction) + 1e-9
    assert replay.count(10) == {0.2: 2, 0.5: 10, 0.75: 30}[fraction]
    # the same (epoch, batch) gives the same structures (resuming is exact), others differ
    first = [id(r) for r in replay.draw(3, 0, 10)]
    assert first == [id(r) for r in replay.draw(3, 0, 10)]
    assert any([id(r) for r in replay.draw(3, b, 10)] != first for b in range(1, 5))


def test_a_small_replay_pool_is_drawn_with_replacement():
    pool = carbon_records(3, 3)
    drawn = Replay(pool, fraction=0.5, weight=1.0, seed=0).draw(1, 0, n_real=10)
    assert len(drawn) == 10 and {id(r) for r in drawn} <= {id(r) for r in pool}


def test_replay_labels_move_by_the_fitted_shift():
    records = carbon_records(2, 4)
    moved = shift_energies(records, {"C": -1.25})
    for old, new in zip(records, moved):
        assert new["energy"] == pytest.approx(old["energy"] - 1.25 * 8)  # 8 C atoms
        assert new["forces"] is old["forces"]


def test_replay_adds_its_weighted_loss_to_the_step():
    real, synthetic = carbon_records(4, 5), carbon_records(3, 6)
    model = tiny_model(real, "float64")
    args = (model.species, model.r_max, model.dtype)
    real_g = [build_graph(r, *args) for r in real]
    syn_g = [build_graph(r, *args) for r in synthetic]
    from synthpre.graph import concat

    def plain(graphs):
        batch = concat(graphs)
        return loss_fn(model(batch), batch, 4.0).item()

    step = gradient_step(model, rank_share(real_g, [len(r["numbers"]) for r in real]), 4.0,
                         "cpu", rank_share(syn_g, [len(r["numbers"]) for r in synthetic]), 0.3)
    assert float(step) == pytest.approx(plain(real_g) + 0.3 * plain(syn_g), rel=1e-12)
    assert plain(syn_g) > 0.1 * plain(real_g)  # the synthetic term is not negligible here


def test_frozen_layers_keep_their_weights_while_the_others_train(tmp_path):
    records, val = carbon_records(6, 0), carbon_records(2, 1)
    model = tiny_model(records, "float64")  # two interaction layers
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    names = freeze(model, 1)
    assert names == ["embedding.weight", "bessel.weights"] + \
        [n for n, _ in model.named_parameters() if n.startswith("layers.0.")]
    train(model, records, val, train_config(max_epochs=4, batch_size=2, lr=1e-2), tmp_path)
    after = model.state_dict()  # the best EMA weights
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    for name in before:
        frozen = name in names
        for state in (after, ckpt["model"], ckpt["ema"]):
            assert torch.equal(state[name], before[name]) == frozen, name
    assert len(names) < len(list(model.parameters()))


def test_freezing_all_leaves_the_readout_and_too_many_layers_is_named():
    model = tiny_model(carbon_records(2, 0))
    trained = set(dict(model.named_parameters())) - set(freeze(model, "all"))
    assert trained == {"head_1.weight", "head_2.weight"}
    with pytest.raises(ValueError, match="'finetune.freeze_layers' is 3 but the model has 2"):
        freeze(tiny_model(carbon_records(2, 0)), 3)


def test_each_mode_reads_only_its_own_settings():
    config = copy.deepcopy(DEFAULTS)  # the schema's defaults: replay 0.5/0.3, freeze_layers 1
    changed = copy.deepcopy(config)
    changed["finetune"].update(replay={"fraction": 0.5, "weight": 0.9}, freeze_layers=2,
                               modes=["replay", "frozen"])
    for stage in ("finetune", "scratch", "pretrain"):
        assert job_settings.train(config, stage) == job_settings.train(changed, stage)
    assert job_settings.train(config, "replay")["replay"] == {"fraction": 0.5, "weight": 0.3}
    assert job_settings.train(changed, "replay")["replay"]["weight"] == 0.9
    assert "freeze_layers" not in job_settings.train(changed, "replay")
    assert job_settings.train(config, "frozen")["freeze_layers"] == 1
    assert job_settings.train(changed, "frozen")["freeze_layers"] == 2
    assert "replay" not in job_settings.train(changed, "frozen")
