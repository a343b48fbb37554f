"""Weight formats for the fast CPU path. Each matrix takes and returns activations in its ``dtype``.

- ``int8``: weight-only int8, one bfloat16 scale per output row (``torch._weight_int8pack_mm``), bfloat16
  activations. A quarter of the bytes of float32 per token, read at close to memory speed.
- ``bf16``: bfloat16 weights and activations. Half the bytes; closer to the float32 reference, slower.
- ``fp32``: the model's own float32 matrices (q/k/v and gate/up concatenated, so one copy of those).
  Exact up to summation order: it checks the fast forward pass itself, apart from any rounding.
- ``int4`` (the LM head only, :class:`Int4Linear`): two passes. Int4 weights (groups of :data:`INT4_GROUP`,
  ``torch._weight_int4pack_mm_for_cpu``) score every token with half of int8's bytes; then the
  :data:`CANDIDATES` best are scored again from the model's own float32 rows. Sampling reads only those (top-k
  20 of them, greedy the first), so the tokens drawn see float32 scores, closer to the reference than int8's.

Activation quantisation (``quantize_dynamic``) is faster still but does not keep Gemma's outlier activations:
measured on Gemma 3 270M it moves per-token log-likelihoods by ~0.5 nats on average, so it is not offered.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PRECISIONS = ("int8", "bf16", "fp32")
HEAD_FORMATS = (*PRECISIONS, "int4")  # the head may also take the two-pass int4 format
_ROWS_PER_CHUNK = 16_384  # quantise big matrices (the 262k-row embedding) in slices: no full float32 temp
INT4_GROUP = 32  # int4 weights share a bfloat16 scale and offset per this many inputs
CANDIDATES = 128  # the int4 head's best tokens scored again in float32 (the paper's top-k is 20)


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


class Int4Linear:
    """The LM head: int4 scores for every output, then the :data:`CANDIDATES` best of each row in float32.

    The returned scores hold the model's float32 products for those candidates and the int4 estimate for
    every other output. Top-k sampling (k up to CANDIDATES) and greedy decoding read only the candidates
    wherever the int4 top CANDIDATES hold the true top k. Measured on Gemma 3 270M (1,031 teacher-forced steps
    of the base and both adapters): the int4 estimate is off by 0.44 logits on average (5.4 at most), and the
    float32 top 20 lay inside the int4 top 128 at every step (at top 64: 97.9% of steps). ``bench.decode``
    prints that recall on the machine it runs on. The float32 rows are the model's own (shared, not copied).
    """

    __slots__ = ("weight", "packed", "scales", "group", "candidates")
    dtype = torch.float32

    def __init__(self, weight: torch.Tensor, group: int = INT4_GROUP, candidates: int = CANDIDATES) -> None:
        self.weight = weight.detach().float()
        self.group, self.candidates = group, min(candidates, weight.shape[0])
        self.packed, self.scales = quantize_int4(self.weight, group)

    def estimate(self, x: torch.Tensor) -> torch.Tensor:
        """The int4 scores (rows, outputs), float32."""
        out = torch.ops.aten._weight_int4pack_mm_for_cpu(
            x.to(torch.bfloat16), self.packed, self.group, self.scales
        )
        return out[:, : self.weight.shape[0]].float()  # (a padded head's extra outputs dropped)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        scores = self.estimate(x)
        best = scores.topk(self.candidates, dim=-1, sorted=False).indices  # (rows, candidates)
        # a product and sum per row (not bmm, whose sums depend on the batch): a row's numbers are its own
        exact = (self.weight[best] * x[:, None, :]).sum(-1)
        return scores.scatter_(1, best, exact)

    @property
    def nbytes(self) -> int:
        return self.packed.numel() + 2 * self.scales.numel()  # the float32 rows are the model's


Linear = Int8Linear | Bf16Linear | Fp32Linear | Int4Linear


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


def quantize_int4(weight: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric int4 per ``group`` inputs of each row, packed for ``_weight_int4pack_mm_for_cpu``.

    The kernel computes ``(q - 8) * scale + offset``: each group's 16 levels span its min..max, the scale and
    offset are rounded to bfloat16 first and the codes fit those rounded values."""
    rows, width = weight.shape
    if width % group:
        raise ValueError(f"int4 needs the input size ({width}) to be a multiple of {group}")
    padded = -(-rows // 16) * 16  # the packing takes whole blocks of 16 rows; the extra rows are zeros
    if padded != rows:
        weight = torch.cat([weight, weight.new_zeros(padded - rows, width)])
    packed = torch.empty(padded, width // 2, dtype=torch.uint8)
    scales = torch.empty(width // group, padded, 2, dtype=torch.bfloat16)
    for start in range(0, padded, _ROWS_PER_CHUNK):
        block = weight[start : start + _ROWS_PER_CHUNK].float().reshape(-1, width // group, group)
        low, high = block.amin(dim=-1), block.amax(dim=-1)
        scale = ((high - low) / 15).clamp(min=1e-12).to(torch.bfloat16).float()
        offset = (low + 8 * scale).to(torch.bfloat16).float()
        codes = torch.round((block - offset[..., None]) / scale[..., None] + 8).clamp_(0, 15)
        end = start + len(block)
        packed[start:end] = torch.ops.aten._convert_weight_to_int4pack_for_cpu(
            codes.reshape(len(block), width).to(torch.int32), 1
        )
        scales[:, start:end] = torch.stack([scale, offset], dim=-1).transpose(0, 1).to(torch.bfloat16)
    return packed, scales


def make_linear(weight: torch.Tensor, precision: str) -> Linear:
    if precision == "int8":
        return Int8Linear(weight)
    if precision == "bf16":
        return Bf16Linear(weight)
    if precision == "fp32":
        return Fp32Linear(weight.float())
    if precision == "int4":
        return Int4Linear(weight)
    raise ValueError(
        f"unknown precision {precision!r}; known: {', '.join(HEAD_FORMATS)} (int4: the head only)"
    )


def kernels_missing() -> str:
    """Why this torch build cannot run the fast path ('' when it can)."""
    try:
        x = torch.ones(1, 32, dtype=torch.bfloat16)
        Int8Linear(torch.ones(8, 32))(x)
        Bf16Linear(torch.ones(8, 32))(x)
    except (RuntimeError, AttributeError, NotImplementedError) as e:
        return f"this torch build lacks the int8/bf16 CPU kernels ({type(e).__name__}: {str(e)[:120]})"
    return ""
