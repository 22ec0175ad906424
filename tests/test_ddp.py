"""Data-parallel training (torch.distributed, gloo on CPU) is the single-process step."""
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from defaults import train_config
from test_trainer import carbon_records, tiny_model

from synthpre.graph import build_graph
from synthpre.trainer import gradient_step, rank_share, train, world

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, size: int, port: int, job: str, tmp: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=size)
    try:
        if job == "grad":
            grads, loss = _gradients()
            torch.save({"grads": grads, "loss": loss}, os.path.join(tmp, f"grad-{rank}.pt"))
        else:
            _fit(os.path.join(tmp, "ddp"))
    finally:
        dist.destroy_process_group()


def _spawn(job: str, tmp, size: int = 2) -> None:
    mp.spawn(_worker, args=(size, _free_port(), job, str(tmp)), nprocs=size, join=True)


def _gradients():
    """Gradients of one batch of 5 structures of unequal size (3 on rank 0, 2 on rank 1)."""
    records = carbon_records(5, 11)
    records[1] = {**records[1], **{k: records[1][k][:6] for k in ("numbers", "positions",
                                                                  "forces")}}
    model = tiny_model(records, "float64", seed=3)
    graphs = [build_graph(r, model.species, model.r_max, model.dtype) for r in records]
    rank, size = world()
    share = rank_share(graphs[rank::size], [len(r["numbers"]) for r in records])
    loss = float(gradient_step(model, share, 4.0, "cpu"))
    return {n: p.grad.clone() for n, p in model.named_parameters()}, loss


def _fit(out):
    train_recs, val_recs = carbon_records(5, 12), carbon_records(2, 13)
    cfg = train_config(max_epochs=2, batch_size=3, val_batch_size=2, lr=5e-3)
    train(tiny_model(train_recs, "float64"), train_recs, val_recs, cfg, out)


def test_ddp_gradients_equal_single_process(tmp_path):
    single, loss = _gradients()
    _spawn("grad", tmp_path)
    for rank in range(2):
        got = torch.load(tmp_path / f"grad-{rank}.pt", weights_only=True)
        assert got["loss"] == pytest.approx(loss, rel=1e-12, abs=0)
        for name, g in single.items():
            np.testing.assert_allclose(got["grads"][name].numpy(), g.numpy(),
                                       rtol=1e-11, atol=1e-13 * float(g.abs().max()),
                                       err_msg=name)


def test_ddp_training_equals_single_process(tmp_path):
    """Two epochs, batches of 3 on 2 ranks (the last batch of 2 splits 1 + 1)."""
    _fit(tmp_path / "single")
    _spawn("fit", tmp_path)
    a, b = (torch.load(tmp_path / d / "checkpoint.pt", weights_only=True)
            for d in ("single", "ddp"))
    assert a["state"]["epoch"] == b["state"]["epoch"] == 2
    for key in ("model", "ema"):
        for name in a[key]:
            np.testing.assert_allclose(b[key][name].numpy(), a[key][name].numpy(),
                                       rtol=1e-9, atol=1e-12, err_msg=f"{key} {name}")


def test_torchrun_cli_pretraining_matches_one_process(tmp_path):
    """`torchrun --nproc_per_node=2 synthpre train` (what the pretrain rule runs for gpu: 2)
    joins the ranks itself and ends with the weights of a one-process run."""
    import subprocess
    import sys
    from pathlib import Path

    from conftest import tiny_pretraining_command

    synthpre, *args = tiny_pretraining_command(tmp_path)
    subprocess.run([synthpre, *args, "--out", str(tmp_path / "one" / "model.pt")], check=True,
                   capture_output=True, timeout=300)
    torchrun = str(Path(sys.executable).parent / "torchrun")
    subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", synthpre, *args, "--out",
                    str(tmp_path / "two" / "model.pt")], check=True, capture_output=True,
                   timeout=300)
    one, two = (torch.load(tmp_path / d / "model.pt", weights_only=True)["state_dict"]
                for d in ("one", "two"))
    for key in one:
        torch.testing.assert_close(one[key], two[key], rtol=1e-9, atol=1e-12)
