"""The fast convolution kernel: a hand-written autograd Function for NequIP's ``uvu``
convolution, and ``FastConvolution``, the module that lays a layer's tensor product out for it.

Kept beside ``model.py`` (the architecture) because it is plumbing, not physics: the same
function as e3nn's ``TensorProduct`` + ``index_add_`` (the ``reference`` kernel, tested against
it in tests/test_kernels.py), and the place further kernels live.

Per input irrep block, the Wigner-3j coupling of all its paths is contracted with the edge
harmonics once, neighbour features are gathered in an (edge, component, channel) layout and
combined by one batched matmul, weighted and summed with ``index_add_``. Same function to
float64 rounding, any l_max. The per-edge part is a custom autograd Function whose backward is
again a Function with a hand-written backward (the second derivative training needs for force
losses): neither saves per-edge products, they recompute them, so a training step keeps ~3x
fewer bytes per edge alive than autograd of the plain ops did, and is no slower
(docs/benchmarks.md, issue 4). TorchScript cannot compile a custom Function: scripted
(exported, ``synthpre.export``) models run the same arithmetic as plain ops
(``FastConvolution.plain``), with autograd for the forces.

``compiled`` (``model.compile``) runs the per-edge bodies of those Functions through
``torch.compile``: Inductor fuses each body's gathers, products and sums into a few loops
instead of one memory-bound pass per op, ~2.2x faster training steps on CPU at the paper's
size. Only the bodies are compiled, not the model: the derivatives stay the hand-written
ones, so the double backward of a force loss (which AOTAutograd cannot do through a compiled
region) works unchanged. On a GPU the step is launch-bound and this does not help
(docs/benchmarks.md, issue 14).
"""
from __future__ import annotations

from typing import List

import torch
from e3nn import o3
from torch import nn

class _Tracing:
    """Set while ``synthpre.capture`` traces a training step: the bodies below then write no
    temporary in place. Eagerly they run inside a Function (no autograd of their own), where
    in-place products save memory; traced, they become ordinary ops that AOTAutograd
    differentiates again, and a tensor changed in place after another op saved it for its
    backward cannot be differentiated. ``fused``: trace the broadcast forms of ``_fused``,
    which Inductor fuses into loops: a captured paper-size step 1.75x faster per CPU second
    than with the batched matmuls traced (docs/benchmarks.md, issue 19)."""
    active = False
    fused = True


def _fused() -> bool:
    """True while torch.compile traces a kernel body: broadcast products then fuse with the
    surrounding gathers, weights and sums into one loop, while in eager mode a batched matmul
    (one call instead of several materialised temporaries) is the faster form. An exported
    (TorchScript) model runs eagerly: the script compiler skips the rest (``_Tracing`` is a
    Python class it cannot read)."""
    if torch.jit.is_scripting():
        return False
    return torch.compiler.is_compiling() or (_Tracing.active and _Tracing.fused)


def _mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a * b, into a (a temporary of the caller's) unless a step is being traced."""
    return a * b if _Tracing.active else a.mul_(b)


def _add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a + b if _Tracing.active else a.add_(b)


def _addcmul(s: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.addcmul(s, a, b) if _Tracing.active else s.addcmul_(a, b)


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
    msg = _mul(_yx(y, x), _per_column(wp, paths))                                # (E, D, u)
    return msg.new_zeros(n_nodes, msg.shape[1], msg.shape[2]).index_add_(0, centre, msg)


def _conv_backward(grad, x, y, wp, paths, centre):
    """(dx, dy, dwp) of ``_conv_forward`` given its output gradient ``grad``."""
    gm = grad.index_select(0, centre)                                           # (E, D, u)
    gmw = gm * _per_column(wp, paths)
    return _ytg(y, gmw), _gxt(gmw, x), _per_path(_mul(gm, _yx(y, x)), paths, wp.shape[1])


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
            s = _addcmul(s, pairs[1][0], pairs[1][1])
    else:
        s = torch.bmm(torch.cat([m for m, _ in pairs], 2),
                      torch.cat([n for _, n in pairs], 1))
    d_grad = d_x = d_w = None
    if need_g and (s is not None or g is not None):
        dgm = s * w if s is not None else None
        if g is not None:
            t = _mul(_yx(y, x), g)
            dgm = t if dgm is None else _add(dgm, t)
        d_grad = torch.zeros_like(grad).index_add_(0, centre, dgm)
    if need_w and s is not None:
        d_w = _per_path(_mul(s, gm), paths, wp.shape[1])
    if need_x and (b is not None or g is not None):  # b^T (G w) + y^T (g G)
        if b is not None and g is not None:
            if _fused():
                d_x = _ytg(b, gm * w) + _ytg(y, gm * g)
            else:  # (mul into out= slices is 10x slower)
                d_x = _ytg(torch.cat([b, y], 1), torch.cat([gm * w, _mul(gm, g)], 1))
        elif b is not None:
            d_x = _ytg(b, _mul(gm, w))
        else:
            d_x = _ytg(y, _mul(gm, g))
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


class FastConvolution(nn.Module):
    """The fast kernel of one ``Interaction``: its input blocks (``_ConvBlock``, constants only,
    so no state-dict entries: model files are the same whichever kernel runs them) and the
    order in which their sums form e3nn's ``mid`` layout."""

    def __init__(self, irreps_in: o3.Irreps, irreps_sh: o3.Irreps, mid: o3.Irreps,
                 instructions: list):
        """Per input block: one coupling matrix for all its paths, so each edge needs one
        batched matmul per block instead of one small einsum per path (e3nn's codegen, whose
        zero-filled slice backwards and small-inner-dimension multiplies dominated a step).

        ``coupling[j, i, c]`` = path weight x Wigner 3j (i input, j edge SH, c output
        component) with e3nn's normalisation taken from ``instructions`` (those of the
        layer's ``TensorProduct``); the result is the same function as that tensor product.
        """
        super().__init__()
        blocks, mid_cols = [], {}  # mid_cols: i_out -> (block, first column, end column)
        path_order = []  # instruction indices in block order (weights laid out so)
        sh_slices = irreps_sh.slices()
        for i, ((mul, ir_in), sl) in enumerate(zip(irreps_in, irreps_in.slices())):
            paths = [(k, ins) for k, ins in enumerate(instructions) if ins.i_in1 == i]
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
        assert path_order == list(range(len(instructions)))
        assert len({b.u for b in blocks}) == 1  # one multiplicity: weight k at k*mul
        self.conv_blocks = nn.ModuleList(blocks)
        self.mid_order = [mid_cols[i] for i in range(len(mid))]

    @torch.jit.unused  # a custom autograd Function: TorchScript runs ``plain`` instead
    def forward(self, h, edge_index, edge_sh, hidden, last_weight, compiled=False):  # (no
        # annotations: TorchScript cannot resolve the postponed ones of an unused method)
        """The hand-written kernel (module docstring), for training and synthpre's calculator.

        Edge tensors are laid out (E, component, channel): the channel (32) is the innermost,
        contiguous dimension, so every elementwise op vectorises over it; e3nn's
        (channel, component) layout is restored per node, after the sum over edges.
        ``hidden`` (E, width): the radial MLP's last hidden layer; ``last_weight``: its last
        linear layer as a matrix. ``compiled``: the per-edge bodies through torch.compile.
        """
        centre, neighbour = edge_index
        n_nodes, n_edges = h.shape[0], edge_sh.shape[0]
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
                                        compiled))
        return self.to_mid_layout(sums, n_nodes)

    def plain(self, h: torch.Tensor, edge_index: torch.Tensor, edge_sh: torch.Tensor,
              weights: torch.Tensor) -> torch.Tensor:
        """``forward`` without the custom Function (TorchScript cannot compile one): autograd
        of these ops gives the forces. ``weights``: the radial MLP's output (TorchScript
        cannot split e3nn's FullyConnectedNet), gathered per edge whole channel rows at a time
        (a gather per column made 216-atom MD steps ~1.2x slower).
        """
        n_nodes, n_edges = h.shape[0], edge_sh.shape[0]
        sums: List[torch.Tensor] = []
        for b in self.conv_blocks:
            w = weights.view(n_edges, -1, b.u).index_select(1, b.col_paths)  # (E, width, u)
            y = (edge_sh @ b.coupling).view(n_edges, b.width, b.d_in)
            msg = _yx(y, _gather(h, edge_index[1], b.start, b.stop, b.u, b.d_in)) * w
            sums.append(msg.new_zeros(n_nodes, b.width, b.u).index_add(0, edge_index[0], msg))
        return self.to_mid_layout(sums, n_nodes)

    def to_mid_layout(self, sums: List[torch.Tensor], n_nodes: int) -> torch.Tensor:
        """Per-block sums (N, width, u) -> (N, mid.dim) in e3nn's (channel, component) order."""
        parts: List[torch.Tensor] = []
        for n, first, end in self.mid_order:
            parts.append(sums[n][:, first:end].transpose(1, 2).reshape(n_nodes, -1))
        return torch.cat(parts, dim=1)
