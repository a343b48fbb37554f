"""The paper's score arithmetic, and two figures beyond it.

Paper (Sec. IV, Tables III/IV): the judge scores the reference (Assistant 1) and the model (Assistant 2)
from 1 to 10; a question scores model / reference; a category scores 100 x the mean of its questions; the
Total is the same mean over all questions (so categories weigh by their size). Beyond the paper:
ratio-of-sums (100 x sum of model scores / sum of reference scores, steadier when a reference scores low),
both presentation orders averaged per side before the ratio, and win/tie/loss counts.

Everything here is pure arithmetic on :class:`PairScore` rows; where the scores come from is eval.judge.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

Scores = tuple[float, float]  # (Assistant 1, Assistant 2) exactly as the judge wrote them


@dataclass(frozen=True)
class PairScore:
    """One question's scores for a comparison (first, second), averaged over the orders judged.

    In paper mode ``first`` is the reference and ``second`` the model.
    """

    question_id: str
    category: str
    first: float
    second: float
    orders: int = 1


@dataclass(frozen=True)
class Summary:
    categories: dict[str, float | None]  # 100 x mean of question scores, per category
    counts: dict[str, int]  # questions scored per category
    total: float | None  # 100 x mean over all scored questions (the paper's Total)
    ratio_of_sums: float | None  # 100 x sum(second) / sum(first)
    scored: int
    zero_reference: tuple[str, ...]  # question ids left out: the reference scored 0, the ratio is undefined


@dataclass(frozen=True)
class WinTieLoss:
    first_wins: int
    ties: int
    second_wins: int

    @property
    def n(self) -> int:
        return self.first_wins + self.ties + self.second_wins

    def second_win_rate(self) -> float | None:
        """Share of questions the second side wins, ties counting half."""
        return (self.second_wins + 0.5 * self.ties) / self.n if self.n else None


def combine_orders(forward: Scores | None, swapped: Scores | None) -> tuple[float, float, int] | None:
    """(first, second, orders) from the judge's scores in each order, averaged per side.

    ``forward`` shows first as Assistant 1; ``swapped`` shows second as Assistant 1. Either may be None
    (not judged, or unparsable): the other is used alone. None when neither is there.
    """
    sides = []
    if forward is not None:
        sides.append((forward[0], forward[1]))
    if swapped is not None:
        sides.append((swapped[1], swapped[0]))
    if not sides:
        return None
    return sum(s[0] for s in sides) / len(sides), sum(s[1] for s in sides) / len(sides), len(sides)


def question_score(pair: PairScore) -> float | None:
    """model / reference (second / first); None when the reference scored 0."""
    return pair.second / pair.first if pair.first > 0 else None


def summarize(pairs: Iterable[PairScore], categories: Sequence[str] | None = None) -> Summary:
    """Category scores, the sample-weighted Total and the ratio-of-sums for one comparison."""
    pairs = list(pairs)
    by_category: dict[str, list[float]] = defaultdict(list)
    every: list[float] = []
    zero: list[str] = []
    for pair in pairs:
        score = question_score(pair)
        if score is None:
            zero.append(pair.question_id)
            continue
        by_category[pair.category].append(score)
        every.append(score)
    order = list(categories) if categories is not None else sorted(by_category)
    category_scores = {
        c: (100 * sum(by_category[c]) / len(by_category[c]) if by_category[c] else None) for c in order
    }
    first_sum = sum(p.first for p in pairs)
    return Summary(
        categories=category_scores,
        counts={c: len(by_category[c]) for c in order},
        total=100 * sum(every) / len(every) if every else None,
        ratio_of_sums=100 * sum(p.second for p in pairs) / first_sum if first_sum > 0 else None,
        scored=len(every),
        zero_reference=tuple(zero),
    )


def weighted_total(category_scores: Mapping[str, float], counts: Mapping[str, int]) -> float:
    """The Total from category scores: their mean weighted by question count (equal to the per-question mean)."""
    n = sum(counts[c] for c in category_scores)
    return sum(category_scores[c] * counts[c] for c in category_scores) / n


def win_tie_loss(pairs: Iterable[PairScore]) -> WinTieLoss:
    first = ties = second = 0
    for pair in pairs:
        if pair.first > pair.second:
            first += 1
        elif pair.first < pair.second:
            second += 1
        else:
            ties += 1
    return WinTieLoss(first, ties, second)
