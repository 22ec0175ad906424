"""The ``cueq`` convolution kernel: a layer's ``uvu`` tensor product, gather and scatter as one
cuequivariance segmented polynomial (NVIDIA's ``cuequivariance-torch``; CUDA kernels from
``cuequivariance-ops-torch-cu12`` on a GPU, its PyTorch fallback elsewhere).

The polynomial is built here from the layer's own e3nn instructions (path weights times e3nn's
Wigner 3j, e3nn's ``mul_ir`` layouts, one weight segment per instruction at e3nn's offsets), not
from cuequivariance's O3 basis, so it is the same function with the same parameters as the
``reference`` kernel: a model trained with ``cueq`` loads and runs with ``reference``/``fast``
(tests/test_kernels.py). Imported lazily: the core install has no cuequivariance.
"""
from __future__ import annotations

import torch
from e3nn import o3
from torch import nn

MISSING = ("model.kernel: cueq needs the packages cuequivariance and cuequivariance-torch "
           "(pinned in envs/gpu.txt, with cuequivariance-ops-torch-cu12 for the CUDA kernels; "
           "envs/test.txt has the CPU part): pip install -r envs/gpu.txt")


def _import():
    try:
        import cuequivariance as cue
        import cuequivariance_torch as cuet
    except ImportError as err:
        raise ImportError(f"{MISSING} ({err})") from err
    return cue, cuet


def _method() -> str:
    """CUDA kernels where the ops package is installed, PyTorch's einsums otherwise."""
    try:
        import cuequivariance_ops_torch  # noqa: F401
    except ImportError:
        return "naive"
    return "uniform_1d" if torch.cuda.is_available() else "naive"


class CueqConvolution(nn.Module):
    """sum over edges of uvu(h[neighbour], edge_sh; radial weights) in e3nn's ``mid`` layout,
    through one ``cuet.SegmentedPolynomial``: operands (weights, h, edge_sh) -> mid, h gathered
    by neighbour and the output scattered onto the centre atoms inside the polynomial. No
    parameters: the weights are the radial MLP's output, as in the reference kernel."""

    def __init__(self, irreps_in: o3.Irreps, irreps_sh: o3.Irreps, mid: o3.Irreps,
                 instructions: list, method: str | None = None):
        super().__init__()
        cue, cuet = _import()
        d = cue.SegmentedTensorProduct.from_subscripts("u,ui,j,uk+ijk")
        ins_seg = [d.add_segment(1, (mul, ir.dim)) for mul, ir in irreps_in]
        sh_seg = [d.add_segment(2, (ir.dim,)) for _, ir in irreps_sh]
        out_seg = [d.add_segment(3, (mul, ir.dim)) for mul, ir in mid]
        for ins in instructions:  # weight k at k*mul:(k+1)*mul, as e3nn lays them out
            assert ins.connection_mode == "uvu" and ins.has_weight
            mul = irreps_in[ins.i_in1].mul
            w_seg = d.add_segment(0, (mul,))
            l1, l2, l3 = (irreps_in[ins.i_in1].ir.l, irreps_sh[ins.i_in2].ir.l,
                          mid[ins.i_out].ir.l)
            w3j = ins.path_weight * o3.wigner_3j(l1, l2, l3, dtype=torch.float64)
            d.add_path(w_seg, ins_seg[ins.i_in1], sh_seg[ins.i_in2], out_seg[ins.i_out],
                       c=w3j.numpy())
        self.poly = cuet.SegmentedPolynomial(cue.SegmentedPolynomial.eval_last_operand(d),
                                             method=method or _method())
        # its coefficient buffers are constants rebuilt from the instructions: kept out of
        # the state dict, so model files are the same whichever kernel runs them
        for module in self.poly.modules():
            module._non_persistent_buffers_set.update(module._buffers)

    def forward(self, h: torch.Tensor, edge_index: torch.Tensor, edge_sh: torch.Tensor,
                weights: torch.Tensor) -> torch.Tensor:
        [out] = self.poly([weights, h, edge_sh], input_indices={1: edge_index[1]},
                          output_indices={0: edge_index[0]}, output_shapes={0: h[:, :1]})
        return out
