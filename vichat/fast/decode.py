"""Sampling for the fast path: the same settings, distribution and stop rules as generation.py.

Sampling follows ``generate``: transformers' repetition penalty (over prompt and output), then temperature,
top-k and top-p, then a draw. Top-k is taken first and the rest works on those k candidates only (the same
distribution as masking the other 262k scores, at a fraction of the cost).

Each request draws from its own ``torch.Generator``, seeded from its ``seed``: the same seed gives the same
tokens whatever else runs, in the batch or elsewhere in the process. The candidates are put in token-id
order before the draw, so two candidates whose scores differ in the last bit (a batch of another size sums
in another order) keep their places and the draw picks the same token.
"""

from __future__ import annotations

import torch
from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

from vichat.generation import GenerationSettings


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


def new_generator(seed: int | None) -> torch.Generator:
    """A generator of its own for one request: seeded, or from fresh entropy when there is no seed."""
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def pick(scores: torch.Tensor, settings: GenerationSettings, generator: torch.Generator | None = None) -> int:
    """The next token from float32 ``scores`` (vocab,): argmax, or a draw from ``generator``."""
    if settings.greedy:
        return int(scores.argmax())
    probs, index = candidates(scores, settings)
    if index is not None:  # token-id order: see the module docstring
        index, order = index.sort()
        probs = probs[order]
    choice = int(torch.multinomial(probs, num_samples=1, generator=generator))
    return int(index[choice]) if index is not None else choice


def eos_ids(model) -> set[int]:
    eos = model.generation_config.eos_token_id
    return set(eos if isinstance(eos, list) else [eos]) - {None}
