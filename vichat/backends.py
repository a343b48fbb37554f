"""One decoder interface for every way a variant answers: the reference, the fast CPU engine, a remote server.

A :class:`Request` is one prompt (the template already applied) with its settings, stop markers, adapter
(on a local base), cancel event and stats. Every decoder offers the same two calls:

- ``stream(requests)`` yields ``(index, piece)`` as the answers grow, all requests at once where the
  decoder can (the fast engine decodes them in one batch; a remote server gets them concurrently);
- ``generate_batch(requests)`` returns the whole answers, in order.

The registry keeps one decoder per base (local) or per variant (remote) and picks it from the variant's
configuration through :data:`vichat.registry.DECODERS`, so a caller never asks which kind it got:

- :class:`ReferenceDecoder`: transformers ``generate`` on the loaded base, the adapter switched under the
  base's lock (one sequence at a time): BLOOM, GPT-J, CUDA, ``fast: off``;
- :class:`FastDecoder`: the batched Gemma 3 engine (:mod:`vichat.fast`), mixed adapters in one batch;
- :class:`RemoteDecoder`: an OpenAI-compatible completions server (:mod:`vichat.remote`).

Pieces are released through :class:`vichat.generation.StopFilter`: text after a stop marker is never shown,
and a stop marker ends that request's generation.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from vichat import generation
from vichat.generation import GenerationSettings, GenerationStats, StopFilter, encode_prompt, ensure_pad_token
from vichat.omp import in_own_thread


@dataclass
class Request:
    prompt: str
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    stops: tuple[str, ...] = ()
    adapter: str | None = None  # the adapter's name on the local base (None: the bare base)
    cancel: threading.Event | None = None
    stats: GenerationStats = field(default_factory=GenerationStats)


class Decoder(Protocol):
    kind: str  # "reference", "fast", "remote": shown to users and in benchmarks

    def stream(self, requests: Sequence[Request]) -> Iterator[tuple[int, str]]: ...

    def generate_batch(self, requests: Sequence[Request]) -> list[str]: ...


def join(decoder: Decoder, requests: Sequence[Request]) -> list[str]:
    """The whole answers of ``decoder.stream(requests)``, stripped, in order."""
    texts = [""] * len(requests)
    for i, piece in decoder.stream(requests):
        texts[i] += piece
    return [t.strip() for t in texts]


def interleave(streams: Sequence[Callable[[], Iterator[str]]]) -> Iterator[tuple[int, str]]:
    """Run each stream in a thread of its own and yield ``(index, piece)`` as pieces arrive.

    Closing this iterator tells every stream to stop after its next piece, and closes it in its own thread.
    An error in any stream is raised here, after the others were told to stop.
    """
    events: queue.SimpleQueue = queue.SimpleQueue()
    stop = threading.Event()

    def run(i: int, make: Callable[[], Iterator[str]]) -> None:
        try:
            source = make()
            try:
                for piece in source:
                    events.put((i, "piece", piece))
                    if stop.is_set():
                        break
            finally:
                source.close()
            events.put((i, "end", None))
        except BaseException as e:  # noqa: BLE001 - raised in the reader's thread
            events.put((i, "error", e))

    workers = [threading.Thread(target=run, args=(i, m), daemon=True) for i, m in enumerate(streams)]
    for w in workers:
        w.start()
    left = len(workers)
    try:
        while left:
            i, kind, value = events.get()
            if kind == "piece":
                yield i, value
            elif kind == "end":
                left -= 1
            else:
                raise value
    finally:
        stop.set()


def each_on_its_own(one: Callable[[Request], Iterator[str]], requests: Sequence[Request]):
    """``stream(requests)`` for a decoder that serves one request at a time: one in this thread, several in
    threads of their own (:func:`interleave`)."""
    if len(requests) == 1:
        return ((0, piece) for piece in one(requests[0]))
    return interleave([lambda r=r: one(r) for r in requests])


class ReferenceDecoder:
    """transformers ``generate`` on the loaded base; requests take turns on the base's lock."""

    kind = "reference"

    def __init__(self, base) -> None:
        self.base = base

    def _one(self, request: Request) -> Iterator[str]:
        with self.base.use(request.adapter) as model:
            yield from generation.stream(
                model, self.base.tokenizer, request.prompt, request.settings, request.stops,
                request.cancel, request.stats,
            )  # fmt: skip

    def stream(self, requests: Sequence[Request]) -> Iterator[tuple[int, str]]:
        return each_on_its_own(self._one, requests)

    def generate_batch(self, requests: Sequence[Request]) -> list[str]:
        """Requests with the same adapter, settings and stops go through ``generate`` as one padded batch."""
        out: list[str] = [""] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault((r.adapter, r.settings, r.stops), []).append(i)
        for (adapter, settings, stops), idx in groups.items():
            with self.base.use(adapter) as model:  # in a passing thread (vichat.omp)
                texts = in_own_thread(
                    generation.generate_batch,
                    model, self.base.tokenizer, [requests[i].prompt for i in idx], settings, stops,
                )  # fmt: skip
            for i, text in zip(idx, texts, strict=True):
                out[i] = text
        return out


class FastDecoder:
    """The batched fast engine of one base: every request joins the base's one batch (mixed adapters)."""

    kind = "fast"

    def __init__(self, base, scheduler) -> None:
        self.base = base
        self.scheduler = scheduler

    def _jobs(self, requests: Sequence[Request], events) -> list:
        from vichat.fast.decode import eos_ids
        from vichat.fast.scheduler import Job

        tokenizer, model, engine = self.base.tokenizer, self.base.model, self.scheduler.engine
        ensure_pad_token(tokenizer)
        eos = eos_ids(model)
        jobs = []
        for i, r in enumerate(requests):
            ids = encode_prompt(tokenizer, model, r.prompt, r.settings.max_new_tokens)
            with self.base.lock:  # the adapter's matrices are read from the model once
                lora = engine.lora_pack(model, r.adapter)
            r.stats.prompt_tokens = len(ids)
            jobs.append(Job(i, ids, r.settings, r.adapter, lora, eos, events, r.cancel))
        return jobs

    def stream(self, requests: Sequence[Request]) -> Iterator[tuple[int, str]]:
        events: queue.SimpleQueue = queue.SimpleQueue()
        jobs = self._jobs(requests, events)
        tokenizer = self.base.tokenizer
        eos = jobs[0].eos if jobs else set()
        produced: list[list[int]] = [[] for _ in requests]
        shown = [StopFilter(r.stops) for r in requests]
        open_ = set(range(len(requests)))
        start = time.perf_counter()
        for r in requests:
            r.stats.stopped_by = "length"
        self.scheduler.submit(jobs)
        try:
            while open_:
                i, kind, value = events.get()
                if i not in open_:
                    continue  # a request already finished by its stop marker
                stats = requests[i].stats
                if kind == "error":
                    raise value
                if kind == "end":
                    stats.stopped_by = value
                    stats.total_s = time.perf_counter() - start
                    open_.discard(i)
                    text = tokenizer.decode(produced[i], skip_special_tokens=True)
                    last = shown[i].update(text) + shown[i].finish()
                    if last:
                        yield i, last
                    continue
                if stats.first_token_s is None:
                    stats.first_token_s = time.perf_counter() - start
                stats.new_tokens += 1
                if value in eos:
                    continue  # the end event follows
                produced[i].append(value)
                text = tokenizer.decode(produced[i], skip_special_tokens=True)
                if text.endswith("\ufffd"):  # in the middle of a multi-byte character
                    continue
                piece = shown[i].update(text)
                if piece:
                    yield i, piece
                if shown[i].stopped:
                    jobs[i].stop.set()
                    stats.stopped_by = "stop"
                    stats.total_s = time.perf_counter() - start
                    open_.discard(i)
        finally:
            for i in open_:  # the reader stopped early: those rows leave the batch at the next step
                jobs[i].stop.set()
                requests[i].stats.stopped_by = "cancelled"
                requests[i].stats.total_s = time.perf_counter() - start

    def generate_batch(self, requests: Sequence[Request]) -> list[str]:
        return join(self, requests)


class RemoteDecoder:
    """An OpenAI-compatible completions server; several requests are sent concurrently."""

    kind = "remote"

    def __init__(self, endpoint) -> None:
        from vichat.remote import RemoteBackend

        self.backend = RemoteBackend(endpoint)

    def _one(self, r: Request) -> Iterator[str]:
        return self.backend.stream(r.prompt, r.settings, r.stops, r.cancel, r.stats)

    def stream(self, requests: Sequence[Request]) -> Iterator[tuple[int, str]]:
        return each_on_its_own(self._one, requests)

    def generate_batch(self, requests: Sequence[Request]) -> list[str]:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(8, max(1, len(requests)))) as pool:
            return list(pool.map(lambda r: self.backend.complete(r.prompt, r.settings, r.stops), requests))
