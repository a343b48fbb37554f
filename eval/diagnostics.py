"""How far to trust the judge: position bias, length bias, its reasons per question, and what it really cost.

    python -m eval.diagnostics --set general [--variants A,B] [--out-dir runs/eval] [--show ID]
        [--reference reference] [--judge-model gpt-4] [--base-url URL] [--price IN,OUT]

eval.judge shows each comparison (first, second) in both orders: ``forward`` with first as Assistant 1,
``swapped`` with second as Assistant 1. From the verdicts cached for one comparison this module computes:

- **flip rate**: over the questions judged in both orders, the mean of |p_forward - p_swapped| / 2, where p is
  the side the judge prefers in that order (+1 first, 0 a tie, -1 second). A reversal (first wins in one
  order, second in the other) counts 1; a tie in one order and a win in the other counts half; the same
  preference both ways counts 0. A judge without position bias flips only where it is unsure.
- **position bias**: over the same questions, the mean score advantage of Assistant 1 (its score minus
  Assistant 2's) averaged over the two orders, in points. Showing each side first once cancels the answers'
  own difference, so what remains is what being shown first is worth.
- **length correlation**, with length in characters of the answer text: Pearson's r and Spearman's rho
  between an answer's score (averaged over the orders judged) and its length, two points per question
  (first's answer and second's), and between the score difference (second - first) and the length
  difference (second - first), one point per question. None with fewer than 3 points or no spread.
- **per-question rows** (:class:`QuestionRow`): question, both answers, each order's scores as the judge
  wrote them (Assistant 1, Assistant 2) and its explanation (the text after the score line), unparsable
  verdicts noted with their raw text.
- **actual cost**: the usage the endpoint reported, summed over every call behind these verdicts (the
  unreadable answers asked again were paid too), priced with eval.cost, beside the estimate eval.judge
  made for the same calls (kept in each record; recomputed the same way for records older than that).

eval.report calls :func:`diagnose` per comparison and writes the section and ``<set>.questions.jsonl``; this
CLI prints the same table (:func:`markdown_section`) from the same :func:`eval.report.build_report`, and
``--show ID`` one question (:func:`show_question`). The app's Judge tab uses the same functions.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from eval import cost
from eval.parse import parse_scores
from eval.scoring import combine_orders
from eval.verdicts import FORWARD, SWAPPED, JudgePrompt, JudgmentCache, Task
from vichat.errors import ViChatError
from vichat.jsonl import read_records

SCORED, UNPARSABLE, MISSING = "scored", "unparsable", "missing"
LENGTH_UNIT = "characters"
MIN_POINTS = 3  # fewer points give no correlation worth printing (two points always lie on a line)
_SCORE_LINE_WORDS = 6  # a first line with more words than this is prose that also names the scores


# ----------------------------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class OrderVerdict:
    """What the judge said about one question in one order."""

    order: str
    assistant_1: str
    assistant_2: str
    status: str  # SCORED, UNPARSABLE (no readable scores: ``explanation`` holds the raw text) or MISSING
    scores: tuple[float, float] | None = None  # (Assistant 1, Assistant 2) exactly as the judge wrote them
    explanation: str = ""

    def for_sides(self) -> tuple[float, float] | None:
        """The scores as (first, second) of the comparison, whichever was shown first."""
        if self.scores is None:
            return None
        return self.scores if self.order == FORWARD else (self.scores[1], self.scores[0])

    def to_record(self) -> dict:
        return {
            "assistant_1": self.assistant_1,
            "assistant_2": self.assistant_2,
            "status": self.status,
            "scores": None if self.scores is None else list(self.scores),
            "explanation": self.explanation,
        }


@dataclass(frozen=True)
class QuestionRow:
    """One question of one comparison: both answers and the verdict in each order."""

    question_id: str
    category: str
    question: str
    first: str
    second: str
    first_answer: str
    second_answer: str
    forward: OrderVerdict
    swapped: OrderVerdict

    @property
    def averaged(self) -> tuple[float, float] | None:
        """(first, second) averaged over the orders with a verdict (eval.scoring.combine_orders)."""
        both = combine_orders(self.forward.scores, self.swapped.scores)  # each as the judge wrote it
        return None if both is None else (both[0], both[1])

    @property
    def both_orders(self) -> bool:
        return self.forward.scores is not None and self.swapped.scores is not None

    def to_record(self) -> dict:
        """The row as one line of ``<set>.questions.jsonl``."""
        averaged = self.averaged
        return {
            "id": self.question_id,
            "category": self.category,
            "question": self.question,
            "first": self.first,
            "second": self.second,
            "first_answer": self.first_answer,
            "second_answer": self.second_answer,
            "first_length": len(self.first_answer),
            "second_length": len(self.second_answer),
            "forward": self.forward.to_record(),
            "swapped": self.swapped.to_record(),
            "averaged": None if averaged is None else list(averaged),
            "flip": flip_of(self),
        }


def _words(text: str) -> int:
    return len(re.findall(r"[^\W\d_]+", text))


def explanation(raw: str, scores: Sequence[float] | None) -> str:
    """The judge's reasons: ``raw`` after its score line (the first non-blank line, or the first two when the
    scores are a numbered list) when that line gives ``scores`` and little else; else the whole text."""
    raw = raw if isinstance(raw, str) else ""
    if scores is None:
        return raw.strip()
    lines = raw.splitlines()
    marks = [i for i, line in enumerate(lines) if line.strip(" \t*#_`>-")]
    for k in (1, 2):
        if len(marks) < k:
            break
        end = marks[k - 1] + 1
        head = lines[:end]
        if any(_words(line) > _SCORE_LINE_WORDS for line in head):
            break
        if parse_scores("\n".join(head)) == tuple(scores) and "\n".join(lines[end:]).strip():
            return "\n".join(lines[end:]).strip()
    return raw.strip()


def _order_verdict(task: Task | None, order: str, first: str, second: str, cache: JudgmentCache):
    one, two = (first, second) if order == FORWARD else (second, first)
    if task is None:
        return OrderVerdict(order, one, two, MISSING)
    record = cache.get(task.key)
    if record is not None:
        scores = (float(record["scores"][0]), float(record["scores"][1]))
        return OrderVerdict(order, one, two, SCORED, scores, explanation(record.get("raw", ""), scores))
    bad = cache.unparsable(task.key)
    if bad is not None:
        return OrderVerdict(order, one, two, UNPARSABLE, None, explanation(bad.get("raw", ""), None))
    return OrderVerdict(order, one, two, MISSING)


def question_rows(first: str, second: str, tasks: Iterable[Task], cache: JudgmentCache) -> list[QuestionRow]:
    """A row per question of the comparison (first, second) that has a verdict or an unreadable answer in at
    least one order, in the order of ``tasks``; tasks of other comparisons are ignored."""
    by_question: dict[str, dict[str, Task]] = defaultdict(dict)
    for task in tasks:
        if (task.first, task.second) == (first, second):
            by_question[task.question_id][task.order] = task
    rows = []
    for qid, orders in by_question.items():
        forward, swapped = orders.get(FORWARD), orders.get(SWAPPED)
        verdicts = [
            _order_verdict(task, o, first, second, cache)
            for o, task in ((FORWARD, forward), (SWAPPED, swapped))
        ]
        if all(v.status == MISSING for v in verdicts):
            continue
        any_task = forward or swapped
        if forward is not None:
            first_answer, second_answer = forward.answer_1, forward.answer_2
        else:
            first_answer, second_answer = swapped.answer_2, swapped.answer_1
        rows.append(
            QuestionRow(
                qid,
                any_task.category,
                any_task.question,
                first,
                second,
                first_answer,
                second_answer,
                verdicts[0],
                verdicts[1],
            )  # fmt: skip
        )
    return rows


# ----------------------------------------------------------------------------------------------- position


def _preference(scores: tuple[float, float]) -> int:
    """+1 when the first side scores higher, -1 when the second does, 0 for a tie."""
    return (scores[0] > scores[1]) - (scores[0] < scores[1])


def flip_of(row: QuestionRow) -> float | None:
    """1 for a reversal, 0.5 for a tie in one order and a win in the other, 0 for none; None unless both
    orders have a verdict."""
    if not row.both_orders:
        return None
    return abs(_preference(row.forward.for_sides()) - _preference(row.swapped.for_sides())) / 2


@dataclass(frozen=True)
class FlipStats:
    both_orders: int  # questions with a verdict in both orders
    reversals: int  # the winner changes with the order
    half_flips: int  # a tie in one order, a win in the other
    flip_rate: float | None  # (reversals + half_flips / 2) / both_orders
    position_bias: float | None  # mean advantage of Assistant 1, in points, over the two orders


def flip_stats(rows: Iterable[QuestionRow]) -> FlipStats:
    """Flip rate and position bias over the rows judged in both orders (see the module's docstring)."""
    flips, advantages = [], []
    for row in rows:
        flip = flip_of(row)
        if flip is None:
            continue
        flips.append(flip)
        f, s = row.forward.scores, row.swapped.scores
        advantages.append(((f[0] - f[1]) + (s[0] - s[1])) / 2)
    n = len(flips)
    return FlipStats(
        both_orders=n,
        reversals=sum(f == 1 for f in flips),
        half_flips=sum(f == 0.5 for f in flips),
        flip_rate=sum(flips) / n if n else None,
        position_bias=sum(advantages) / n if n else None,
    )


# ----------------------------------------------------------------------------------------------- length


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Pearson's r; None with fewer than :data:`MIN_POINTS` points or when either side has no spread."""
    if len(xs) != len(ys):
        raise ValueError(f"pearson: {len(xs)} x values but {len(ys)} y values")
    n = len(xs)
    if n < MIN_POINTS:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx <= 0 or syy <= 0:
        return None
    return max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks; tied values share the mean of their ranks."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rho: Pearson's r of the ranks (ties averaged)."""
    if len(xs) != len(ys):
        raise ValueError(f"spearman: {len(xs)} x values but {len(ys)} y values")
    return pearson(ranks(xs), ranks(ys))


@dataclass(frozen=True)
class Correlation:
    pearson: float | None
    spearman: float | None
    n: int  # points


def correlation(xs: Sequence[float], ys: Sequence[float]) -> Correlation:
    return Correlation(pearson(xs, ys), spearman(xs, ys), len(xs))


@dataclass(frozen=True)
class LengthStats:
    score_vs_length: Correlation  # an answer's score against its length, two points per question
    difference: Correlation  # (second - first) score against (second - first) length, one per question
    unit: str = LENGTH_UNIT


def length_stats(rows: Iterable[QuestionRow]) -> LengthStats:
    """How much the score follows the answer's length (in characters), over the rows with a verdict."""
    scores, lengths, score_gaps, length_gaps = [], [], [], []
    for row in rows:
        averaged = row.averaged
        if averaged is None:
            continue
        one, two = len(row.first_answer), len(row.second_answer)
        scores += [averaged[0], averaged[1]]
        lengths += [one, two]
        score_gaps.append(averaged[1] - averaged[0])
        length_gaps.append(two - one)
    return LengthStats(correlation(lengths, scores), correlation(length_gaps, score_gaps))


# ----------------------------------------------------------------------------------------------- cost


@dataclass(frozen=True)
class CostCheck:
    """What the calls behind a comparison's verdicts used and cost, beside what eval.judge estimated."""

    calls: int  # verdicts plus unreadable answers (each one a paid call)
    prompt_tokens: int
    completion_tokens: int
    estimated_prompt_tokens: int
    estimated_completion_tokens: int
    price: tuple[float, float] | None
    without_usage: int = 0  # calls whose record carries no usage (counted as 0 tokens)
    recomputed: int = 0  # calls whose record carries no estimate (made before they were kept): recomputed

    @property
    def usd(self) -> float | None:
        return cost.usd(self.prompt_tokens, self.completion_tokens, self.price)

    @property
    def estimated_usd(self) -> float | None:
        return cost.usd(self.estimated_prompt_tokens, self.estimated_completion_tokens, self.price)


def _tokens(part) -> tuple[int, int] | None:
    """(prompt, completion) from a record's ``usage`` or ``estimate``; None when it is not two counts."""
    if not isinstance(part, dict):
        return None
    values = [part.get("prompt_tokens"), part.get("completion_tokens")]
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 10**12 for v in values):
        return None
    return values[0], values[1]


def judge_cost(
    tasks: Iterable[Task],
    cache: JudgmentCache,
    price: tuple[float, float] | None,
    prompt: JudgePrompt | None = None,
) -> CostCheck:
    """Usage and estimate summed over every call recorded for ``tasks``: each verdict, and every unreadable
    answer in ``<judge>.unparsable.jsonl`` for the same tasks (asked again, so paid again)."""
    unique = {t.key: t for t in tasks}
    paid: list[tuple[Task, dict]] = []
    for path in (cache.path, cache.unparsable_path):  # every line is a call that was made and paid
        for record in read_records(path):
            if isinstance(record.get("key"), str) and record["key"] in unique:
                paid.append((unique[record["key"]], record))
    used, expected = [0, 0], [0, 0]
    without_usage = recomputed = 0
    for task, record in paid:
        usage = _tokens(record.get("usage"))
        if usage is None:
            without_usage += 1
        else:
            used = [used[0] + usage[0], used[1] + usage[1]]
        estimate = _tokens(record.get("estimate"))
        if estimate is None:
            recomputed += 1
            prompt = prompt or JudgePrompt.load()
            e = cost.estimate([prompt.messages(task.question, task.answer_1, task.answer_2)], None)
            estimate = (e.prompt_tokens, e.completion_tokens)
        expected = [expected[0] + estimate[0], expected[1] + estimate[1]]
    return CostCheck(len(paid), used[0], used[1], expected[0], expected[1], price, without_usage, recomputed)


# ----------------------------------------------------------------------------------------------- together


@dataclass(frozen=True)
class Diagnostics:
    """Everything this module says about one comparison (first, second) on one set."""

    first: str
    second: str
    rows: tuple[QuestionRow, ...]
    flips: FlipStats
    length: LengthStats
    cost: CostCheck
    unparsable: int = 0  # order-verdicts with no readable scores

    @property
    def label(self) -> str:
        return f"{self.first} vs {self.second}"

    def row(self, question_id: str) -> QuestionRow | None:
        return next((r for r in self.rows if r.question_id == question_id), None)


def diagnose(
    first: str,
    second: str,
    tasks: Sequence[Task],
    cache: JudgmentCache,
    *,
    price: tuple[float, float] | None = None,
    prompt: JudgePrompt | None = None,
) -> Diagnostics:
    """The diagnostics of the comparison (first, second) from its tasks (give both orders) and the cache.

    ``price``: (input, output) USD per 1M tokens (eval.cost.price_for); None leaves the dollars unknown.
    ``prompt``: used only to recompute the estimate of records made before it was kept (default: the file's).
    """
    mine = [t for t in tasks if (t.first, t.second) == (first, second)]
    rows = tuple(question_rows(first, second, mine, cache))
    unparsable = sum(v.status == UNPARSABLE for r in rows for v in (r.forward, r.swapped))
    return Diagnostics(
        first, second, rows, flip_stats(rows), length_stats(rows), judge_cost(mine, cache, price, prompt),
        unparsable,
    )  # fmt: skip


def question_records(diagnostics: Iterable[Diagnostics]) -> list[dict]:
    """Every row of every comparison, as the lines of ``<set>.questions.jsonl``."""
    return [row.to_record() for d in diagnostics for row in d.rows]


# ----------------------------------------------------------------------------------------------- text


def _num(value: float | None, digits: int = 2, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _pair(c: Correlation) -> str:
    return f"{_num(c.pearson, signed=True)} / {_num(c.spearman, signed=True)} (n={c.n})"


def _dollars(value: float | None) -> str:
    return "-" if value is None else f"${value:,.4f}"


SUMMARY_HEADER = [
    "comparison",
    "both orders",
    "flip rate",
    "position bias (points)",
    "score ~ length r / rho",
    "score gap ~ length gap r / rho",
    "tokens used (estimated)",
    "cost (estimated)",
]


def summary_table(diagnostics: Iterable[Diagnostics]) -> list[list[str]]:
    """Header and one row per comparison: the numbers the report, the CLI and the app all show."""
    rows = [list(SUMMARY_HEADER)]
    for d in diagnostics:
        f, c = d.flips, d.cost
        flips = (
            "-" if f.flip_rate is None else f"{100 * f.flip_rate:.1f}% ({f.reversals} + {f.half_flips} half)"
        )
        tokens = (
            f"{c.prompt_tokens:,} + {c.completion_tokens:,} "
            f"({c.estimated_prompt_tokens:,} + {c.estimated_completion_tokens:,})"
        )
        rows.append(
            [
                d.label,
                f"{f.both_orders}/{len(d.rows)}",
                flips,
                _num(f.position_bias, signed=True),
                _pair(d.length.score_vs_length),
                _pair(d.length.difference),
                tokens,
                f"{_dollars(c.usd)} ({_dollars(c.estimated_usd)})",
            ]
        )
    return rows


def markdown_section(diagnostics: Sequence[Diagnostics], level: int = 2) -> list[str]:
    """The "Judge diagnostics" section of the report (and what the CLI prints), as markdown lines."""
    lines = ["#" * level + " Judge diagnostics", ""]
    if not diagnostics:
        return [*lines, "No verdicts to diagnose yet: run `python -m eval.judge` (both orders)."]
    table = summary_table(diagnostics)
    lines += ["| " + " | ".join(table[0]) + " |", "|" + "|".join("---" for _ in table[0]) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in table[1:]]
    lines += [
        "",
        "Both orders: questions judged with each side shown first once, of those with any verdict. "
        "Flip rate: the share of those whose preferred side changes with the order (a reversal counts 1, "
        "a tie in one order and a win in the other 1/2). Position bias: Assistant 1's mean score advantage "
        "over the two orders, in points (0 for a fair judge). r / rho: Pearson / Spearman between an "
        f"answer's score and its length in {LENGTH_UNIT} (two points per question), and between the score "
        "gap and the length gap (second - first, one point per question); '-' with under "
        f"{MIN_POINTS} points or no spread. Tokens and cost: as the endpoint reported them for every call "
        "behind these verdicts (unreadable answers included), the estimate eval.judge made for the same "
        "calls in brackets; '-' where the judge's price is unknown (pass --price IN,OUT).",
    ]
    for d in diagnostics:
        if d.flips.both_orders == 0:
            lines.append(
                f"\n{d.label}: no question was judged in both orders (run eval.judge without "
                "--single-order to measure position bias)."
            )
        if d.unparsable:
            lines.append(f"\n{d.label}: {d.unparsable} verdict(s) could not be read (in the questions file).")
        if d.cost.without_usage:
            lines.append(
                f"\n{d.label}: {d.cost.without_usage} call(s) carry no usage; the tokens used are a floor."
            )
    return lines


def _scores_text(v: OrderVerdict) -> str:
    if v.status == SCORED:
        return f"{v.assistant_1} {v.scores[0]:g}, {v.assistant_2} {v.scores[1]:g}"
    return "unparsable (raw text below)" if v.status == UNPARSABLE else "not judged"


def show_question(diagnostics: Iterable[Diagnostics], question_id: str) -> str:
    """One question as text: the question, both answers, and each order's scores and explanation, for every
    comparison that judged it. A ViChatError when no comparison has it."""
    blocks = []
    for d in diagnostics:
        row = d.row(question_id)
        if row is None:
            continue
        lines = [
            f"## {row.question_id} ({row.category}): {d.label}",
            "",
            f"Question: {row.question}",
            "",
            f"{row.first}'s answer ({len(row.first_answer)} {LENGTH_UNIT}):",
            row.first_answer,
            "",
            f"{row.second}'s answer ({len(row.second_answer)} {LENGTH_UNIT}):",
            row.second_answer,
        ]
        for v in (row.forward, row.swapped):
            lines += [
                "",
                f"{v.order} ({v.assistant_1} shown first): {_scores_text(v)}",
                v.explanation if v.status != MISSING else "",
            ]
        flip = flip_of(row)
        lines += ["", f"flip: {'-' if flip is None else f'{flip:g}'}"]
        blocks.append("\n".join(lines).rstrip())
    if not blocks:
        raise ViChatError(f"no verdict for question {question_id!r} in these comparisons")
    return "\n\n".join(blocks) + "\n"


# ----------------------------------------------------------------------------------------------- CLI


@dataclass
class DiagnosticsArgs:
    set: str = field(default="general", metadata={"help": "general, medical, or a JSONL path"})
    variants: str | None = field(default=None, metadata={"help": "default: every variant with answers"})
    reference: str = "reference"
    judge_model: str = "gpt-4"
    base_url: str | None = field(
        default=None, metadata={"help": "the judge endpoint whose verdicts to read (default: the only one)"}
    )
    price: str | None = field(default=None, metadata={"help": "IN,OUT USD per 1M tokens for the judge model"})
    out_dir: str = "runs/eval"
    show: str | None = field(default=None, metadata={"help": "print one question: answers, scores, reasons"})


def main(argv=None) -> int:
    from eval.cli import names, parse
    from eval.report import build_report, discover_variants  # eval.report imports this module
    from eval.sets import load_eval_set

    (args,) = parse(DiagnosticsArgs, argv)
    price = cost.price_for(args.judge_model, args.price)
    eval_set = load_eval_set(args.set)
    if args.show is not None and args.show not in eval_set.by_id:
        known = ", ".join(list(eval_set.by_id)[:10]) + (", ..." if len(eval_set) > 10 else "")
        raise ViChatError(f"--show {args.show!r}: no such question in the {eval_set.name} set (ids: {known})")
    variants = names(args.variants) or discover_variants(args.out_dir, eval_set, args.reference)
    data = build_report(
        eval_set,
        variants,
        args.out_dir,
        args.judge_model,
        args.reference,
        endpoint=args.base_url,
        price=price,
    )
    if args.show is not None:
        print(show_question(data.diagnostics, args.show), end="")
        return 0
    print(f"{eval_set.name} set, judge {args.judge_model} at {data.endpoint}")
    print("\n".join(markdown_section(data.diagnostics)))
    for note in data.notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    from vichat.cli import run

    raise SystemExit(run(main))
