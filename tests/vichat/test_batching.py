"""Batched serving on the fast path (vichat.fast.scheduler, vichat.backends): mixed adapters in one batch,
per-request seeds, continuous batching, cancellation, bounds. A tiny random Gemma 3 (tests/vichat/test_fast.py
builds it); exact comparisons use an fp32 engine, where the batched step equals the single-sequence one up to
summation order."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from tests.vichat.test_fast import PROMPTS, _fp32_engine, _registry, gemma_tiny  # noqa: F401 - fixture
from vichat.errors import PromptError
from vichat.fast.scheduler import Scheduler
from vichat.generation import GenerationSettings, GenerationStats

GREEDY = GenerationSettings(max_new_tokens=24, temperature=0)
SAMPLED = GenerationSettings(max_new_tokens=24, temperature=1.0, top_k=50, seed=7)
NAMES = ["g-base", "g-chat", "g-doctor"]


@pytest.fixture()
def reg(tmp_path, gemma_tiny):  # noqa: F811
    reg = _registry(tmp_path, gemma_tiny)
    _fp32_engine(reg)
    return reg


def _wait_until(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the state was not reached"
        time.sleep(0.01)


def _together(reg, items, settings, **kw) -> list[str]:
    texts = [""] * len(items)
    for i, piece in reg.stream_together(items, settings, **kw):
        texts[i] += piece
    return [t.strip() for t in texts]


def _sched(reg) -> Scheduler:
    return reg.scheduler(reg.loaded_base("g"))


def test_mixed_adapter_batch_equals_each_alone(reg):
    items = [(n, p) for n in NAMES for p in PROMPTS[:2]]
    alone = [reg.generate(n, p, GREEDY) for n, p in items]
    sched = _sched(reg)
    steps, rows = sched.steps, sched.rows_decoded
    assert _together(reg, items, GREEDY) == alone
    assert sched.peak_batch == len(items) and (sched.rows_decoded - rows) / (sched.steps - steps) > 2
    assert len(set(alone[::2])) == 3  # the three variants really differ: each row had its own adapter


def test_generate_batch_is_one_batch(reg):
    alone = [reg.generate("g-doctor", p, GREEDY) for p in PROMPTS]
    sched = _sched(reg)
    before = sched.steps
    assert reg.generate_batch("g-doctor", PROMPTS, GREEDY) == alone
    assert sched.peak_batch == len(PROMPTS) and sched.steps - before <= GREEDY.max_new_tokens


@pytest.mark.parametrize("threads", [1, 2])
def test_same_seed_same_tokens_whatever_the_batch_and_threads(reg, threads):
    reference = reg.generate("g-chat", PROMPTS[0], SAMPLED)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(123)  # the global RNG plays no part
        others = [(n, p) for n in NAMES for p in PROMPTS[1:]]
        seeds = [GenerationSettings(**{**SAMPLED.to_dict(), "seed": s}) for s in range(len(others))]
        texts = [""] * (len(others) + 1)
        # the request of interest in the middle of a batch of six others with their own seeds
        streams = [reg.request(n, p, s) for (n, p), s in zip(others, seeds, strict=True)]
        decoder, mine = reg.request("g-chat", PROMPTS[0], SAMPLED)
        requests = [r for _, r in streams[:3]] + [mine] + [r for _, r in streams[3:]]
        for i, piece in decoder.stream(requests):
            texts[i] += piece
        torch.rand(1000)
        assert texts[3].strip() == reference
        assert reg.generate("g-chat", PROMPTS[0], SAMPLED) == reference
    finally:
        torch.set_num_threads(before)
    assert reg.generate("g-chat", PROMPTS[0], SAMPLED.with_(seed=8)) != reference


def test_a_request_cancelled_mid_batch_leaves_the_others_untouched(reg):
    long = GREEDY.with_(max_new_tokens=40)
    items = [(n, PROMPTS[0]) for n in NAMES]
    alone = [reg.generate(n, p, long) for n, p in items]
    cancels = [None, threading.Event(), None]
    stats = [GenerationStats() for _ in items]
    texts = ["", "", ""]
    for i, piece in reg.stream_together(items, long, cancels=cancels, stats=stats):
        texts[i] += piece
        if i == 1 and len(texts[1]) > 3:
            cancels[1].set()
    assert stats[1].stopped_by == "cancelled" and stats[1].new_tokens < long.max_new_tokens
    assert alone[1].startswith(texts[1].strip())
    assert [texts[0].strip(), texts[2].strip()] == [alone[0], alone[2]]


def test_requests_join_and_leave_a_running_batch(reg):
    long, short = GREEDY.with_(max_new_tokens=40), GREEDY.with_(max_new_tokens=6)
    want_long = reg.generate("g-chat", PROMPTS[1], long)
    want_short = reg.generate("g-doctor", PROMPTS[2], short)
    sched = _sched(reg)
    got: dict[str, str] = {}
    first = reg.stream("g-chat", PROMPTS[1], long)
    got["long"] = next(first)
    got["short"] = reg.generate("g-doctor", PROMPTS[2], short)  # joins, ends at its own stop, leaves
    assert sched.busy() == 1  # the long one is still decoding
    got["long"] += "".join(first)
    assert got["long"].strip() == want_long and got["short"] == want_short
    assert sched.peak_batch == 2


def test_the_batch_is_bounded_and_the_rest_wait_their_turn(tmp_path, gemma_tiny):  # noqa: F811
    reg = _registry(tmp_path, gemma_tiny)
    reg.max_batch = 2
    _fp32_engine(reg)
    items = [(NAMES[i % 3], PROMPTS[i % 3]) for i in range(5)]
    alone = [reg.generate(n, p, GREEDY) for n, p in items]
    assert _together(reg, items, GREEDY) == alone
    sched = _sched(reg)
    assert sched.max_batch == 2 and sched.peak_batch == 2 and sched.pool.slots == 2


def test_closing_a_stream_frees_its_rows(reg):
    sched = _sched(reg)
    it = reg.stream_together([(n, PROMPTS[0]) for n in NAMES], GREEDY.with_(max_new_tokens=200))
    next(it)
    it.close()
    _wait_until(lambda: sched.busy() == 0)
    assert reg.generate("g-chat", PROMPTS[0], GREEDY) == reg.generate("g-chat-x", PROMPTS[0], GREEDY)


def test_a_prompt_longer_than_a_kv_slot_is_refused_clearly(reg):
    sched = _sched(reg)
    sched.capacity = 40
    with pytest.raises(PromptError, match=r"at most 16 prompt tokens \(40 per conversation\)"):
        reg.generate("g-chat", "một câu hỏi rất dài " * 10, GREEDY)
    assert sched.busy() == 0


def test_reference_and_fast_variants_stream_together(reg):
    items = [("g-chat", PROMPTS[0]), ("g-chat-x", PROMPTS[1])]  # one fast, one on transformers
    assert _together(reg, items, GREEDY) == [reg.generate(n, p, GREEDY) for n, p in items]


def test_error_in_a_step_reaches_every_caller_and_the_engine_recovers(reg, monkeypatch):
    engine = reg.loaded_base("g").fast
    real = engine.decode_step
    calls = {"n": 0}

    def broken(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated kernel failure")
        return real(*args, **kw)

    monkeypatch.setattr(engine, "decode_step", broken)
    with pytest.raises(RuntimeError, match="simulated kernel failure"):
        _together(reg, [(n, PROMPTS[0]) for n in NAMES], GREEDY)
    _wait_until(lambda: _sched(reg).busy() == 0)
    assert reg.generate("g-chat", PROMPTS[0], GREEDY) == reg.generate("g-chat-x", PROMPTS[0], GREEDY)


def test_rows_of_each_adapter_stay_side_by_side_as_requests_join_and_leave(tmp_path, gemma_tiny, monkeypatch):  # noqa: F811
    reg = _registry(tmp_path, gemma_tiny)
    reg.max_batch = 4  # the rest wait and join a running batch as rows leave
    _fp32_engine(reg)
    # interleaved adapters with staggered ends: joins land inside the batch, leaves move rows between groups
    items = [(NAMES[i % 3], PROMPTS[i % 3]) for i in range(7)]
    settings = [GREEDY.with_(max_new_tokens=n) for n in (5, 30, 12, 20, 8, 26, 16)]
    alone = [reg.generate(n, p, s) for (n, p), s in zip(items, settings, strict=True)]
    sched = _sched(reg)
    engine = reg.loaded_base("g").fast
    real = engine.decode_step
    groups_per_step: list[int] = []

    def checked(tokens, lengths, pool, loras):
        assert [job.slot for job in sched._active] == list(range(len(tokens)))
        assert [job.length for job in sched._active] == lengths
        for _, rows in loras:
            assert rows is None or isinstance(rows, slice), "an adapter's rows were not side by side"
        adapters = [job.adapter for job in sched._active]
        runs = [a for k, a in enumerate(adapters) if k == 0 or a != adapters[k - 1]]
        assert len(runs) == len(set(runs))  # each adapter (and the bare base) in one run of rows
        groups_per_step.append(len(runs))
        return real(tokens, lengths, pool, loras)

    monkeypatch.setattr(engine, "decode_step", checked)
    streams = [reg.request(n, p, s) for (n, p), s in zip(items, settings, strict=True)]
    texts = [""] * len(items)
    for i, piece in streams[0][0].stream([r for _, r in streams]):
        texts[i] += piece
    assert [t.strip() for t in texts] == alone
    assert max(groups_per_step) == 3 and sched.peak_batch == 4
