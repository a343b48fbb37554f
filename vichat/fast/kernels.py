"""Which weight format each matrix of the fast path uses on this machine, chosen by timing it at start.

Machines differ more than their flags suggest. On a 2-core Sapphire Rapids VM (AVX-512, AMX) the int8
weight-only kernel (``torch._weight_int8pack_mm``) read only 13-19 GB/s while an fp32 product of the same
small shapes read 40-49 GB/s; on a 2-core AMD EPYC (Zen 4, AVX-512 with bf16, no AMX) int8 is the fastest
format for one sequence and bf16 for a batch of eight. So no format is assumed: for each matrix shape of the
model (the fused q/k/v, o, gate/up and down of one layer, which all layers share, and the LM head) the
engine builds the candidates, times ``x @ w.T`` at batch 1 (one user) and at the engine's batch (a full
batch), and keeps the format with the least time per token averaged over the two. Every candidate stays
within the accuracy bound the int8 format is tested against (int8 is the least exact of the three).

Timings take the best of a few runs, so a moment of outside load does not decide. The choice, the times
and why are logged once and printed by ``bench.decode``; ``precision`` int8/bf16/fp32 forces one format.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch

from vichat.fast.linear import PRECISIONS, Linear, make_linear

log = logging.getLogger(__name__)

REPEATS = 5  # timed runs per (format, batch); the best counts
BUDGET_S = 0.25  # at most this long per (format, batch) on the largest matrix (then fewer runs)


@dataclass
class KernelChoice:
    batch: int
    # group -> format -> (seconds at batch 1, seconds at ``batch``)
    times: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    chosen: dict[str, str] = field(default_factory=dict)
    built: dict[str, Linear] = field(default_factory=dict, repr=False)  # the head as timed (not rebuilt)

    def per_token(self, group: str, fmt: str) -> float:
        one, many = self.times[group][fmt]
        return (one + many / self.batch) / 2

    def summary(self) -> str:
        """e.g. ``auto: qkv int8, o int8, gate_up bf16, down int8, head int8``."""
        return "auto: " + ", ".join(f"{g} {f}" for g, f in self.chosen.items())

    def table(self) -> list[str]:
        """Markdown rows: group, each format's ms at batch 1 / batch B, the choice and why."""
        head = f"| matrix | {' | '.join(f'{f} ms (1 / {self.batch})' for f in PRECISIONS)} | chosen |"
        lines = [head, "|---|" + "---:|" * len(PRECISIONS) + "---|"]
        for group, by_format in self.times.items():
            cells = [
                f"{by_format[f][0] * 1e3:.3f} / {by_format[f][1] * 1e3:.3f}" if f in by_format else "-"
                for f in PRECISIONS
            ]
            best = self.chosen[group]
            runner = sorted(by_format, key=lambda f: self.per_token(group, f))
            if len(runner) > 1:
                gain = self.per_token(group, runner[1]) / self.per_token(group, best)
                why = f"{gain:.2f}x faster per token than {runner[1]}"
            else:
                why = "the only format that runs here"
            lines.append(f"| {group} | {' | '.join(cells)} | **{best}** ({why}) |")
        return lines


def _best_time(linear: Linear, rows: int, width: int) -> float:
    x = torch.randn(rows, width).to(linear.dtype)
    linear(x)  # warm-up: first-call packing and allocation
    best = float("inf")
    spent = 0.0
    for _ in range(REPEATS):
        start = time.perf_counter()
        linear(x)
        took = time.perf_counter() - start
        best, spent = min(best, took), spent + took
        if spent > BUDGET_S:
            break
    return best


def choose_kernels(weights: dict[str, torch.Tensor], batch: int) -> KernelChoice:
    """Time every format on each of ``weights`` (group -> matrix) and pick the fastest per token."""
    choice = KernelChoice(batch=max(1, batch))
    with torch.inference_mode():
        for group, weight in weights.items():
            results: dict[str, tuple[float, float]] = {}
            choice.times[group] = results
            kept: Linear | None = None  # only the best so far stays built (the head's formats are big)
            for fmt in PRECISIONS:
                try:
                    linear = make_linear(weight, fmt)
                    width = weight.shape[1]
                    results[fmt] = (_best_time(linear, 1, width), _best_time(linear, choice.batch, width))
                except (RuntimeError, NotImplementedError) as e:  # a kernel this build or CPU lacks
                    log.info("fast path: %s format %s unavailable here (%s)", group, fmt, str(e)[:80])
                    continue
                best = min(results, key=lambda f: choice.per_token(group, f))
                if best == fmt:
                    kept = linear
                del linear
            if not results:
                raise RuntimeError(f"no weight format runs on this machine for {group}")
            choice.chosen[group] = min(results, key=lambda f: choice.per_token(group, f))
            if group == "head":
                choice.built["head"] = kept
    log.info("fast path kernels (timed on this machine): %s", choice.summary())
    for line in choice.table():
        log.info("  %s", line)
    return choice
