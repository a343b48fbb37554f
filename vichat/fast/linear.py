"""Weight formats for the fast CPU path. Each matrix takes and returns activations in its ``dtype``.

- ``int8``: weight-only int8, one bfloat16 scale per output row (``torch._weight_int8pack_mm``), bfloat16
  activations. A quarter of the bytes of float32 per token, read at close to memory speed.
- ``bf16``: bfloat16 weights and activations. Half the bytes; closer to the float32 reference, slower.
- ``fp32``: the model's own float32 matrices (q/k/v and gate/up concatenated, so one copy of those).
  Exact up to summation order: it checks the fast forward pass itself, apart from any rounding.

Activation quantisation (``quantize_dynamic``) is faster still but does not keep Gemma's outlier activations:
measured on Gemma 3 270M it moves per-token log-likelihoods by ~0.5 nats on average, so it is not offered.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PRECISIONS = ("int8", "bf16", "fp32")
_ROWS_PER_CHUNK = 16_384  # quantise big matrices (the 262k-row embedding) in slices: no full float32 temp


class Int8Linear:
    """``x @ w.T`` with ``w`` stored as int8 rows times a bfloat16 scale per row."""

    __slots__ = ("qweight", "scale")
    dtype = torch.bfloat16

    def __init__(self, weight: torch.Tensor) -> None:
        self.qweight, self.scale = quantize_rows(weight)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch._weight_int8pack_mm(x, self.qweight, self.scale)

    @property
    def nbytes(self) -> int:
        return self.qweight.numel() + 2 * self.scale.numel()


class Bf16Linear:
    """``x @ w.T`` with ``w`` stored in bfloat16."""

    __slots__ = ("weight",)
    dtype = torch.bfloat16

    def __init__(self, weight: torch.Tensor) -> None:
        self.weight = weight.detach().to(torch.bfloat16).contiguous()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)

    @property
    def nbytes(self) -> int:
        return 2 * self.weight.numel()


class Fp32Linear:
    """``x @ w.T`` on a float32 matrix as given (no copy unless it had to be concatenated)."""

    __slots__ = ("weight",)
    dtype = torch.float32

    def __init__(self, weight: torch.Tensor) -> None:
        self.weight = weight.detach()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)

    @property
    def nbytes(self) -> int:
        return 0  # shares the model's storage (the concatenated q/k/v and gate/up are counted by the caller)


Linear = Int8Linear | Bf16Linear | Fp32Linear


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per output row. The scale is rounded to bfloat16 first, then the codes fit that scale."""
    weight = weight.detach()
    rows = weight.shape[0]
    qweight = torch.empty(weight.shape, dtype=torch.int8)
    scale = torch.empty(rows, dtype=torch.bfloat16)
    for start in range(0, rows, _ROWS_PER_CHUNK):
        block = weight[start : start + _ROWS_PER_CHUNK].float()
        s = (block.abs().amax(dim=1) / 127.0).clamp(min=1e-12).to(torch.bfloat16)
        scale[start : start + len(block)] = s
        codes = torch.round(block / s.float()[:, None]).clamp_(-127, 127)
        qweight[start : start + len(block)] = codes.to(torch.int8)
    return qweight, scale


def make_linear(weight: torch.Tensor, precision: str) -> Linear:
    if precision == "int8":
        return Int8Linear(weight)
    if precision == "bf16":
        return Bf16Linear(weight)
    if precision == "fp32":
        return Fp32Linear(weight.float())
    raise ValueError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")


def kernels_missing() -> str:
    """Why this torch build cannot run the fast path ('' when it can)."""
    try:
        x = torch.ones(1, 32, dtype=torch.bfloat16)
        Int8Linear(torch.ones(8, 32))(x)
        Bf16Linear(torch.ones(8, 32))(x)
    except (RuntimeError, AttributeError, NotImplementedError) as e:
        return f"this torch build lacks the int8/bf16 CPU kernels ({type(e).__name__}: {str(e)[:120]})"
    return ""
