"""The fast path's decoding loop: same settings, sampling, stop markers, seeds and stats as generation.py.

Sampling follows ``generate``: transformers' repetition penalty (over prompt and output), then temperature,
top-k and top-p, then ``torch.multinomial`` on the global RNG, so ``seed`` reproduces a run. Top-k is taken
first and the rest works on those k candidates only (the same distribution as masking the other 262k
scores, at a fraction of the cost). The loop runs in the caller's thread: closing the iterator or setting
``cancel`` stops it before the next token.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import torch
from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

from vichat.fast.gemma import GemmaFast, LoraPack
from vichat.generation import (
    GenerationSettings,
    GenerationStats,
    StopFilter,
    encode_prompt,
    ensure_pad_token,
)


def penalty(settings: GenerationSettings) -> RepetitionPenaltyLogitsProcessor | None:
    if settings.repetition_penalty == 1.0:
        return None
    return RepetitionPenaltyLogitsProcessor(settings.repetition_penalty)


def candidates(
    scores: torch.Tensor, settings: GenerationSettings
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sampling probabilities after temperature, top-k and top-p, over ``index`` (None: the whole vocab)."""
    scores = scores / settings.temperature if settings.temperature != 1.0 else scores
    if settings.top_k:
        values, index = scores.topk(min(settings.top_k, scores.numel()))
    elif settings.top_p < 1.0:
        values, index = scores.sort(descending=True)
    else:
        values, index = scores, None
    probs = torch.softmax(values, dim=-1)
    if settings.top_p < 1.0:  # keep the smallest head of the sorted list whose mass reaches top_p
        keep = (probs.cumsum(0) - probs) < settings.top_p
        keep[0] = True
        probs = torch.softmax(values.masked_fill(~keep, float("-inf")), dim=-1)
    return probs, index


def pick(scores: torch.Tensor, settings: GenerationSettings) -> int:
    """The next token from float32 ``scores`` (vocab,): argmax, or a sample as ``generate`` draws it."""
    if settings.greedy:
        return int(scores.argmax())
    probs, index = candidates(scores, settings)
    choice = int(torch.multinomial(probs, num_samples=1))
    return int(index[choice]) if index is not None else choice


def eos_ids(model) -> set[int]:
    eos = model.generation_config.eos_token_id
    return set(eos if isinstance(eos, list) else [eos]) - {None}


def tokens(
    engine: GemmaFast, ids: list[int], settings: GenerationSettings, lora: LoraPack, eos: set[int]
) -> Iterator[int]:
    """Token ids after ``ids``, one at a time, up to an end-of-sequence token or ``max_new_tokens``."""
    repeat = penalty(settings)
    cache = engine.new_cache(len(ids) + settings.max_new_tokens)
    seen = torch.tensor([ids + [0] * settings.max_new_tokens])
    n = len(ids)
    choice, before = engine.threads, torch.get_num_threads()
    try:
        _use_threads(choice.for_prompt())
        logits = engine.forward(ids, cache, lora)
        for step in range(settings.max_new_tokens):
            scores = repeat(seen[:, :n], logits[None])[0] if repeat else logits
            token = pick(scores, settings)
            yield token
            if token in eos or step + 1 == settings.max_new_tokens:
                return
            seen[0, n] = token
            n += 1
            _use_threads(choice.current)
            start = time.perf_counter()
            logits = engine.forward([token], cache, lora)
            choice.observe(time.perf_counter() - start)
    finally:
        _use_threads(before)


def _use_threads(n: int) -> None:
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def stream(
    engine: GemmaFast,
    model,
    adapter: str | None,
    tokenizer,
    prompt: str,
    settings: GenerationSettings,
    stops=(),
    cancel: threading.Event | None = None,
    stats: GenerationStats | None = None,
) -> Iterator[str]:
    """Yield the response piece by piece, as :func:`vichat.generation.stream` does, on ``engine``.

    ``model`` is the loaded (PEFT) model the engine was built from: the adapter's LoRA weights come from it.
    The caller holds the base's lock (``LoadedBase.use``) for as long as this runs.
    """
    ensure_pad_token(tokenizer)
    stats = stats if stats is not None else GenerationStats()
    ids = encode_prompt(tokenizer, model, prompt, settings.max_new_tokens)
    stats.prompt_tokens = len(ids)
    lora = engine.lora_pack(model, adapter)
    eos = eos_ids(model)
    start = time.perf_counter()
    if settings.seed is not None:
        torch.manual_seed(settings.seed)
    produced: list[int] = []
    shown = StopFilter(stops)
    stats.stopped_by = "length"
    source = tokens(engine, ids, settings, lora, eos)
    try:
        for token in source:
            if stats.first_token_s is None:
                stats.first_token_s = time.perf_counter() - start
            produced.append(token)
            stats.new_tokens = len(produced)
            if token in eos:
                stats.stopped_by = "eos"
                break
            text = tokenizer.decode(produced, skip_special_tokens=True)
            if not text.endswith("\ufffd"):  # not in the middle of a multi-byte character
                piece = shown.update(text)
                if piece:
                    yield piece
            if shown.stopped:
                stats.stopped_by = "stop"
                return
            if cancel is not None and cancel.is_set():
                stats.stopped_by = "cancelled"
                break
        last = shown.update(tokenizer.decode(produced, skip_special_tokens=True)) + shown.finish()
        if last:
            yield last
    except GeneratorExit:  # the consumer stopped early
        stats.stopped_by = "cancelled"
        raise
    finally:
        source.close()
        stats.total_s = time.perf_counter() - start


def generate(
    engine: GemmaFast, model, adapter: str | None, tokenizer, prompt: str, settings, stops=()
) -> str:
    """The whole response (cut at the stop markers, stripped), as one string."""
    return "".join(stream(engine, model, adapter, tokenizer, prompt, settings, stops)).strip()
