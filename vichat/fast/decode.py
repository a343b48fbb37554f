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

from vichat.generation import GenerationSettings


def penalty(settings: GenerationSettings) -> float | None:
    """The repetition penalty to apply, or None where it is 1 (no change)."""
    return None if settings.repetition_penalty == 1.0 else float(settings.repetition_penalty)


def penalize_(scores: torch.Tensor, seen: torch.Tensor, factor: float) -> torch.Tensor:
    """transformers' repetition penalty, in place on one row of scores (vocab,): every token in ``seen``
    (prompt and output ids) has its score divided by ``factor``, or multiplied where it is negative. The same
    numbers as ``RepetitionPenaltyLogitsProcessor``, without its copies of the whole row."""
    ids = seen[seen < scores.shape[0]]
    picked = scores.gather(0, ids)
    return scores.scatter_(0, ids, torch.where(picked < 0, picked * factor, picked / factor))


def _warp(
    values: torch.Tensor, index: torch.Tensor | None, settings: GenerationSettings
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Temperature and top-p over the candidates ``values`` (top-k or sorted, or the whole vocab)."""
    values = values / settings.temperature if settings.temperature != 1.0 else values
    probs = torch.softmax(values, dim=-1)
    if settings.top_p < 1.0:  # keep the smallest head of the sorted list whose mass reaches top_p
        keep = (probs.cumsum(0) - probs) < settings.top_p
        keep[0] = True
        probs = torch.softmax(values.masked_fill(~keep, float("-inf")), dim=-1)
    return probs, index


def candidates(
    scores: torch.Tensor, settings: GenerationSettings
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sampling probabilities after temperature, top-k and top-p, over ``index`` (None: the whole vocab).

    Top-k (or the sort for top-p) comes before the temperature: dividing by a positive number keeps the
    order, and the k candidates are then the only scores divided."""
    if settings.top_k:
        values, index = scores.topk(min(settings.top_k, scores.numel()))
    elif settings.top_p < 1.0:
        values, index = scores.sort(descending=True)
    else:
        values, index = scores, None
    return _warp(values, index, settings)


def new_generator(seed: int | None) -> torch.Generator:
    """A generator of its own for one request: seeded, or from fresh entropy when there is no seed."""
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def _draw(probs: torch.Tensor, index: torch.Tensor | None, generator: torch.Generator | None) -> int:
    if index is not None:  # token-id order: see the module docstring
        index, order = index.sort()
        probs = probs[order]
    choice = int(torch.multinomial(probs, num_samples=1, generator=generator))
    return int(index[choice]) if index is not None else choice


def pick(scores: torch.Tensor, settings: GenerationSettings, generator: torch.Generator | None = None) -> int:
    """The next token from float32 ``scores`` (vocab,): argmax, or a draw from ``generator``."""
    if settings.greedy:
        return int(scores.argmax())
    return _draw(*candidates(scores, settings), generator)


def pick_rows(
    scores: torch.Tensor,
    settings: list[GenerationSettings],
    generators: list[torch.Generator | None],
) -> list[int]:
    """:func:`pick` for every row of ``scores`` (rows, vocab), row b with its own settings and generator.

    The same tokens as :func:`pick` row by row, with the work over the whole vocab done once for the batch:
    one argmax for the greedy rows, one top-k for the rows that sample with top-k (the largest k; a row's
    k best are the first k of it, as topk returns them in order). Only the small candidate lists are per row.
    """
    out = [0] * len(settings)

    def rows(which: list[int]) -> torch.Tensor:
        return scores if len(which) == len(settings) else scores[which]

    greedy = [b for b, s in enumerate(settings) if s.greedy]
    if greedy:
        for b, token in zip(greedy, rows(greedy).argmax(dim=-1).tolist(), strict=True):
            out[b] = token
    top = [b for b, s in enumerate(settings) if not s.greedy and s.top_k]
    if top:
        k = min(max(settings[b].top_k for b in top), scores.shape[1])
        values, index = rows(top).topk(k, dim=-1)
        for j, b in enumerate(top):
            kb = min(settings[b].top_k, k)
            out[b] = _draw(*_warp(values[j, :kb], index[j, :kb], settings[b]), generators[b])
    for b, s in enumerate(settings):
        if not s.greedy and not s.top_k:
            out[b] = pick(scores[b], s, generators[b])
    return out


def eos_ids(model) -> set[int]:
    eos = model.generation_config.eos_token_id
    return set(eos if isinstance(eos, list) else [eos]) - {None}
