"""Continuous batching on the fast path: every sequence of a base decodes in one batch, whatever its adapter.

One :class:`Scheduler` per loaded base runs a thread of its own. Each step it

1. admits waiting requests while the batch has room: a prompt pass for each into a free KV slot, then its
   first token;
2. runs one decode step for every sequence in the batch (:meth:`GemmaFast.decode_step`): the big matrices
   read their weights once for all rows, and each row adds its own adapter's LoRA term (rows grouped by
   adapter, the bare base adds none);
3. draws each row's next token from that request's own generator (:mod:`vichat.fast.decode`), and lets a
   row leave at its own end: end-of-sequence, ``max_new_tokens``, or cancelled (a stop marker seen by the
   reader, a closed stream, the caller's cancel event). Rows move between slots on a join or a leave (with
   their KV cache) so that the rows of a step are always the first slots of the pool, which attention reads
   as one view, and the rows of each adapter sit side by side, which its LoRA term reads as one slice.

The batch is bounded (``max_batch`` rows) and so is the KV memory (``capacity`` tokens per row, the pool
allocated once and backed by memory only as it is written). Tokens go to each caller's queue as events
``(index, kind, value)``: ``("token", id)``, ``("end", reason)`` or ``("error", exception)``; the caller
turns them into text (:mod:`vichat.backends`). The thread ends after a few idle seconds and starts again
with the next request.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import torch

from vichat.errors import PromptError
from vichat.fast.decode import new_generator, penalize_, penalty, pick_rows
from vichat.fast.gemma import GemmaFast, KVPool, LoraPack
from vichat.generation import GenerationSettings

log = logging.getLogger(__name__)

MAX_BATCH = 8
CAPACITY = 4096  # tokens per sequence (prompt + new tokens)
MEMORY_SHARE = 0.25  # of the memory available at start that the KV pool may take at most
IDLE_EXIT_S = 5.0


@dataclass(eq=False)
class Job:
    """One request inside the scheduler."""

    index: int  # its place in the caller's list of requests
    ids: list[int]
    settings: GenerationSettings
    adapter: str | None
    lora: LoraPack
    eos: set[int]
    events: queue.SimpleQueue
    cancel: threading.Event | None = None  # the caller's
    stop: threading.Event = field(default_factory=threading.Event)  # the reader's: stop marker, closed
    generator: torch.Generator | None = None
    seen: torch.Tensor | None = None  # prompt and output ids, for the repetition penalty
    n: int = 0
    length: int = 0  # tokens in the KV cache
    produced: int = 0
    last: int = -1
    slot: int = -1

    def __post_init__(self) -> None:
        self.generator = new_generator(self.settings.seed)
        self.repeat = penalty(self.settings)

    @property
    def cancelled(self) -> bool:
        return self.stop.is_set() or (self.cancel is not None and self.cancel.is_set())


def memory_available() -> int | None:
    """Bytes of memory available now (MemAvailable), or None where /proc/meminfo cannot tell."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def plan_batch(engine: GemmaFast, capacity: int = CAPACITY, wanted: int = MAX_BATCH) -> int:
    """Rows the KV pool can hold within :data:`MEMORY_SHARE` of the available memory (1..wanted)."""
    available = memory_available()
    if available is None:
        return wanted
    per_row = engine.kv_bytes_per_token() * capacity
    return max(1, min(wanted, int(available * MEMORY_SHARE // per_row)))


class Scheduler:
    def __init__(self, engine: GemmaFast, max_batch: int = MAX_BATCH, capacity: int = CAPACITY) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.capacity = capacity
        self.pool: KVPool | None = None
        self._pending: deque[Job] = deque()
        self._active: list[Job] = []  # row b of a step is slot b
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._threads_before = torch.get_num_threads()
        self.steps = 0
        self.rows_decoded = 0  # sum of batch sizes over steps (mean batch = rows_decoded / steps)
        self.peak_batch = 0

    # ---------------------------------------------------------------------------------------- callers

    def submit(self, jobs: list[Job]) -> None:
        for job in jobs:
            need = len(job.ids) + job.settings.max_new_tokens
            if need > self.capacity:
                raise PromptError(
                    f"the prompt is {len(job.ids):,} tokens; with max_new_tokens={job.settings.max_new_tokens} "
                    f"this engine takes at most {self.capacity - job.settings.max_new_tokens:,} prompt tokens "
                    f"({self.capacity:,} per conversation). Shorten the prompt."
                )
        with self._cv:
            self._pending.extend(jobs)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="vichat-fast-batch", daemon=True)
                self._thread.start()
            self._cv.notify()

    def busy(self) -> int:
        """Requests decoding or waiting now."""
        with self._cv:
            return len(self._active) + len(self._pending)

    # ----------------------------------------------------------------------------------------- thread

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._active:
                    if not self._cv.wait(IDLE_EXIT_S) and not self._pending:
                        self._thread = None
                        return
                if not self._active:  # a busy period starts: note the thread setting to give back
                    self._threads_before = torch.get_num_threads()
                room = self.max_batch - len(self._active)
                admit = [self._pending.popleft() for _ in range(min(room, len(self._pending)))]
            events: list[tuple[Job, str, object]] = []
            try:
                for job in admit:
                    self._admit(job, events)
                    if job.slot >= 0:  # still decoding: its first token goes out now, not after the step
                        self._flush([e for e in events if e[0] is job])
                        events = [e for e in events if e[0] is not job]
                if self._active:
                    self._step(events)
            except Exception as e:  # noqa: BLE001 - every request in flight hears of it
                log.exception("fast path: a batch step failed")
                failed = {id(j): j for j in [*admit, *self._active]}
                self._active.clear()
                events = [(e_job, kind, value) for e_job, kind, value in events if id(e_job) not in failed]
                events += [(job, "error", e) for job in failed.values()]
            with self._cv:
                idle = not self._active and not self._pending
            if idle:
                _use_threads(self._threads_before)
            self._flush(events)

    @staticmethod
    def _flush(events: list) -> None:
        for job, kind, value in events:
            job.events.put((job.index, kind, value))

    def _admit(self, job: Job, events: list) -> None:
        if job.cancelled:
            events.append((job, "end", "cancelled"))
            return
        if self.pool is None:
            self.pool = self.engine.new_pool(self.max_batch, self.capacity)
        slot = self._make_room(job)
        _use_threads(self.engine.threads.most)  # always: see ThreadChoice (a prompt's bits)
        logits = self.engine.forward(job.ids, self.pool.slot_cache(slot), job.lora)
        job.slot, job.length = slot, len(job.ids)
        job.seen = torch.tensor([job.ids + [0] * job.settings.max_new_tokens])
        job.n = len(job.ids)
        self._take([job], logits[None], events)

    # The rows of one adapter are kept next to each other, so a step adds each adapter's LoRA term to a slice
    # of the batch (a view) rather than to gathered and scattered rows. A join or a leave moves at most one row
    # per adapter group (its KV cache with it); a step moves none.

    def _relocate(self, job: Job, slot: int) -> None:
        self.pool.move(job.slot, slot, job.length)
        job.slot = slot
        self._active[slot] = job

    def _make_room(self, job: Job) -> int:
        """Put ``job`` in the slot just after the rows of its adapter (the end, for an adapter not in the
        batch), moving a row of each later group; returns the slot, whose KV cache is the job's to fill."""
        rows = self._active
        mine = [b for b, other in enumerate(rows) if other.adapter == job.adapter]
        place = mine[-1] + 1 if mine else len(rows)
        rows.append(job)
        free = len(rows) - 1
        while free > place:  # each later group gives its first row to the free slot after its last
            start = free - 1
            while start - 1 >= place and rows[start - 1].adapter == rows[free - 1].adapter:
                start -= 1
            self._relocate(rows[start], free)
            free = start
        rows[place] = job
        return place

    def _step(self, events: list) -> None:
        for job in list(self._active):
            if job.cancelled:
                self._finish(job, "cancelled", events)
        rows = list(self._active)
        if not rows:
            return
        choice = self.engine.threads_for(len(rows))
        _use_threads(choice.current)
        start = time.perf_counter()
        logits = self.engine.decode_step(
            [j.last for j in rows], [j.length for j in rows], self.pool, _lora_groups(rows)
        )
        choice.observe(time.perf_counter() - start)
        self.steps += 1
        self.rows_decoded += len(rows)
        self.peak_batch = max(self.peak_batch, len(rows))
        for job in rows:
            job.length += 1
        self._take(rows, logits, events)

    @torch.inference_mode()
    def _take(self, jobs: list[Job], logits: torch.Tensor, events: list) -> None:
        """Draw each job's next token from its row of ``logits`` (rows, vocab; modified: the repetition
        penalty is applied in place); a job leaves the batch at its end."""
        for b, job in enumerate(jobs):
            if job.repeat:
                penalize_(logits[b], job.seen[0, : job.n], job.repeat)
        tokens = pick_rows(logits, [j.settings for j in jobs], [j.generator for j in jobs])
        for job, token in zip(jobs, tokens, strict=True):
            self._emit(job, token, events)

    def _emit(self, job: Job, token: int, events: list) -> None:
        job.produced += 1
        events.append((job, "token", token))
        if token in job.eos:
            self._finish(job, "eos", events)
        elif job.produced >= job.settings.max_new_tokens:
            self._finish(job, "length", events)
        else:
            job.seen[0, job.n] = token
            job.n += 1
            job.last = token

    def _finish(self, job: Job, reason: str, events: list) -> None:
        """The job leaves; the rows stay the first slots, each adapter's rows still side by side."""
        rows = self._active
        free, group = job.slot, job.adapter
        while True:  # the freed slot takes the last row of its group, then of each group after it
            last = free
            while last + 1 < len(rows) and rows[last + 1].adapter == group:
                last += 1
            if last != free:
                self._relocate(rows[last], free)
            free = last
            if free + 1 == len(rows):
                break
            group = rows[free + 1].adapter
        rows.pop()
        job.slot = -1
        events.append((job, "end", reason))


def _lora_groups(rows: list[Job]) -> list[tuple[LoraPack, slice | torch.Tensor | None]]:
    """The rows of each adapter: a slice (the scheduler keeps them side by side), row indices otherwise, None
    when all rows share it; bare-base rows are in no group."""
    by_adapter: dict[str, list[int]] = {}
    packs: dict[str, LoraPack] = {}
    for b, job in enumerate(rows):
        if job.adapter is not None:
            by_adapter.setdefault(job.adapter, []).append(b)
            packs[job.adapter] = job.lora
    if len(by_adapter) == 1 and len(next(iter(by_adapter.values()))) == len(rows):
        return [(next(iter(packs.values())), None)]
    groups = []
    for a, idx in by_adapter.items():
        side_by_side = idx == list(range(idx[0], idx[-1] + 1))
        groups.append((packs[a], slice(idx[0], idx[-1] + 1) if side_by_side else torch.tensor(idx)))
    return groups


def _use_threads(n: int) -> None:
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
