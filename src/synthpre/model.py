"""A NequIP-style equivariant potential (the architecture of NequIP 0.5.6 used in the paper).

Built directly on e3nn so that the parameter count matches the paper's model, not the
defaults of today's NequIP. Per layer: linear self-connection + convolution (``uvu`` tensor
product of neighbour features with edge spherical harmonics, weights from a radial MLP on a
trainable Bessel basis times a polynomial cutoff, summed with ``index_add_``), then a gate
nonlinearity and a residual update where the irreps allow it. Per-species scale and shift
are fixed buffers (1 and 0 by default) so one model moves between data sets unchanged.

Three kernels compute the convolution (``kernel`` in the config; same weights, same function):
``reference`` calls e3nn's ``TensorProduct`` (``Interaction.tp``) on gathered neighbour
features and sums with ``index_add_``: what ``fast`` is tested against (tests/test_kernels.py).
``fast``, the training default, evaluates the same tensor product by hand with its own
first and second derivatives (``synthpre.kernel``, where the plumbing lives). ``compile``
(config, fast kernel only) runs that kernel's per-edge bodies through ``torch.compile``.
``cueq`` runs it as one cuequivariance polynomial (``synthpre.kernel_cueq``, imported only
when chosen: the package is an optional install, envs/gpu.txt), for its CUDA kernels.

Parameter count at the paper's settings (species ["C"], r_max 4, 4 layers, 32 features,
l_max 1, parity, 8 Bessel functions) with NequIP 0.5.6's radial MLP of one hidden layer of
8 neurons: 73,784, the paper's ~74 k. (Two hidden layers of 64, today's default, give 136,760.)
"""
from __future__ import annotations

import math

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet, Gate
from torch import nn

from .graph import Batch
from .kernel import FastConvolution, _EdgeConv  # noqa: F401 (_EdgeConv: tests use it)

DTYPES = {"float32": torch.float32, "float64": torch.float64}

# A model's whole definition: the config's ``model`` section (the schema holds the defaults)
# plus what a training job measures (species of the data, mean neighbours within r_max).
CONFIG_KEYS = ("species", "r_max", "num_layers", "num_features", "l_max", "parity", "num_basis",
               "radial_mlp_width", "radial_mlp_depth", "avg_num_neighbors", "dtype", "kernel",
               "compile")
KERNELS = ("fast", "reference", "cueq")


class BesselBasis(nn.Module):
    """sin(w_n r / r_max) * 2 / (r_max r) with trainable frequencies w_n (start: n pi)."""

    def __init__(self, r_max: float, num_basis: int):
        super().__init__()
        self.r_max = r_max
        self.weights = nn.Parameter(math.pi * torch.arange(1, num_basis + 1, dtype=torch.float))

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        r = r.unsqueeze(-1)
        return (2.0 / self.r_max) * torch.sin(self.weights * r / self.r_max) / r


def polynomial_cutoff(r: torch.Tensor, r_max: float, p: int = 6) -> torch.Tensor:
    """Smooth envelope going to zero with p derivatives at r_max."""
    x = r / r_max
    out = (1.0 - 0.5 * (p + 1) * (p + 2) * x**p + p * (p + 2) * x ** (p + 1)
           - 0.5 * p * (p + 1) * x ** (p + 2))
    return out * (x < 1.0)


def _path_exists(irreps_in: o3.Irreps, irreps_edge: o3.Irreps, ir_out: o3.Irrep) -> bool:
    return any(ir_out in ir1 * ir2 for _, ir1 in irreps_in for _, ir2 in irreps_edge)



class Interaction(nn.Module):
    """Self-connection + convolution + gate, as one NequIP ConvNetLayer."""

    def __init__(self, irreps_in: o3.Irreps, irreps_hidden: o3.Irreps, irreps_sh: o3.Irreps,
                 num_basis: int, mlp_width: int, mlp_depth: int, avg_num_neighbors: float,
                 kernel: str = "fast", compiled: bool = False):
        super().__init__()
        if kernel not in KERNELS:
            raise ValueError(f"unknown model kernel {kernel!r}: choose one of {KERNELS}")
        if compiled and kernel != "fast":
            raise ValueError(f"model.compile applies to the fast kernel only, not {kernel!r}")
        self.kernel = kernel
        self.compiled = compiled  # the fast kernel's per-edge bodies through torch.compile
        act = {1: nn.functional.silu, -1: torch.tanh}
        scalars = o3.Irreps([(m, ir) for m, ir in irreps_hidden
                             if ir.l == 0 and _path_exists(irreps_in, irreps_sh, ir)])
        gated = o3.Irreps([(m, ir) for m, ir in irreps_hidden
                           if ir.l > 0 and _path_exists(irreps_in, irreps_sh, ir)])
        gate_ir = "0e" if _path_exists(irreps_in, irreps_sh, o3.Irrep("0e")) else "0o"
        gates = o3.Irreps([(m, gate_ir) for m, _ in gated])
        self.gate = Gate(scalars, [act[ir.p] for _, ir in scalars],
                         gates, [act[ir.p] for _, ir in gates], gated)
        irreps_conv_out = self.gate.irreps_in.simplify()
        self.irreps_out = self.gate.irreps_out
        self.residual = self.irreps_out == irreps_in

        mid, instructions = [], []
        for i, (mul, ir_in) in enumerate(irreps_in):
            for j, (_, ir_edge) in enumerate(irreps_sh):
                for ir_out in ir_in * ir_edge:
                    if ir_out in irreps_conv_out:
                        instructions.append((i, j, len(mid), "uvu", True))
                        mid.append((mul, ir_out))
        mid, perm, _ = o3.Irreps(mid).sort()
        instructions = [(i, j, perm[k], mode, w) for i, j, k, mode, w in instructions]

        self.self_connection = o3.Linear(irreps_in, irreps_conv_out)
        self.linear_1 = o3.Linear(irreps_in, irreps_in)
        self.tp = o3.TensorProduct(irreps_in, irreps_sh, mid, instructions,
                                   shared_weights=False, internal_weights=False)
        self.radial = FullyConnectedNet([num_basis] + [mlp_width] * mlp_depth
                                        + [self.tp.weight_numel], nn.functional.silu)
        self.linear_2 = o3.Linear(mid.simplify(), irreps_conv_out)
        self.norm = 1.0 / math.sqrt(avg_num_neighbors)
        self.fast = FastConvolution(irreps_in, irreps_sh, mid, self.tp.instructions)
        if kernel == "cueq":  # lazily: the core install has no cuequivariance
            from .kernel_cueq import CueqConvolution
            self.cueq = CueqConvolution(irreps_in, irreps_sh, mid, self.tp.instructions)


    def convolution(self, h: torch.Tensor, edge_index: torch.Tensor, edge_sh: torch.Tensor,
                    edge_radial: torch.Tensor) -> torch.Tensor:
        """sum over edges of uvu(h[neighbour], edge_sh; weights), in ``mid`` layout (N, dim)."""
        if self.kernel == "reference":
            return self._reference_convolution(h, edge_index, edge_sh, edge_radial)
        if self.kernel == "cueq" and not torch.jit.is_scripting():
            return self._cueq_convolution(h, edge_index, edge_sh, edge_radial)
        if torch.jit.is_scripting():  # exported models: the same arithmetic, plain ops
            return self.fast.plain(h, edge_index, edge_sh, self.radial(edge_radial))
        return self._fast_convolution(h, edge_index, edge_sh, edge_radial)

    def _reference_convolution(self, h: torch.Tensor, edge_index: torch.Tensor,
                               edge_sh: torch.Tensor, edge_radial: torch.Tensor) -> torch.Tensor:
        """e3nn's TensorProduct per edge, summed onto the centre atoms (TorchScript-able)."""
        msg = self.tp(h.index_select(0, edge_index[1]), edge_sh, self.radial(edge_radial))
        return msg.new_zeros(h.shape[0], msg.shape[1]).index_add(0, edge_index[0], msg)

    @torch.jit.unused  # cuequivariance: TorchScript (export) runs ``fast.plain``
    def _cueq_convolution(self, h, edge_index, edge_sh, edge_radial):
        """The cueq kernel (``synthpre.kernel_cueq``): same weights, same function."""
        return self.cueq(h, edge_index, edge_sh, self.radial(edge_radial))

    @torch.jit.unused  # a custom autograd Function: TorchScript runs ``fast.plain``
    def _fast_convolution(self, h, edge_index, edge_sh, edge_radial):  # (no annotations:
        # TorchScript cannot resolve the postponed ones of an unused method; all are Tensors)
        """The fast kernel (``synthpre.kernel``) on this layer's radial MLP, split before its
        last linear layer so that the kernel forms each block's radial weights per path."""
        *layers, last = self.radial  # e3nn FullyConnectedNet: _Layers, the last linear
        hidden = edge_radial
        for layer in layers:
            hidden = layer(hidden)
        # the last layer's normalised weight matrix, through its public forward (an identity
        # input) rather than e3nn's private normalisation fields; exact, and differentiable
        last_weight = last(torch.eye(last.weight.shape[0], dtype=hidden.dtype,
                                     device=hidden.device))
        return self.fast(h, edge_index, edge_sh, hidden, last_weight, self.compiled)

    def forward(self, x, edge_index, edge_sh, edge_radial):
        sc = self.self_connection(x)
        h = self.linear_1(x)
        h = self.convolution(h, edge_index, edge_sh, edge_radial) * self.norm
        out = self.gate(self.linear_2(h) + sc)
        return x + out if self.residual else out


class NequIP(nn.Module):
    """Energy model; forces and stress come from autograd in ``forward``."""

    __jit_unused_properties__ = ["dtype"]  # Python-side only (synthpre.export scripts it)

    def __init__(self, config: dict):
        super().__init__()
        missing = [k for k in CONFIG_KEYS if k not in config]
        unknown = sorted(set(config) - set(CONFIG_KEYS))
        if missing or unknown:
            raise ValueError(f"model config: missing {missing}, unknown {unknown} (the config "
                             f"schema's 'model' section holds the defaults)")
        self.config = dict(config)
        c = self.config
        self.species = list(c["species"])
        self.num_species = len(self.species)
        self.r_max = float(c["r_max"])
        n_species, f = self.num_species, c["num_features"]
        ps = (1, -1) if c["parity"] else (1,)
        irreps_hidden = o3.Irreps([(f, (l, p)) for l in range(c["l_max"] + 1) for p in ps])
        self.irreps_sh = o3.Irreps.spherical_harmonics(c["l_max"], p=-1 if c["parity"] else 1)

        self.embedding = o3.Linear(f"{n_species}x0e", f"{f}x0e")
        self.sh = o3.SphericalHarmonics(self.irreps_sh, normalize=True,
                                        normalization="component")
        self.bessel = BesselBasis(self.r_max, c["num_basis"])
        layers, irreps = [], o3.Irreps(f"{f}x0e")
        for _ in range(c["num_layers"]):
            layers.append(Interaction(irreps, irreps_hidden, self.irreps_sh, c["num_basis"],
                                      c["radial_mlp_width"], c["radial_mlp_depth"],
                                      c["avg_num_neighbors"], c["kernel"], c["compile"]))
            irreps = layers[-1].irreps_out
        self.layers = nn.ModuleList(layers)
        self.head_1 = o3.Linear(irreps, f"{f // 2}x0e")
        self.head_2 = o3.Linear(f"{f // 2}x0e", "1x0e")
        self.register_buffer("scale", torch.ones(n_species))
        self.register_buffer("shift", torch.zeros(n_species))
        self.to(DTYPES[c["dtype"]])

    @classmethod
    def from_config(cls, config: dict) -> "NequIP":
        return cls(config)

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.config["dtype"]]

    def atomic_energies(self, species: torch.Tensor, vec: torch.Tensor,
                        edge_index: torch.Tensor) -> torch.Tensor:
        """Per-atom energies from species indices and edge vectors r_j - r_i (i = centre).

        The whole network, without the Batch and autograd wrapping of ``forward``: exported
        models (``synthpre.export``) call it from TorchScript on an engine's neighbour list.
        """
        r = torch.linalg.vector_norm(vec, dim=1)
        edge_sh = self.sh(vec)
        edge_radial = self.bessel(r) * polynomial_cutoff(r, self.r_max).unsqueeze(-1)
        x = self.embedding(nn.functional.one_hot(species, self.num_species).to(vec.dtype))
        for layer in self.layers:
            x = layer(x, edge_index, edge_sh, edge_radial)
        atomic = self.head_2(self.head_1(x)).squeeze(-1)
        return atomic * self.scale[species] + self.shift[species]

    @torch.jit.unused  # TorchScript compiles ``atomic_energies`` only (synthpre.export)
    def forward(self, batch: Batch, compute_stress: bool = False) -> dict[str, torch.Tensor]:
        n_struct = batch.n_atoms.shape[0]  # not int(): a traced step keeps it symbolic
        positions = batch.positions.detach().requires_grad_(True)
        centre, neighbour = batch.edge_index
        edge_cell = batch.cell[batch.batch[centre]]
        vec = positions[neighbour] - positions[centre] \
            + torch.einsum("ei,eij->ej", batch.shifts, edge_cell)
        inputs = [positions]
        if compute_stress:  # symmetric strain applied to every edge: dE/d(strain) = virial
            strain = torch.zeros(n_struct, 3, 3, dtype=vec.dtype, device=vec.device,
                                 requires_grad=True)
            sym = 0.5 * (strain + strain.transpose(1, 2))
            vec = vec + torch.einsum("ei,eij->ej", vec, sym[batch.batch[centre]])
            inputs.append(strain)

        atomic = self.atomic_energies(batch.species, vec, batch.edge_index)
        energy = torch.zeros(n_struct, dtype=atomic.dtype, device=atomic.device)
        energy = energy.index_add(0, batch.batch, atomic)

        grads = torch.autograd.grad(energy.sum(), inputs, create_graph=self.training)
        out = {"energy": energy, "forces": -grads[0], "atomic_energy": atomic}
        if compute_stress:
            volume = torch.linalg.det(batch.cell).abs()
            periodic = batch.pbc.all(dim=1)
            volume = torch.where(periodic, volume, torch.full_like(volume, float("nan")))
            out["stress"] = grads[1] / volume.view(-1, 1, 1)  # NaN for non-periodic cells
        return out


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)