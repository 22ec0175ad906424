"""The whole training step's forward in one graph: energies, forces (by autograd) and the loss,
traced once and compiled, so that only a first-order backward for the parameters remains.

Why: a training step of the eager model dispatches thousands of small ops (~8,800 leaf aten
ops at the paper's size, forward + force pass + double backward + Adam): on a GPU each is a
kernel launch and the step is launch-bound (docs/benchmarks.md, "GPU"). Compiling the kernel
bodies alone cannot help, because the force pass (``torch.autograd.grad`` with
``create_graph``) and its double backward stay outside any graph.

How (the approach of NequIP's compile mode): ``torch.fx.experimental.proxy_tensor.make_fx``
traces ``NequIP.forward`` *including* its ``autograd.grad`` for the forces, with symbolic
atom, edge and structure counts. The result is a plain graph of aten ops (the fast kernel's
hand-written backward appears as ordinary ops) whose inputs are the parameters, the buffers
and the batch's tensors, and whose outputs are the loss, energies and forces. That graph is a
first-order function of the parameters: ``torch.compile`` (AOTAutograd + Inductor) builds its
forward and its parameter backward as compiled code, once per dtype and per set of trainable
parameters (frozen fine-tuning differs from full), with dynamic shapes: batches of any size
reuse it, no padding.

While tracing, the fast kernel's bodies take the broadcast forms their own torch.compile
path uses (``kernel._fused``; Inductor fuses them into loops) and write no temporary in
place (``kernel._Tracing``). On a CPU at the paper's size it
dispatches far fewer ops than eager and beats eager per CPU second, but loses to the op-by-op
step with compiled bodies and takes minutes to trace and compile (numbers in
docs/benchmarks.md): so ``train.capture: auto`` takes it on a GPU only
(``trainer.captured_step``).

The captured step computes the same function as ``loss_fn(model(batch), ...)`` (to float
rounding; tests/test_capture.py checks loss, forces and parameter gradients in float64), so
training with it or without changes no result: it is a run option (``train.capture``).
Parameters are read at every call (not baked into the graph), so optimiser steps, EMA
swaps, resumed checkpoints and DDP's summed gradients work unchanged.
"""
from __future__ import annotations

import torch
from torch import nn

from .graph import Batch
from .kernel import _Tracing

# batch fields the traced graph reads, in order (energy and forces are the targets), with
# their one size that varies from batch to batch (atoms, structures or edges)
_FIELDS = {"species": 0, "positions": 0, "cell": 0, "pbc": 0, "edge_index": 1, "shifts": 0,
           "batch": 0, "n_atoms": 0, "energy": 0, "forces": 0}


_GRAPHS: dict = {}  # traced and compiled steps of this process, by model structure


def _named_state(model: nn.Module):
    return list(model.named_parameters()) + list(model.named_buffers())


class CapturedStep:
    """``step(batch, energy_weight, totals)`` -> (loss, energy, forces), the loss
    differentiable in the model's parameters; the same function as
    ``loss_fn(model(batch), batch, energy_weight, totals)``.

    ``backend``: torch.compile's backend for the traced graph (``inductor``: compiled code;
    ``aot_eager``: AOTAutograd without code generation, for quick checks). One graph per (dtype, device, trainable
    parameters); its shapes are symbolic, so batches of other sizes reuse it.
    """

    def __init__(self, model: nn.Module, backend: str = "inductor"):
        self.model = model
        self.backend = backend

    def _names(self):
        params = [n for n, _ in self.model.named_parameters()]
        buffers = [n for n, _ in self.model.named_buffers()]
        return params, buffers

    def _trace(self, example: tuple, n_state: int):
        from torch.fx.experimental.proxy_tensor import make_fx
        from torch.func import functional_call

        model = self.model
        params, buffers = self._names()

        def forward(*args):
            state = dict(zip(params + buffers, args[:n_state]))
            fields = dict(zip(_FIELDS, args[n_state:n_state + len(_FIELDS)]))
            # 1 / (3 atoms), energy_weight / structures of the whole batch: 0-d tensors, so
            # that other totals reuse the graph (a Python number would be baked into it)
            force_norm, energy_norm = args[-2:]
            batch = Batch(**fields)
            with _eager_kernel(model):
                out = functional_call(model, state, (batch,))
            force_sse = (out["forces"] - batch.forces).pow(2).sum()
            energy_sse = ((out["energy"] - batch.energy) / batch.n_atoms).pow(2).sum()
            loss = force_sse * force_norm + energy_sse * energy_norm
            return loss, out["energy"], out["forces"]

        # the graph keeps the kernel's in-place ops on its temporaries: AOTAutograd
        # functionalises it before differentiating it
        graph = make_fx(forward, tracing_mode="symbolic")(*_symbolic(example, n_state))
        return torch.compile(graph, backend=self.backend, dynamic=True, fullgraph=True)

    def __call__(self, batch: Batch, energy_weight: float,
                 totals: tuple[int, int] | None = None):
        model = self.model
        n_atoms, n_struct = totals or (batch.forces.shape[0], batch.energy.shape[0])
        state = [p for _, p in model.named_parameters()] + [b for _, b in model.named_buffers()]
        dtype = batch.positions.dtype
        norm = [torch.tensor(v, dtype=dtype, device=batch.positions.device)
                for v in (1.0 / (3 * n_atoms), energy_weight / n_struct)]
        fields = [getattr(batch, f) for f in _FIELDS]
        for t, dim in zip(fields, _FIELDS.values()):  # a size of 1 is Dynamo's own case
            if t.shape[dim] > 1:
                torch._dynamo.maybe_mark_dynamic(t, dim)
        args = (*state, *fields, *norm)
        # the graph depends on the model's structure only (its weights are inputs): models
        # of one structure in one process (the EMA copy, a fresh one after a resume, a test's
        # second model) share it and its compiled code
        key = (self.backend, _Tracing.fused, repr(sorted(getattr(model, "config", {}).items())),
               tuple((n, tuple(t.shape), t.dtype) for n, t in _named_state(model)),
               dtype, batch.positions.device.type, model.training,
               tuple(p.requires_grad for p in model.parameters()))
        if key not in _GRAPHS:
            _GRAPHS[key] = self._trace(args, len(state))
        return _GRAPHS[key](*args)


def _symbolic(example: tuple, n_state: int) -> list:
    """Fake tensors to trace with: the parameters and buffers with their fixed shapes, the
    batch's tensors with a symbol for their varying size (and fixed 3s and 2s), so that the
    graph holds for any batch (make_fx's own symbolic mode would give every size a symbol and
    merge equal ones: two structures and the 2 of ``edge_index`` would become one size)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import (DimDynamic, ShapeEnv,
                                                       StatelessSymbolicContext)
    mode = FakeTensorMode(shape_env=ShapeEnv())
    dims = [None] * n_state + list(_FIELDS.values()) + [None, None]
    out = []
    for t, dim in zip(example, dims):
        sizes = [DimDynamic.DYNAMIC if d == dim else DimDynamic.STATIC for d in range(t.dim())]
        out.append(mode.from_tensor(t.detach() if dim is None else t,
                                    symbolic_context=StatelessSymbolicContext(sizes)))
    return out


class _eager_kernel:
    """While tracing, the fast kernel's bodies run as plain, out-of-place ops (a
    torch.compile'd body cannot be traced by make_fx; the whole graph is compiled afterwards
    instead; ``kernel._Tracing`` says why out of place)."""

    def __init__(self, model: nn.Module):
        self.layers = [m for m in model.modules() if hasattr(m, "compiled")]

    def __enter__(self):
        _Tracing.active = True
        self.saved = [m.compiled for m in self.layers]
        for m in self.layers:
            m.compiled = False

    def __exit__(self, *exc):
        _Tracing.active = False
        for m, c in zip(self.layers, self.saved):
            m.compiled = c
