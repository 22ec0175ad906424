"""The captured training step (synthpre.capture: forward, forces and loss traced into one graph
and compiled) is the eager step: same loss, forces and parameter gradients in float64, for
every way a training calls it (whole model, frozen layers, replay's second part, DDP's
shares), batches of any size reusing the graph, and a resumed captured training ends where an
uninterrupted one does.

Most checks compile with ``aot_eager`` (the trace and AOTAutograd's derivative, which is what
synthpre adds; no code generation, so they stay quick on two cores); one checks Inductor's
compiled code the same way. Models are one- or two-layer and tiny: tracing dominates.
"""
import numpy as np
import pytest
import torch
from defaults import train_config
from test_trainer import carbon_records, tiny_model

from synthpre.capture import CapturedStep
from synthpre.freeze import freeze
from synthpre.graph import build_graph
from synthpre.preemption import STOP_REQUESTED, Preempted, request_stop
from synthpre.trainer import gradient_step, loss_fn, rank_share, train

torch.set_num_threads(1)
RECORDS = carbon_records(12, 5)



def small_model(seed=0):
    """One layer (tracing time grows with the layers; two layers are tested in
    tests/test_kernels.py's fast = reference). One structure for all tests, so that they
    share one traced graph per backend and set of trainable parameters."""
    model = tiny_model(RECORDS, "float64", seed=seed)
    torch.manual_seed(seed)
    from synthpre.model import NequIP
    model = NequIP.from_config({**model.config, "num_layers": 1})
    with torch.no_grad():  # trained-looking weights: shifts and Bessel frequencies moved
        model.shift.fill_(-1.3)
        model.bessel.weights.add_(0.1 * torch.randn_like(model.bessel.weights))
    return model.train()


def _cut(records):
    """8, 7 or 6 atoms of each: atoms and edges differ from batch to batch."""
    return [{**r, **{key: r[key][:8 - (k % 3)] for key in ("numbers", "positions", "forces")}}
            for k, r in enumerate(records)]


def shares(model, sizes):
    """Whole batches of ``sizes`` structures from ``RECORDS``, cut by ``_cut``."""
    out, start = [], 0
    for size in sizes:
        recs = _cut(RECORDS[start:start + size])
        start += size
        gs = [build_graph(r, model.species, model.r_max, model.dtype) for r in recs]
        out.append(rank_share(gs, [len(r["numbers"]) for r in recs]))
    return out


def step_grads(model, share, captured=None, replay=None):
    model.zero_grad(set_to_none=True)
    loss = gradient_step(model, share, 4.0, "cpu", replay, 0.5 if replay else 0.0, captured)
    return float(loss), {n: p.grad.clone() for n, p in model.named_parameters()
                         if p.grad is not None}


def assert_same(eager, captured, tol=1e-10):
    (loss_e, grads_e), (loss_c, grads_c) = eager, captured
    assert loss_c == pytest.approx(loss_e, rel=tol, abs=0)
    assert grads_e.keys() == grads_c.keys() and grads_e
    for name, g in grads_e.items():
        np.testing.assert_allclose(grads_c[name].numpy(), g.numpy(), rtol=0,
                                   atol=tol * float(g.abs().max()), err_msg=name)



@pytest.mark.parametrize("mode", ["pretrain", "frozen", "replay"])
def test_captured_step_equals_eager_over_batches_of_other_sizes(mode):
    """pretrain and finetune are the same step (whole model); frozen trains a part of it;
    replay adds a weighted second batch. Batches of 3, 2, 4 and 1 structures."""
    model = small_model()
    if mode == "frozen":
        freeze(model, 1)  # the embedding, Bessel basis and the layer; the head trains
    captured = CapturedStep(model, backend="aot_eager")
    # a batch of one structure is compiled once more (Dynamo's own case for a size of 1)
    batches = shares(model, [3, 2, 4] + ([1] if mode == "pretrain" else []))
    for k, share in enumerate(batches):
        replay = batches[(k + 1) % len(batches)] if mode == "replay" else None
        eager = step_grads(model, share, replay=replay)
        got = step_grads(model, share, captured, replay=replay)
        assert_same(eager, got)
        if mode == "frozen":
            assert not any(n.startswith(("embedding.", "layers.0.")) for n in got[1])


def test_captured_outputs_are_the_models_energies_and_forces():
    model = small_model()
    share = shares(model, [3])[0]
    loss, energy, forces = CapturedStep(model, backend="aot_eager")(share.batch, 4.0)
    out = model(share.batch)
    np.testing.assert_allclose(energy.detach().numpy(), out["energy"].detach().numpy(),
                               rtol=1e-12)
    np.testing.assert_allclose(forces.detach().numpy(), out["forces"].detach().numpy(),
                               rtol=0, atol=1e-12 * float(out["forces"].abs().max()))
    assert float(loss) == pytest.approx(float(loss_fn(out, share.batch, 4.0)), rel=1e-12)


def test_inductor_compiled_step_equals_eager():
    """The compiled code itself (Inductor: C++ on CPU), float64."""
    model = small_model(seed=1)
    captured = CapturedStep(model)
    for share in shares(model, [2, 3]):
        assert_same(step_grads(model, share), step_grads(model, share, captured))


def test_resumed_captured_training_equals_uninterrupted(tmp_path):
    """Preempted mid-epoch (SLURM's signal) and resumed, captured: the weights of an
    uninterrupted captured training; and those of an eager one, to float rounding."""
    train_recs, val_recs = RECORDS[:6], RECORDS[10:]

    def batches(epoch, stop_at=None):
        order = np.random.default_rng([0, epoch]).permutation(len(train_recs))
        for k in range(0, 6, 2):
            if (epoch, k // 2) == stop_at:
                request_stop()  # as if SIGUSR1 arrived while this batch trains
            yield [train_recs[i] for i in order[k:k + 2]]

    def fit(name, capture, data=batches):
        cfg = train_config(max_epochs=2, batch_size=2, val_batch_size=2, lr=5e-3,
                           patience=100, seed=0, loader_workers=0, capture=capture)
        train(small_model(), data, val_recs, cfg, tmp_path / name)

    fit("whole", True)
    with pytest.raises(Preempted, match="epoch 2 after batch 2"):
        fit("resumed", True, lambda e: batches(e, stop_at=(2, 1)))
    STOP_REQUESTED.clear()
    fit("resumed", True)
    fit("eager", False)
    runs = {name: torch.load(tmp_path / name / "checkpoint.pt", weights_only=True)
            for name in ("whole", "resumed", "eager")}
    assert runs["resumed"]["state"]["epoch"] == runs["whole"]["state"]["epoch"] == 2
    for key in ("model", "ema"):
        for n, value in runs["whole"][key].items():
            assert torch.equal(runs["resumed"][key][n], value), f"{key} {n}"
            np.testing.assert_allclose(runs["eager"][key][n].numpy(), value.numpy(),
                                       rtol=1e-9, atol=1e-12, err_msg=f"{key} {n}")


def _ddp_worker(rank: int, size: int, port: int, tmp: str) -> None:
    import os

    import torch.distributed as dist
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=size)
    try:
        model = small_model(seed=2)
        records = _cut(RECORDS[:5])
        graphs = [build_graph(r, model.species, model.r_max, model.dtype) for r in records]
        share = rank_share(graphs[rank::size], [len(r["numbers"]) for r in records])
        loss, grads = step_grads(model, share, CapturedStep(model, backend="aot_eager"))
        torch.save({"loss": loss, "grads": grads}, os.path.join(tmp, f"grad-{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_with_the_captured_step_gives_the_single_process_gradients(tmp_path):
    """Two gloo ranks, 3 + 2 structures of a batch of 5, each rank's step captured: every
    rank ends with the eager single-process gradients of the whole batch.

    The ranks are forked from this process after it captured the step of this model's
    structure (the whole batch, checked against eager too), so they run that graph rather
    than each tracing and compiling it again (~25 s of CPU per process here): what is tested
    is the ranks' gradients, which do not depend on where the graph was compiled."""
    import socket

    import torch.distributed as dist
    import torch.multiprocessing as mp
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    model = small_model(seed=2)
    whole = shares(model, [5])[0]
    single = step_grads(model, whole)
    assert_same(single, step_grads(model, whole, CapturedStep(model, backend="aot_eager")))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True,
                       start_method="fork")
    for rank in range(2):
        got = torch.load(tmp_path / f"grad-{rank}.pt", weights_only=True)
        assert_same(single, (got["loss"], got["grads"]), tol=1e-11)


def test_one_place_picks_the_step_by_device_as_measured():
    """train.capture auto: op by op with compiled bodies on a CPU (1.3x the captured step per
    CPU second at the paper's size, docs/benchmarks.md), the captured step on a GPU."""
    from synthpre.trainer import captured_step
    assert captured_step("auto", "cpu") is False
    assert captured_step("auto", "cuda:0") is True
    assert captured_step(True, "cpu") is True and captured_step(False, "cuda") is False
