"""Which weight format each matrix of the fast path uses on this machine, chosen by timing it at start.

Machines differ more than their flags suggest. On a 2-core Sapphire Rapids VM (AVX-512, AMX) the int8
weight-only kernel (``torch._weight_int8pack_mm``) read only 13-19 GB/s while an fp32 product of the same
small shapes read 40-49 GB/s. On a 2-core AMD EPYC (Zen 4, AVX-512 with bf16, no AMX) the int8 kernel works in
blocks of four rows and is bound by arithmetic, not memory: one thread took 11.7 ms on the 262k-row LM head
for 1 to 4 rows and 23.6 ms for 6 to 8, bf16 22.5 ms at 1 row and 26.4 ms at 8; on a layer's gate/up matrix
int8 took 1.19 ms for 32 rows against bf16's 0.52. So no format is assumed: for each matrix shape of the
model (the fused q/k/v, o, gate/up and down of one layer, which all layers share, and the LM head) the
engine builds the candidates and times ``x @ w.T`` at 1 row (one user), at the engine's batch (a full
batch) and, for the layers' matrices, at a prompt's 64 rows.

Decode steps use one format per matrix whatever the batch size, the fastest per token averaged over 1 row and
a full batch: a row's numbers must not depend on what else is in the batch (a seed gives the same answer
however many users decode with it), and int8 and bf16 round differently. Nor may they depend on the batch's
size or the thread count inside one format, and some kernels' do: on a 2-core Sapphire Rapids VM and on a
2-core Zen 3 EPYC the float32 product of a row inside 2 to 8 rows differed from the row alone by 2e-7 to 3e-6,
and on the EPYC by 2e-6 between 1 and 2 threads at 5 rows, while the int8 and int4 kernels gave the same bits
for every batch and thread count. So every candidate is also checked on this machine (:func:`variance`): a row
alone against the same row inside batches of 2 to ``batch`` rows, on one thread and on all; only formats that
give the same bits everywhere decode (the others may still run prompts). Prompt passes (more rows than the
batch holds) may take another format where it saves at least :data:`MIN_GAIN` of the time: a prompt is always
run alone, so that too is the same for every batch. Such a matrix holds both formats (:class:`ByRows`). Every
candidate stays within the accuracy bound the int8 format is tested against (int8 is the least exact of the
three). The LM head has a fourth candidate, two-pass int4 (:class:`~vichat.fast.linear.Int4Linear`): half of
int8's bytes for the 262k-row estimate, float32 for the tokens sampling reads. On the Zen 4 machine above it
took 3.5 ms at 1 row against int8's 5.0 ms, and about the same as int8 at 8 rows (10.6 vs 10.5 ms); on another
Zen 4 slot 5.3-5.5 ms against 6.2-6.5 at 1 row but 18 ms against 14-15 at 8. It wins single-user decoding,
where the head is a third of a step, and the per-token average decides.

Timings take the best of a few runs, so a moment of outside load does not decide, each run after other memory
is written (:data:`EVICT_BYTES`), so that the matrix comes from beyond the core's cache as in a step. The
choice, the times and why are logged once and printed by ``bench.decode``; ``precision`` int8/bf16/fp32 forces
one format.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch

from vichat.fast.linear import HEAD_FORMATS, PRECISIONS, Linear, make_linear

log = logging.getLogger(__name__)

REPEATS = 5  # timed runs per (format, rows); the best counts
BUDGET_S = 0.25  # at most this long per (format, rows) on the largest matrix (then fewer runs)
PROMPT_ROWS = 64  # a prompt pass (the layers' matrices only: the head sees the last token alone)
MIN_GAIN = 0.10  # a second format, for prompt passes, must save at least this share of their time
# Written before each timed product. A decode step reads each layer's matrix once, after the other layers'
# weights have pushed it out of the core's cache; a matrix timed over and over stays in it. On a 2-core
# Sapphire Rapids, one gate/up matrix in int8 took 0.068 ms at 1 row timed over and over and 0.128 ms read in
# turn with 17 others, as a step reads it (bf16: 0.170 and 0.310); after 32 MB written: 0.127 (bf16 0.222).
EVICT_BYTES = 32 * 1024 * 1024


class ByRows:
    """One matrix in two or more formats; a product with ``r`` rows uses the first whose ``upto`` >= r."""

    __slots__ = ("parts",)

    def __init__(self, parts: list[tuple[int, Linear]]) -> None:
        self.parts = parts  # (upto rows, linear), upto increasing; the last covers any size

    @property
    def dtype(self) -> torch.dtype:
        return self.parts[0][1].dtype

    def pick(self, rows: int) -> Linear:
        for upto, linear in self.parts:
            if rows <= upto:
                return linear
        return self.parts[-1][1]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        linear = self.pick(x.shape[0])
        return linear(x if x.dtype == linear.dtype else x.to(linear.dtype))

    @property
    def nbytes(self) -> int:
        return sum(linear.nbytes for _, linear in self.parts)


def format_of(linear, rows: int = 1) -> str:
    """The format name (int8, bf16, fp32) a product with ``rows`` rows runs on ``linear``."""
    one = linear.pick(rows) if isinstance(linear, ByRows) else linear
    return type(one).__name__.removesuffix("Linear").lower()


@dataclass
class KernelChoice:
    batch: int
    # group -> format -> rows -> seconds
    times: dict[str, dict[str, dict[int, float]]] = field(default_factory=dict)
    # group -> [(upto rows, format)], upto increasing; the last entry covers any larger product
    plan: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    built: dict[str, Linear | ByRows] = field(default_factory=dict, repr=False)  # the head as timed
    # group -> format -> largest |difference| of a row alone vs inside a batch or on other threads (0: none)
    variance: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def chosen(self) -> dict[str, str]:
        """The format of each group for one row (one user)."""
        return {group: steps[0][1] for group, steps in self.plan.items()}

    def per_token(self, group: str, fmt: str) -> float:
        """A decode step's seconds per token in ``fmt``, averaged over one row and a full batch."""
        return per_token(self.times[group][fmt], self.batch)

    def format_at(self, group: str, rows: int) -> str:
        for upto, fmt in self.plan[group]:
            if rows <= upto:
                return fmt
        return self.plan[group][-1][1]

    def summary(self) -> str:
        """e.g. ``auto: qkv int8 (bf16 from 9 rows), o int8, gate_up int8, down int8, head int8``."""
        parts = []
        for group, steps in self.plan.items():
            text = f"{group} {steps[0][1]}"
            later = [f"{fmt} from {steps[i - 1][0] + 1} rows" for i, (_, fmt) in enumerate(steps) if i]
            parts.append(text + (f" ({', '.join(later)})" if later else ""))
        return "auto: " + ", ".join(parts)

    def table(self) -> list[str]:
        """Markdown rows: group, each format's ms at each row count timed, the choice and why."""
        counts = sorted({r for by_format in self.times.values() for t in by_format.values() for r in t})
        names = " | ".join(f"{r} row{'s' * (r > 1)} ms" for r in counts)
        head = f"| matrix | format | {names} | used for |"
        lines = [head, "|---|---|" + "---:|" * len(counts) + "---|"]
        for group, by_format in self.times.items():
            for fmt in by_format:
                cells = []
                for r in counts:
                    t = by_format[fmt].get(r)
                    cell = "-" if t is None else f"{t * 1e3:.3f}"
                    cells.append(f"**{cell}**" if t is not None and self.format_at(group, r) == fmt else cell)
                lines.append(f"| {group} | {fmt} | {' | '.join(cells)} | {self._used_for(group, fmt)} |")
        return lines

    def _used_for(self, group: str, fmt: str) -> str:
        steps = self.plan[group]
        step_ms = f"{self.per_token(group, fmt) * 1e3:.3f} ms per token in decode steps"
        varies = self.variance.get(group, {}).get(fmt)
        if varies:
            step_ms += (
                f"; a row's numbers vary with the batch or threads by {varies:.1e}: not for decode steps"
            )
        if len(steps) == 1:
            return f"**everything** ({step_ms})" if steps[0][1] == fmt else step_ms
        if steps[0][1] == fmt:
            return f"**decode steps** ({step_ms})"
        if steps[1][1] == fmt:
            return f"**prompts** (more than {steps[0][0]} rows; {step_ms})"
        return step_ms


def _best_time(linear: Linear, rows: int, width: int, evict: torch.Tensor | None = None) -> float:
    """The best of a few timed products; before each, ``evict`` (other memory) is written, so that the
    matrix is read from beyond the core's cache as in a decode step (see :data:`EVICT_BYTES`)."""
    x = torch.randn(rows, width).to(linear.dtype)
    linear(x)  # warm-up: first-call packing and allocation
    best = float("inf")
    spent = 0.0
    for _ in range(REPEATS):
        if evict is not None:
            evict.add_(1.0)
        start = time.perf_counter()
        linear(x)
        took = time.perf_counter() - start
        best, spent = min(best, took), spent + took
        if spent > BUDGET_S:
            break
    return best


def row_counts(group: str, batch: int) -> list[int]:
    """Rows timed: 1 and the batch (decode steps); a prompt's rows too, except for the head."""
    counts = sorted({1, batch})
    return counts if group == "head" else [*counts, max(PROMPT_ROWS, batch + 1)]


def per_token(times: dict[int, float], batch: int) -> float:
    """Seconds per token of a decode step, averaged over one row and a full batch."""
    return (times[1] + times[batch] / batch) / 2


def plan_formats(
    times: dict[str, dict[int, float]], batch: int, steady: set[str] | None = None
) -> list[tuple[int, str]]:
    """[(upto rows, format)] from one group's timings: decode steps (up to ``batch`` rows) on the fastest
    per token of the ``steady`` formats (None: all; see :func:`variance`); larger products (prompts), where
    timed, on their fastest of all formats if it saves MIN_GAIN of the time."""
    eligible = [f for f in times if steady is None or f in steady] or list(times)
    step = min(eligible, key=lambda f: per_token(times[f], batch))
    bigger = sorted(r for r in times[step] if r > batch)
    if not bigger:
        return [(batch, step)]
    rows = bigger[-1]
    best = min(times, key=lambda f: times[f][rows])
    if best != step and times[best][rows] <= (1 - MIN_GAIN) * times[step][rows]:
        return [(batch, step), (rows, best)]
    return [(rows, step)]


def variance(linear: Linear, width: int, batch: int, most: int | None = None, full: bool = True) -> float:
    """How far a row's product moves with the rows around it and with the thread count: the largest
    |difference| between each row alone on one thread and the same row inside ``x[:r]`` for r in 2..batch,
    on one thread and on ``most`` (default: torch's count now). 0.0: the same bits everywhere. ``full``
    False checks fewer sizes (2, 3 and ``batch``; rows 0 and r-1), for the big LM head."""
    most = most or torch.get_num_threads()
    before = torch.get_num_threads()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, width, generator=gen).to(linear.dtype)
    sizes = range(1, batch + 1) if full else sorted({1, min(2, batch), min(3, batch), batch})
    worst = 0.0
    try:
        torch.set_num_threads(1)
        needed = range(batch) if full else sorted({0, *(r - 1 for r in sizes)})
        alone = {j: linear(x[j : j + 1]).float()[0] for j in needed}
        for threads in sorted({1, most}):
            torch.set_num_threads(threads)
            for r in sizes:
                out = linear(x[:r]).float()
                for j in range(r) if full else sorted({0, r - 1}):
                    worst = max(worst, float((out[j] - alone[j]).abs().max()))
    finally:
        torch.set_num_threads(before)
    return worst


def choose_kernels(weights: dict[str, torch.Tensor], batch: int) -> KernelChoice:
    """Time every format on each of ``weights`` (group -> matrix) at each row count; plan the formats."""
    choice = KernelChoice(batch=max(1, batch))
    evict = torch.ones(EVICT_BYTES // 4)
    with torch.inference_mode():
        for group, weight in weights.items():
            counts = row_counts(group, choice.batch)
            results: dict[str, dict[int, float]] = {}
            choice.times[group] = results
            varies: dict[str, float] = {}
            choice.variance[group] = varies
            kept: Linear | None = None  # the head: only the best so far stays built (its formats are big)
            for fmt in HEAD_FORMATS if group == "head" else PRECISIONS:
                try:
                    linear = make_linear(weight, fmt)
                    width = weight.shape[1]
                    results[fmt] = {r: _best_time(linear, r, width, evict) for r in counts}
                    varies[fmt] = variance(linear, width, choice.batch, full=group != "head")
                except (
                    RuntimeError,
                    NotImplementedError,
                    AttributeError,
                ) as e:  # a kernel this build or CPU lacks
                    log.info("fast path: %s format %s unavailable here (%s)", group, fmt, str(e)[:80])
                    continue
                steady = {f for f, d in varies.items() if d == 0.0}
                if group == "head" and plan_formats(results, choice.batch, steady)[0][1] == fmt:
                    kept = linear
                del linear
            if not results:
                raise RuntimeError(f"no weight format runs on this machine for {group}")
            steady = {f for f, d in varies.items() if d == 0.0}
            if not steady:
                log.warning(
                    "fast path: every %s format varies with the batch or threads here (%s); seeded answers "
                    "may then differ with what else decodes",
                    group,
                    ", ".join(f"{f} {d:.1e}" for f, d in varies.items()),
                )
            choice.plan[group] = plan_formats(results, choice.batch, steady)
            if group == "head":  # timed at decode sizes only, so one format: the best per token, kept
                choice.built["head"] = kept
    log.info("fast path kernels (timed on this machine): %s", choice.summary())
    for line in choice.table():
        log.info("  %s", line)
    return choice


def build(weight: torch.Tensor, plan: list[tuple[int, str]]) -> Linear | ByRows:
    """Build ``weight`` in every format of ``plan``: one linear, or :class:`ByRows` over several."""
    if len(plan) == 1:
        return make_linear(weight, plan[0][1])
    return ByRows([(upto, make_linear(weight, fmt)) for upto, fmt in plan])
