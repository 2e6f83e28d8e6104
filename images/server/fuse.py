"""Fused projections: one matmul where the model's code asks for two or three.

Decoder layers of the Llama family (Llama, Mistral, Qwen2/3, Gemma, Phi-3 style
MLPs...) project the same hidden states several times in a row:
``q_proj(x)``, ``k_proj(x)``, ``v_proj(x)`` in attention and ``gate_proj(x)``,
``up_proj(x)`` in the MLP. Serving engines (vLLM's ``QKVParallelLinear`` and
``MergedColumnParallelLinear``) stack those weights and run one matmul. At the
batch sizes of a decode step a matmul is mostly fixed cost (dispatch, weight
reads), so one call instead of three is measurably faster; see
docs/performance.md.

The model's own forward code stays as it is. Each fused group replaces its
projections with small modules that share one stacked weight: the first call
for an input tensor computes all the outputs at once and keeps them; the
sibling calls with the *same* tensor object return their slice. A call with
any other tensor computes only its own slice, so the result is always what the
separate projections would give (same weights, same input, one matmul).

Only plain ``nn.Linear`` layers with the same input width, dtype, device and
bias presence are fused; anything else (quantized layers, LoRA wrappers,
mixed dtypes) is left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

log = logging.getLogger("ezrunner_server")

# (names that read the same input, in the order the model calls them)
GROUPS: tuple[tuple[str, ...], ...] = (
    ("q_proj", "k_proj", "v_proj"),
    ("gate_proj", "up_proj"),
    ("w1", "w3"),  # Mixtral-style expert / MLP naming
)


def _plain_linear(module) -> bool:
    import torch

    return type(module) is torch.nn.Linear


def _fusable(linears: Sequence) -> bool:
    if not all(_plain_linear(m) for m in linears):
        return False
    first = linears[0]
    return all(
        m.in_features == first.in_features
        and m.weight.dtype == first.weight.dtype
        and m.weight.device == first.weight.device
        and (m.bias is None) == (first.bias is None)
        for m in linears
    )


def _make_classes():
    import torch
    import torch.nn.functional as F
    from torch import nn

    class FusedGroup(nn.Module):
        """The stacked weight of one group and the outputs of its last input."""

        def __init__(self, linears: Sequence[nn.Linear]) -> None:
            super().__init__()
            with torch.no_grad():
                self.weight = nn.Parameter(torch.cat([m.weight for m in linears], dim=0), requires_grad=False)
                bias = [m.bias for m in linears]
                self.bias = (nn.Parameter(torch.cat(bias, dim=0), requires_grad=False)
                             if bias[0] is not None else None)
            self.sizes = [m.out_features for m in linears]
            self.offsets = [sum(self.sizes[:i]) for i in range(len(self.sizes))]
            self._input: torch.Tensor | None = None
            self._outputs: tuple[torch.Tensor, ...] = ()

        def output(self, index: int, x: torch.Tensor) -> torch.Tensor:
            if x is self._input:
                out = self._outputs[index]
                if index == len(self.sizes) - 1:  # the last sibling: let go of the step's tensors
                    self._input, self._outputs = None, ()
                return out
            if index == 0:
                self._outputs = F.linear(x, self.weight, self.bias).split(self.sizes, dim=-1)
                self._input = x
                return self._outputs[0]
            # called out of order or with another tensor: this slice alone
            lo = self.offsets[index]
            hi = lo + self.sizes[index]
            bias = self.bias[lo:hi] if self.bias is not None else None
            return F.linear(x, self.weight[lo:hi], bias)

    class FusedSlice(nn.Module):
        """Stands where one projection was; answers from its group."""

        def __init__(self, group: FusedGroup, index: int) -> None:
            super().__init__()
            # a plain attribute, not a submodule: the group is registered once, on its owner
            object.__setattr__(self, "group", group)
            self.index = index
            self.in_features = group.weight.shape[1]
            self.out_features = group.sizes[index]

        @property
        def weight(self) -> torch.Tensor:  # code that reads proj.weight (dtype, device, shape) still works
            lo = self.group.offsets[self.index]
            return self.group.weight[lo : lo + self.out_features]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.group.output(self.index, x)

        def extra_repr(self) -> str:
            return f"fused slice {self.index} of {self.group.sizes}"

    return FusedGroup, FusedSlice


def fuse_projections(model) -> int:
    """Fuse every group of :data:`GROUPS` found on the model's modules, in place.
    Returns how many groups were fused."""
    FusedGroup, FusedSlice = _make_classes()
    fused = 0
    for owner in list(model.modules()):
        for names in GROUPS:
            linears = [getattr(owner, n, None) for n in names]
            if any(m is None for m in linears) or not _fusable(linears):
                continue
            group = FusedGroup(linears)
            owner.add_module("fused_" + "_".join(names), group)
            for i, name in enumerate(names):
                setattr(owner, name, FusedSlice(group, i))
            fused += 1
    if fused:
        log.info("fused %d projection groups (q/k/v, gate/up) into single matmuls", fused)
    return fused
