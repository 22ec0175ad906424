"""A NequIP-style equivariant potential (the architecture of NequIP 0.5.6 used in the paper).

Built directly on e3nn so that the parameter count matches the paper's model, not the
defaults of today's NequIP. Per layer: linear self-connection + convolution (``uvu`` tensor
product of neighbour features with edge spherical harmonics, weights from a radial MLP on a
trainable Bessel basis times a polynomial cutoff, summed with ``index_add_``), then a gate
nonlinearity and a residual update where the irreps allow it. Per-species scale and shift
are fixed buffers (1 and 0 by default) so one model moves between data sets unchanged.

Two kernels compute the convolution (``kernel`` in the config; same weights, same function):
``reference`` calls e3nn's ``TensorProduct`` (``Interaction.tp``) on gathered neighbour
features and sums with ``index_add_``: what ``fast`` is tested against (tests/test_kernels.py).
``fast``, the training default, evaluates the same tensor product by hand: per input irrep
block, the Wigner-3j coupling of all its paths is contracted with the edge harmonics once,
neighbour features are gathered in an (edge, component, channel) layout and combined by one
batched matmul, weighted and summed with ``index_add_``. Same function to float64 rounding,
any l_max. The per-edge part is a custom autograd Function whose backward is again a
Function with a hand-written backward (the second derivative training needs for force
losses): neither saves per-edge products, they recompute them, so a training step keeps ~3x
fewer bytes per edge alive than autograd of the plain ops did, and is no slower
(docs/benchmarks.md, issue 4). TorchScript cannot compile a custom Function: scripted
(exported, ``synthpre.export``) models run the same arithmetic as plain ops, with autograd
for the forces.

``compile`` (config, fast kernel only) runs the per-edge bodies of those Functions through
``torch.compile``: Inductor fuses each body's gathers, products and sums into a few loops
instead of one memory-bound pass per op, ~2.2x faster training steps on CPU at the paper's
size. Only the bodies are compiled, not the model: the derivatives stay the hand-written
ones, so the double backward of a force loss (which AOTAutograd cannot do through a compiled
region) works unchanged. On a GPU the step is launch-bound and this does not help
(docs/benchmarks.md, issue 14).

Parameter count at the paper's settings (species ["C"], r_max 4, 4 layers, 32 features,
l_max 1, parity, 8 Bessel functions) with NequIP 0.5.6's radial MLP of one hidden layer of
8 neurons: 73,784, the paper's ~74 k. (Two hidden layers of 64, today's default, give 136,760.)
"""
from __future__ import annotations

import math
from typing import List

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet, Gate
from torch import nn

from .graph import Batch

DTYPES = {"float32": torch.float32, "float64": torch.float64}

# A model's whole definition: the config's ``model`` section (the schema holds the defaults)
# plus what a training job measures (species of the data, mean neighbours within r_max).
CONFIG_KEYS = ("species", "r_max", "num_layers", "num_features", "l_max", "parity", "num_basis",
               "radial_mlp_width", "radial_mlp_depth", "avg_num_neighbors", "dtype", "kernel",
               "compile")
KERNELS = ("fast", "reference")


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


def _fused() -> bool:
    """True while torch.compile traces a kernel body: broadcast products then fuse with the
    surrounding gathers, weights and sums into one loop, while in eager mode a batched matmul
    (one call instead of several materialised temporaries) is the faster form."""
    return torch.compiler.is_compiling()


def _yx(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """t[e, c, u] = sum_i y[e, c, i] x[e, i, u]: (E, D, d) x (E, d, u) -> (E, D, u)."""
    if _fused():
        return (y.unsqueeze(-1) * x.unsqueeze(1)).sum(2)
    if y.shape[2] == 1:  # a matmul with inner size 1 is slow on CPU: broadcast instead
        return y * x
    return torch.bmm(y, x)


def _ytg(y: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """sum_c y[e, c, i] g[e, c, u]: (E, D, d) x (E, D, u) -> (E, d, u)."""
    if _fused():
        return (y.unsqueeze(-1) * g.unsqueeze(2)).sum(1)
    if y.shape[2] == 1:
        return (y * g).sum(1, keepdim=True)
    return torch.bmm(y.transpose(1, 2), g)


def _gxt(g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """sum_u g[e, c, u] x[e, i, u]: (E, D, u) x (E, d, u) -> (E, D, d)."""
    if _fused():
        return (g.unsqueeze(2) * x.unsqueeze(1)).sum(-1)
    return torch.bmm(g, x.transpose(1, 2))


def _per_column(wp, paths):
    """Radial weights per path (E, P, u) -> per output column (E, D, u): column c belongs to
    path paths[c] (when compiled, an indexed load inside the loop that uses it)."""
    return wp.index_select(1, paths)


def _per_path(gw, paths, n_paths: int):
    """The transpose of ``_per_column``: (E, D, u) -> (E, P, u), summing each path's columns."""
    return gw.new_zeros(gw.shape[0], n_paths, gw.shape[2]).index_add_(1, paths, gw)


def _conv_forward(x, y, wp, paths, centre, n_nodes: int):
    """out[n, c, u] = sum_{e: centre(e) = n} w[e, c, u] sum_i y[e, c, i] x[e, i, u], with
    w = wp[:, paths] (radial weights per path, shared by a path's output columns)."""
    msg = _yx(y, x).mul_(_per_column(wp, paths))                                # (E, D, u)
    return msg.new_zeros(n_nodes, msg.shape[1], msg.shape[2]).index_add_(0, centre, msg)


def _conv_backward(grad, x, y, wp, paths, centre):
    """(dx, dy, dwp) of ``_conv_forward`` given its output gradient ``grad``."""
    gm = grad.index_select(0, centre)                                           # (E, D, u)
    gmw = gm * _per_column(wp, paths)
    return _ytg(y, gmw), _gxt(gmw, x), _per_path(gm.mul_(_yx(y, x)), paths, wp.shape[1])


def _conv_double_backward(grad, x, y, wp, paths, centre, a, b, gp, need_g: bool,
                          need_x: bool, need_w: bool):
    """a, b, gp: gradients w.r.t. ``_conv_backward``'s (dx, dy, dwp); returns those w.r.t.
    (grad, x, wp) (y is constant here: see ``_EdgeConv.backward``).

    Eager, for d_in = 3, pairs of batched products are fused into one (concatenated along
    the inner dimension): one larger matmul is much cheaper on CPU than two thin ones.
    """
    w = _per_column(wp, paths)
    g = None if gp is None else _per_column(gp, paths)
    gm = grad.index_select(0, centre)                                           # (E, D, u)
    d_in = x.shape[1]
    # s[e, c, u] = sum_i y[e, c, i] a[e, i, u] + b[e, c, i] x[e, i, u]
    pairs = [(m, n) for m, n in ((y, a), (b, x)) if m is not None and n is not None]
    if not pairs:
        s = None
    elif _fused():
        s = sum(_yx(m, n) for m, n in pairs)
    elif d_in == 1:
        s = pairs[0][0] * pairs[0][1]
        if len(pairs) == 2:
            s.addcmul_(pairs[1][0], pairs[1][1])
    else:
        s = torch.bmm(torch.cat([m for m, _ in pairs], 2),
                      torch.cat([n for _, n in pairs], 1))
    d_grad = d_x = d_w = None
    if need_g and (s is not None or g is not None):
        dgm = s * w if s is not None else None
        if g is not None:
            t = _yx(y, x).mul_(g)
            dgm = t if dgm is None else dgm.add_(t)
        d_grad = torch.zeros_like(grad).index_add_(0, centre, dgm)
    if need_w and s is not None:
        d_w = _per_path(s.mul_(gm), paths, wp.shape[1])
    if need_x and (b is not None or g is not None):  # b^T (G w) + y^T (g G)
        if b is not None and g is not None:
            if _fused():
                d_x = _ytg(b, gm * w) + _ytg(y, gm * g)
            else:  # (mul into out= slices is 10x slower)
                d_x = _ytg(torch.cat([b, y], 1), torch.cat([gm * w, gm.mul_(g)], 1))
        elif b is not None:
            d_x = _ytg(b, gm.mul_(w))
        else:
            d_x = _ytg(y, gm.mul_(g))
    return d_grad, d_x, d_w


_BODIES = {"forward": _conv_forward, "backward": _conv_backward,
           "double_backward": _conv_double_backward}
_COMPILED_BODIES: dict = {}


def _body(name: str, compiled: bool):
    """A kernel body, eager or through torch.compile (Inductor: C++ on CPU, Triton on GPU).
    Compiled once per process and variant (dtype, d_in = 1 or more, which gradients are
    asked for): edge and atom counts are dynamic, so batches of other sizes reuse the code.
    Past Dynamo's recompile limit a further variant runs eagerly: the same function
    (``_fused`` is false there), only slower."""
    if not compiled:
        return _BODIES[name]
    if name not in _COMPILED_BODIES:
        compiled_body = torch.compile(_BODIES[name], dynamic=True)

        def run(*args):
            try:
                return compiled_body(*args)
            except torch._dynamo.exc.BackendCompilerFailed as err:
                raise RuntimeError(
                    f"model.compile: torch.compile could not build the fast kernel "
                    f"({str(err).splitlines()[0]}); Inductor needs a C++ compiler on CPU "
                    f"(Triton on GPU). Set model.compile: false to run it eagerly") from err
        _COMPILED_BODIES[name] = run
    return _COMPILED_BODIES[name]


class _EdgeConv(torch.autograd.Function):
    """out[n, c, u] = sum_{e: centre(e) = n} w[e, c, u] sum_i y[e, c, i] x[e, i, u].

    x (E, d_in, u): neighbour features per edge; y (E, D, d_in): edge harmonics times the
    coupling; w (E, D, u): radial weights per output column. Only the inputs are saved (no
    (E, D, u) product), and the backward is itself a Function (``_EdgeConvBackward``) that
    saves only its inputs too, so the force pass (create_graph) keeps no per-edge
    intermediates for the parameter gradients: they are recomputed, which is cheaper on CPU
    than writing and reading them back. ``compiled``: run the bodies through torch.compile
    (same arithmetic; the derivatives stay the hand-written ones, so the double backward a
    force loss needs works as in eager mode).
    """

    @staticmethod
    def forward(ctx, x, y, w, paths, centre, n_nodes: int, compiled: bool = False):
        ctx.set_materialize_grads(False)
        ctx.compiled = compiled
        ctx.save_for_backward(x, y, w, paths, centre)
        return _body("forward", compiled)(x, y, w, paths, centre, n_nodes)

    @staticmethod
    def backward(ctx, grad):
        if grad is None:
            return None, None, None, None, None, None, None
        x, y, w, paths, centre = ctx.saved_tensors
        # y (edge harmonics x coupling) depends on the geometry only: its second-order
        # gradient could only reach the positions / strain leaves made inside
        # ``NequIP.forward``, which nobody can read, so the force pass treats it as constant
        gx, gy, gw = _EdgeConvBackward.apply(grad.contiguous(), x, y.detach(), w, paths,
                                             centre, ctx.compiled)
        return gx, gy, gw, None, None, None, None


class _EdgeConvBackward(torch.autograd.Function):
    """(dx, dy, dw) of ``_EdgeConv`` given its output gradient G; differentiable in G, x
    and w (not y: see ``_EdgeConv.backward``)."""

    @staticmethod
    def forward(ctx, grad, x, y, w, paths, centre, compiled: bool = False):
        ctx.set_materialize_grads(False)
        ctx.compiled = compiled
        ctx.save_for_backward(grad, x, y, w, paths, centre)
        return _body("backward", compiled)(grad, x, y, w, paths, centre)

    @staticmethod
    def backward(ctx, a, b, g):
        grad, x, y, w, paths, centre = ctx.saved_tensors
        need_g, need_x, _, need_w = ctx.needs_input_grad[:4]
        d_grad, d_x, d_w = _body("double_backward", ctx.compiled)(
            grad, x, y, w, paths, centre, a, b, g, need_g, need_x, need_w)
        return d_grad, d_x, None, d_w, None, None, None


def _gather(h: torch.Tensor, neighbour: torch.Tensor, start: int, stop: int, u: int,
            d_in: int) -> torch.Tensor:
    """Features h[:, start:stop] of each edge's neighbour as (E, d_in, u), channel innermost."""
    x = h[:, start:stop].reshape(h.shape[0], u, d_in).transpose(1, 2).contiguous()
    return x.index_select(0, neighbour)


class _ConvBlock(nn.Module):
    """One input irrep block of the fast kernel: where it reads h (columns start:stop, u
    channels of dimension d_in), its coupling matrix (SH dim, width x d_in) and the path
    (instruction) whose radial weights each of its width output components takes. Constants
    only: no state-dict entries."""

    def __init__(self, start: int, stop: int, u: int, d_in: int, width: int,
                 coupling: torch.Tensor, col_paths: list):
        super().__init__()
        self.start, self.stop, self.u, self.d_in, self.width = start, stop, u, d_in, width
        self.register_buffer("coupling", coupling, persistent=False)
        self.register_buffer("col_paths", torch.tensor(col_paths), persistent=False)
        # this block's paths are consecutive instructions: radial-MLP outputs
        # first_path * u : (first_path + n_paths) * u, one weight row per path
        self.first_path, self.n_paths = min(col_paths), max(col_paths) - min(col_paths) + 1
        assert len(set(col_paths)) == self.n_paths
        self.register_buffer("local_paths", torch.tensor(col_paths) - self.first_path,
                             persistent=False)


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
        self._build_convolution(irreps_in, irreps_sh, mid)

    def _build_convolution(self, irreps_in: o3.Irreps, irreps_sh: o3.Irreps, mid: o3.Irreps):
        """Per input block: one coupling matrix for all its paths, so each edge needs one
        batched matmul per block instead of one small einsum per path (e3nn's codegen, whose
        zero-filled slice backwards and small-inner-dimension multiplies dominated a step).

        ``coupling[j, i, c]`` = path weight x Wigner 3j (i input, j edge SH, c output
        component) with e3nn's normalisation taken from ``self.tp.instructions``; the result
        is the same function as ``self.tp`` (kept for its instructions and state-dict keys).
        """
        blocks, mid_cols = [], {}  # mid_cols: i_out -> (block, first column, end column)
        path_order = []  # instruction indices in block order (weights laid out so)
        sh_slices = irreps_sh.slices()
        for i, ((mul, ir_in), sl) in enumerate(zip(irreps_in, irreps_in.slices())):
            paths = [(k, ins) for k, ins in enumerate(self.tp.instructions) if ins.i_in1 == i]
            if not paths:
                continue
            width = sum(mid[ins.i_out].ir.dim for _, ins in paths)
            coupling = torch.zeros(irreps_sh.dim, ir_in.dim, width, dtype=torch.float64)
            col_path, start = [], 0
            for p, (k, ins) in enumerate(paths):
                ir_sh, ir_out = irreps_sh[ins.i_in2].ir, mid[ins.i_out].ir
                w3j = o3.wigner_3j(ir_in.l, ir_sh.l, ir_out.l, dtype=torch.float64)
                coupling[sh_slices[ins.i_in2], :, start:start + ir_out.dim] = \
                    ins.path_weight * w3j.transpose(0, 1)
                mid_cols[ins.i_out] = (len(blocks), start, start + ir_out.dim)
                col_path += [p] * ir_out.dim
                start += ir_out.dim
                path_order.append(k)
            # radial MLP output k*mul:(k+1)*mul is instruction k's weight (as in e3nn), so
            # seen as (paths, mul) output component c of this block reads row k(path(c))
            col_paths = [paths[p][0] for p in col_path]
            # laid out so that edge_sh @ coupling is (E, width, d_in) contiguous: the
            # per-edge (width x d_in) @ (d_in x u) products are 2x faster than transposed
            blocks.append(_ConvBlock(sl.start, sl.stop, mul, ir_in.dim, width,
                                     coupling.transpose(1, 2).reshape(irreps_sh.dim, -1),
                                     col_paths))
        # radial MLP output k*mul:(k+1)*mul is instruction k's weight (as in e3nn); the
        # instructions are listed input block by input block, so the blocks split it in order
        assert path_order == list(range(len(self.tp.instructions)))
        assert len({b.u for b in blocks}) == 1  # one multiplicity: weight k at k*mul
        self.conv_blocks = nn.ModuleList(blocks)
        self.mid_order = [mid_cols[i] for i in range(len(mid))]

    def convolution(self, h: torch.Tensor, edge_index: torch.Tensor, edge_sh: torch.Tensor,
                    edge_radial: torch.Tensor) -> torch.Tensor:
        """sum over edges of uvu(h[neighbour], edge_sh; weights), in ``mid`` layout (N, dim)."""
        if self.kernel == "reference":
            return self._reference_convolution(h, edge_index, edge_sh, edge_radial)
        if torch.jit.is_scripting():  # exported models: the same arithmetic, plain ops
            return self._fast_convolution_plain(h, edge_index, edge_sh, edge_radial)
        return self._fast_convolution(h, edge_index, edge_sh, edge_radial)

    def _reference_convolution(self, h: torch.Tensor, edge_index: torch.Tensor,
                               edge_sh: torch.Tensor, edge_radial: torch.Tensor) -> torch.Tensor:
        """e3nn's TensorProduct per edge, summed onto the centre atoms (TorchScript-able)."""
        msg = self.tp(h.index_select(0, edge_index[1]), edge_sh, self.radial(edge_radial))
        return msg.new_zeros(h.shape[0], msg.shape[1]).index_add(0, edge_index[0], msg)

    @torch.jit.unused  # a custom autograd Function: TorchScript runs the plain-op form below
    def _fast_convolution(self, h, edge_index, edge_sh, edge_radial):  # (no annotations:
        # TorchScript cannot resolve the postponed ones of an unused method; all are Tensors)
        """The hand-written kernel (module docstring), for training and synthpre's calculator.

        Edge tensors are laid out (E, component, channel): the channel (32) is the innermost,
        contiguous dimension, so every elementwise op vectorises over it; e3nn's
        (channel, component) layout is restored per node, after the sum over edges.
        """
        centre, neighbour = edge_index
        n_nodes, n_edges = h.shape[0], edge_sh.shape[0]
        *layers, last = self.radial  # e3nn FullyConnectedNet: _Layers, the last linear
        hidden = edge_radial
        for layer in layers:
            hidden = layer(hidden)
        # the last layer's normalised weight matrix, through its public forward (an identity
        # input) rather than e3nn's private normalisation fields; exact, and differentiable
        last_weight = last(torch.eye(last.weight.shape[0], dtype=hidden.dtype,
                                     device=hidden.device))
        sums = []
        for b in self.conv_blocks:
            # radial weights per path (E, paths, u): the kernel reads each path's weight
            # for all its output components (an indexed load when compiled), so the
            # per-edge matmul and its gradients are 2x narrower than per column
            first, n_paths = b.first_path, b.n_paths
            w_block = last_weight[:, first * b.u:(first + n_paths) * b.u]
            wp = (hidden @ w_block).view(n_edges, n_paths, b.u)
            y = (edge_sh @ b.coupling).view(n_edges, b.width, b.d_in)
            x = _gather(h, neighbour, b.start, b.stop, b.u, b.d_in)
            sums.append(_EdgeConv.apply(x, y, wp, b.local_paths, centre, n_nodes,
                                        self.compiled))
        return self._to_mid_layout(sums, n_nodes)

    def _fast_convolution_plain(self, h: torch.Tensor, edge_index: torch.Tensor,
                                edge_sh: torch.Tensor, edge_radial: torch.Tensor) -> torch.Tensor:
        """``_fast_convolution`` without the custom Function (TorchScript cannot compile one):
        autograd of these ops gives the forces. The radial weights are gathered per edge from
        the MLP's output (TorchScript cannot split e3nn's FullyConnectedNet), whole channel
        rows at a time (a gather per column made 216-atom MD steps ~1.2x slower).
        """
        n_nodes, n_edges = h.shape[0], edge_sh.shape[0]
        weights = self.radial(edge_radial)
        sums: List[torch.Tensor] = []
        for b in self.conv_blocks:
            w = weights.view(n_edges, -1, b.u).index_select(1, b.col_paths)  # (E, width, u)
            y = (edge_sh @ b.coupling).view(n_edges, b.width, b.d_in)
            msg = _yx(y, _gather(h, edge_index[1], b.start, b.stop, b.u, b.d_in)) * w
            sums.append(msg.new_zeros(n_nodes, b.width, b.u).index_add(0, edge_index[0], msg))
        return self._to_mid_layout(sums, n_nodes)

    def _to_mid_layout(self, sums: List[torch.Tensor], n_nodes: int) -> torch.Tensor:
        """Per-block sums (N, width, u) -> (N, mid.dim) in e3nn's (channel, component) order."""
        parts: List[torch.Tensor] = []
        for n, first, end in self.mid_order:
            parts.append(sums[n][:, first:end].transpose(1, 2).reshape(n_nodes, -1))
        return torch.cat(parts, dim=1)

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
        n_struct = batch.num_structures
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
