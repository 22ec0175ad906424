"""The fast convolution kernel against e3nn's TensorProduct (the reference), in float64.

The fast kernel is a hand-written autograd Function with a hand-written double backward;
the reference is e3nn's ``TensorProduct`` + ``index_add``. Same weights, same function:
energies, forces, stress and the parameter gradients of a force loss must agree.
"""
import sys

import numpy as np
import pytest
import torch
from defaults import model_config
from random_atoms import random_cell

from synthpre.graph import collate
from synthpre.model import NequIP, _EdgeConv

torch.set_num_threads(1)

BASE = {"r_max": 3.5, "num_layers": 2, "num_features": 6, "avg_num_neighbors": 12.0,
        "dtype": "float64"}


def structure(seed: int, symbols: list[str], periodic: bool = True, n: int = 10) -> dict:
    """n atoms in a 5.5 Å triclinic cell (periodic) or cluster, as a record."""
    atoms = random_cell(seed, symbols, n, 5.5, periodic)
    return {"numbers": atoms.numbers, "positions": atoms.positions, "cell": atoms.cell.array,
            "pbc": atoms.pbc}


def pair(config: dict, seed: int = 0) -> tuple[NequIP, NequIP]:
    """The same weights (trained-looking: Bessel frequencies and shifts moved) in both kernels."""
    torch.manual_seed(seed)
    fast = NequIP.from_config(model_config(**{**config, "kernel": "fast"}))
    with torch.no_grad():
        fast.bessel.weights.add_(0.1 * torch.randn_like(fast.bessel.weights))
        fast.shift.normal_()
        fast.scale.uniform_(0.5, 1.5)
    ref = NequIP.from_config(model_config(**{**config, "kernel": "reference"}))
    ref.load_state_dict(fast.state_dict())
    return fast, ref


def force_loss_grads(model: NequIP, batch) -> tuple[dict, dict]:
    """Outputs and parameter gradients of an energy + force loss (training mode)."""
    model.train()
    model.zero_grad()
    out = model(batch, compute_stress=True)
    target = torch.linspace(-1, 1, out["forces"].numel(), dtype=out["forces"].dtype)
    loss = (out["energy"] ** 2).sum() + ((out["forces"].flatten() - target) ** 2).sum()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()
             if p.grad is not None}
    return {k: v.detach() for k, v in out.items()}, grads


def assert_close(a, b, tol=1e-10):
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_allclose(a, b, rtol=0, atol=tol * max(1.0, np.abs(b).max()))


def assert_same_as_reference(model: NequIP, ref: NequIP, species: list[str]):
    """Energies, forces, stress and force-loss parameter gradients of ``model`` equal the
    reference kernel's on a periodic and a molecular structure; returns their records."""
    records = [structure(1, species), structure(2, species, periodic=False, n=7)]
    batch = collate(records, species, BASE["r_max"], torch.float64)
    out_m, grads_m = force_loss_grads(model, batch)
    out_r, grads_r = force_loss_grads(ref, batch)
    assert np.abs(out_r["forces"].numpy()).max() > 1e-2
    assert_close(out_m["energy"], out_r["energy"])
    assert_close(out_m["forces"], out_r["forces"])
    assert_close(out_m["stress"][0], out_r["stress"][0])
    assert grads_m.keys() == grads_r.keys() and len(grads_r) == len(list(ref.parameters()))
    for name in grads_r:
        assert_close(grads_m[name], grads_r[name], tol=1e-9)
    return records


@pytest.mark.parametrize("l_max", [1, 2])
@pytest.mark.parametrize("parity", [True, False])
@pytest.mark.parametrize("species", [["C"], ["C", "O"]])
def test_fast_equals_reference(l_max, parity, species):
    fast, ref = pair({**BASE, "l_max": l_max, "parity": parity, "species": species})
    records = [structure(1, species), structure(2, species, periodic=False, n=7)]
    batch = collate(records, species, BASE["r_max"], torch.float64)
    out_f, grads_f = force_loss_grads(fast, batch)
    out_r, grads_r = force_loss_grads(ref, batch)
    assert np.abs(out_r["forces"].numpy()).max() > 1e-2  # a real, non-trivial comparison
    assert_close(out_f["energy"], out_r["energy"])
    assert_close(out_f["forces"], out_r["forces"])
    assert_close(out_f["stress"][0], out_r["stress"][0])  # [1] is NaN: not periodic
    assert grads_f.keys() == grads_r.keys()
    # every layer's radial MLP and tensor-product path is trained through the force loss
    assert any("radial" in k for k in grads_r) and len(grads_r) == len(list(ref.parameters()))
    for name in grads_r:
        assert_close(grads_f[name], grads_r[name], tol=1e-9)


def edge_conv_inputs(d_in: int, D: int, u: int = 3, edges: int = 7, nodes: int = 4):
    """Inputs of ``_EdgeConv``: radial weights per path, P = max(1, D // 2) paths each
    owning consecutive output columns."""
    g = torch.Generator().manual_seed(d_in * 10 + D)
    n_paths = max(1, D // 2)
    x = torch.randn(edges, d_in, u, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.randn(edges, D, d_in, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(edges, n_paths, u, dtype=torch.float64, generator=g, requires_grad=True)
    paths = torch.tensor([c * n_paths // D for c in range(D)])
    centre = torch.tensor([0, 1, 1, 3, 0, 2, 3])
    return x, y, w, paths, centre, nodes


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("d_in, D", [(1, 1), (1, 4), (3, 4), (3, 9), (5, 9)])
def test_edge_conv_gradcheck(d_in, D, compiled):
    if compiled and (d_in, D) not in ((1, 4), (3, 9)):
        pytest.skip("compiled: two shapes suffice (compiling each costs seconds)")
    x, y, w, paths, centre, nodes = edge_conv_inputs(d_in, D)
    conv = lambda x, y, w: _EdgeConv.apply(x, y, w, paths, centre, nodes, compiled)  # noqa: E731
    assert torch.autograd.gradcheck(conv, (x, y, w))
    # second order in x, w and the output gradient; y (edge harmonics x coupling) is treated
    # as constant in the double backward by design (see _EdgeConv.backward)
    y = y.detach()
    assert torch.autograd.gradgradcheck(lambda x, w: conv(x, y, w), (x, w))


@pytest.mark.parametrize("kernel", ["fast", "reference"])
def test_forces_vanish_smoothly_at_r_max(kernel):
    """A dimer: the force goes to zero at r_max at least like (r_max - r)^2 (the envelope has
    three vanishing derivatives), and is exactly zero beyond."""
    torch.manual_seed(3)
    model = NequIP.from_config(model_config(**{**BASE, "species": ["C"], "l_max": 1, "kernel": kernel})).eval()
    r_max = BASE["r_max"]

    def force(r: float) -> float:
        rec = {"numbers": [6, 6], "positions": [[0, 0, 0], [r, 0, 0]], "cell": np.zeros((3, 3)),
               "pbc": [False] * 3}
        return float(model(collate([rec], ["C"], r_max, torch.float64))["forces"][1, 0])

    f_1, f_2, f_3 = (abs(force(r_max - d)) for d in (0.5, 1e-2, 1e-3))
    assert f_1 > f_2 > 1e-12 and f_3 < f_2 / 50  # no jump at r_max
    assert force(r_max + 1e-3) == 0.0


@pytest.mark.parametrize("kernel", ["fast", "reference"])
def test_batch_forces_equal_single(kernel):
    species = ["C", "O"]
    torch.manual_seed(4)
    model = NequIP.from_config(model_config(**{**BASE, "species": species, "l_max": 2,
                                "kernel": kernel})).eval()
    records = [structure(5, species), structure(6, species, n=12),
               structure(7, species, periodic=False, n=5)]
    together = model(collate(records, species, BASE["r_max"], torch.float64),
                     compute_stress=True)
    start = 0
    for k, rec in enumerate(records):
        alone = model(collate([rec], species, BASE["r_max"], torch.float64),
                      compute_stress=True)
        n = len(rec["numbers"])
        assert_close(together["forces"][start:start + n].detach(), alone["forces"].detach())
        assert_close(together["energy"][k].detach(), alone["energy"][0].detach())
        if rec["pbc"].all():
            assert_close(together["stress"][k].detach(), alone["stress"][0].detach())
        start += n


def test_unknown_kernel_is_refused():
    with pytest.raises(ValueError, match="kernel 'cuda'"):
        NequIP.from_config(model_config(**{**BASE, "species": ["C"], "kernel": "cuda"}))


def test_model_files_carry_the_kernel_and_old_files_load_as_fast(tmp_path):
    from synthpre.modelfile import load_model, save_model

    fast, ref = pair({**BASE, "species": ["C"], "l_max": 1})
    save_model(tmp_path / "ref.pt", ref, {"e0": {"C": -1.0}})
    assert load_model(tmp_path / "ref.pt")[0].config["kernel"] == "reference"
    assert load_model(tmp_path / "ref.pt", kernel="fast")[0].layers[0].kernel == "fast"
    payload = torch.load(tmp_path / "ref.pt", weights_only=True)
    del payload["config"]["kernel"]  # a file written before kernels were selectable
    torch.save(payload, tmp_path / "old.pt")
    old = load_model(tmp_path / "old.pt")[0]
    assert [layer.kernel for layer in old.layers] == ["fast", "fast"]


@pytest.mark.parametrize("kernel", ["fast", "reference"])
def test_scripted_kernels_equal_eager(kernel):
    """TorchScript runs the fast kernel as plain ops (no custom Function): same energies and
    autograd forces as the eager model, for the kernel exported models use and the reference."""
    from e3nn.util import jit

    fast, ref = pair({**BASE, "species": ["C", "O"], "l_max": 2})
    model = fast if kernel == "fast" else ref
    record = structure(8, ["C", "O"])
    batch = collate([record], model.species, BASE["r_max"], torch.float64)
    eager = model.eval()(batch)

    class Energy(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, species: torch.Tensor, vec: torch.Tensor,
                    edge_index: torch.Tensor) -> torch.Tensor:
            return self.model.atomic_energies(species, vec, edge_index).sum()

    scripted = torch.jit.script(Energy(jit.compile(model)))
    centre, neighbour = batch.edge_index
    positions = batch.positions.clone().requires_grad_(True)
    vec = positions[neighbour] - positions[centre] + batch.shifts @ batch.cell[0]
    energy = scripted(batch.species, vec, batch.edge_index)
    forces = -torch.autograd.grad(energy, positions)[0]
    assert_close(energy.detach(), eager["energy"][0].detach())
    assert_close(forces, eager["forces"].detach())


def test_compiled_fast_kernel_equals_reference():
    """``compile: true`` runs the fast kernel's bodies through torch.compile (Inductor fuses
    the gathers, products and sums): the same energies, forces, stress and force-loss
    parameter gradients (its hand-written double backward) as e3nn's TensorProduct."""
    species = ["C", "O"]
    config = {**BASE, "l_max": 2, "parity": True, "species": species}
    fast, ref = pair(config)
    compiled = NequIP.from_config(model_config(**{**config, "kernel": "fast", "compile": True}))
    compiled.load_state_dict(fast.state_dict())
    assert all(layer.compiled for layer in compiled.layers)
    records = assert_same_as_reference(compiled, ref, species)
    # another batch size (dynamic shapes: no recompilation needed, same function)
    batch = collate(records[:1], species, BASE["r_max"], torch.float64)
    assert_close(compiled.eval()(batch)["forces"].detach(), ref.eval()(batch)["forces"].detach())


def test_model_files_carry_compile_and_old_files_load_eager(tmp_path):
    from synthpre.modelfile import load_model, save_model

    fast, _ = pair({**BASE, "species": ["C"], "l_max": 1})
    save_model(tmp_path / "m.pt", fast, {"e0": {"C": -1.0}})
    assert [layer.compiled for layer in load_model(tmp_path / "m.pt")[0].layers] == [False] * 2
    compiled = load_model(tmp_path / "m.pt", compile=True)[0]
    assert compiled.config["compile"] and all(layer.compiled for layer in compiled.layers)
    save_model(tmp_path / "c.pt", compiled, {"e0": {"C": -1.0}})
    assert load_model(tmp_path / "c.pt")[0].layers[0].compiled
    payload = torch.load(tmp_path / "c.pt", weights_only=True)
    del payload["config"]["compile"]  # a file written before the option: eager, as it ran
    torch.save(payload, tmp_path / "old.pt")
    assert not load_model(tmp_path / "old.pt")[0].layers[0].compiled
    with pytest.raises(ValueError, match="model.compile applies to the fast kernel only"):
        load_model(tmp_path / "c.pt", kernel="reference")


def test_compile_applies_to_the_fast_kernel_only():
    with pytest.raises(ValueError, match="model.compile applies to the fast kernel only"):
        NequIP.from_config(model_config(**{**BASE, "species": ["C"], "kernel": "reference",
                                           "compile": True}))


@pytest.mark.parametrize("l_max", [1, 2])
@pytest.mark.parametrize("parity", [True, False])
@pytest.mark.parametrize("species", [["C"], ["C", "O"]])
def test_cueq_equals_reference(l_max, parity, species):
    """The cuequivariance kernel (PyTorch fallback on CPU) loads the reference's weights and
    gives its energies, forces, stress and parameter gradients of a force loss (the double
    backward through the tensor product)."""
    pytest.importorskip("cuequivariance_torch")
    config = {**BASE, "l_max": l_max, "parity": parity, "species": species}
    _, ref = pair(config)
    cueq = NequIP.from_config(model_config(**{**config, "kernel": "cueq"}))
    cueq.load_state_dict(ref.state_dict())  # strict: the same parameters, the same layout
    assert_same_as_reference(cueq, ref, species)


def test_cueq_without_the_package_names_it(monkeypatch):
    """Without cuequivariance (the core install) ``cueq`` fails at model build, naming the
    packages and envs/gpu.txt; the other kernels never import it."""
    monkeypatch.setitem(sys.modules, "cuequivariance_torch", None)  # import raises
    config = model_config(**{**BASE, "l_max": 1, "species": ["C"]})
    NequIP.from_config({**config, "kernel": "fast"})
    with pytest.raises(ImportError, match="cuequivariance-torch.*envs/gpu.txt"):
        NequIP.from_config({**config, "kernel": "cueq"})


def test_cueq_captured_step_equals_eager():
    """The GPU's default way to run a step (``synthpre.capture``: make_fx through the forces)
    traces through the cueq kernel: same loss and parameter gradients as the eager model
    (torch.compile's ``eager`` backend: the traced graph itself, without compiling it)."""
    pytest.importorskip("cuequivariance_torch")
    from synthpre.capture import CapturedStep
    from synthpre.trainer import loss_fn
    torch.manual_seed(0)
    model = NequIP.from_config(model_config(**{**BASE, "l_max": 1, "species": ["C", "O"],
                                               "num_layers": 1, "kernel": "cueq"}))
    records = [structure(1, ["C", "O"]), structure(2, ["C", "O"], n=8)]
    batch = collate(records, ["C", "O"], BASE["r_max"], torch.float64)
    batch.energy = torch.tensor([0.3, -0.2], dtype=torch.float64)
    batch.forces = torch.linspace(-1, 1, batch.positions.numel(),
                                  dtype=torch.float64).view(-1, 3)
    params = list(model.parameters())
    eager = loss_fn(model(batch), batch, 4.0)
    captured = CapturedStep(model, backend="eager")(batch, 4.0)[0]
    assert_close(captured.detach(), eager.detach())
    for a, b in zip(torch.autograd.grad(captured, params), torch.autograd.grad(eager, params)):
        assert_close(a, b)
