"""What is judged and what was said: the judge prompt, tasks with their cache keys, the verdict cache.

A task is one question of one comparison (first, second) shown in one order; ``forward`` shows the first
side as Assistant 1. Its key is a hash of (question id, question, the two answers in the order shown, order,
judge model, prompt version, judge endpoint), so a changed answer or prompt is a new task and an unchanged
one is never paid for twice. The endpoint (its normalised base URL) is in the key because a model name
proves nothing: any server can call itself "gpt-4", and its verdicts must never stand in for the real one's.
Keys made before the endpoint was part of them match no task, so they are never reused.

Verdicts live in ``<out-dir>/judgments/<set>/<judge>.jsonl``, one line each, appended as they arrive. An
answer whose scores cannot be read (empty, prose, out of range) is not a verdict: it goes to
``<judge>.unparsable.jsonl`` beside it, for the report to show, and the task stays to do, so a rerun asks
again. :func:`collect` turns verdicts into per-question scores for eval.scoring.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import threading
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from eval.answers import file_name
from eval.client import ClientConfig, normalise_endpoint
from eval.parse import MAX_SCORE
from eval.scoring import PairScore, combine_orders
from eval.sets import EvalSet
from vichat import checks
from vichat.errors import DataError, ViChatError
from vichat.jsonl import JsonlAppender, read_records
from vichat.paths import ASSETS

PROMPT_FILE = ASSETS / "judge" / "pair.json"
FORWARD, SWAPPED = "forward", "swapped"  # forward: the comparison's first side is Assistant 1


@dataclass(frozen=True)
class JudgePrompt:
    """The judge's system prompt and user template (assets/judge/pair.json)."""

    name: str
    system: str
    template: str
    temperature: float = 0.2
    max_tokens: int = 1024

    @classmethod
    def load(cls, path: str | Path = PROMPT_FILE) -> JudgePrompt:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            template = data["template"]
            prompt = cls(
                name=data["name"],
                system=data["system"],
                template="\n".join(template) if isinstance(template, list) else template,
                temperature=checks.number("temperature", data.get("temperature", 0.2), minimum=0, maximum=2),
                max_tokens=checks.number(
                    "max_tokens", data.get("max_tokens", 1024), minimum=1, maximum=1_000_000, integer=True
                ),
            )
            if not all(isinstance(v, str) for v in (prompt.name, prompt.system, prompt.template)):
                raise TypeError("name, system and template must be text")
        except ViChatError as e:
            raise DataError(f"{path}: {e}") from None
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
            raise DataError(f"{path}: not a judge prompt file ({type(e).__name__}: {e})") from None
        for name in ("{question}", "{answer_1}", "{answer_2}"):
            if name not in prompt.template:
                raise DataError(f"{path}: the template lacks the field {name}")
        return prompt

    @property
    def version(self) -> str:
        """Name plus a hash of everything that shapes a verdict: edit the prompt and old verdicts go stale."""
        content = json.dumps(
            [self.system, self.template, self.temperature, self.max_tokens], ensure_ascii=False
        )
        return f"{self.name}-{hashlib.sha256(content.encode()).hexdigest()[:12]}"

    def messages(self, question: str, answer_1: str, answer_2: str) -> list[dict]:
        user = self.template.format_map({"question": question, "answer_1": answer_1, "answer_2": answer_2})
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]


@dataclass(frozen=True)
class Task:
    """One verdict to have: a question, a comparison (first, second) and the order they are shown in."""

    question_id: str
    category: str
    question: str
    first: str
    second: str
    order: str
    answer_1: str
    answer_2: str
    key: str
    judge_model: str = ""
    prompt_version: str = ""
    endpoint: str = ""  # normalised base URL of the judge (eval.client.normalise_endpoint)

    @property
    def assistants(self) -> tuple[str, str]:
        return (self.first, self.second) if self.order == FORWARD else (self.second, self.first)

    def for_judge(self, endpoint: str, judge_model: str, prompt_version: str) -> Task:
        """This task as asked of another judge (endpoint, model, prompt): same content, its own key."""
        if (endpoint, judge_model, prompt_version) == (self.endpoint, self.judge_model, self.prompt_version):
            return self
        key = task_key(
            self.question_id, self.question, self.answer_1, self.answer_2, self.order,
            judge_model, prompt_version, endpoint,
        )  # fmt: skip
        return dataclasses.replace(
            self, key=key, judge_model=judge_model, prompt_version=prompt_version, endpoint=endpoint
        )


def default_endpoint() -> str:
    """The endpoint a judge run without ``--base-url`` calls ($OPENAI_BASE_URL, else OpenAI), normalised."""
    return ClientConfig().normalised_endpoint


def task_key(
    question_id, question, answer_1, answer_2, order, judge_model, prompt_version, endpoint=None
) -> str:
    """The cache key of one verdict. ``endpoint`` is normalised here (None: :func:`default_endpoint`)."""
    where = default_endpoint() if endpoint is None else normalise_endpoint(endpoint)
    fields = [question_id, question, answer_1, answer_2, order, judge_model, prompt_version, where]
    return hashlib.sha256(json.dumps(fields, ensure_ascii=False).encode()).hexdigest()


def build_tasks(
    eval_set: EvalSet,
    answers: Mapping[str, Mapping[str, str]],
    comparisons: Sequence[tuple[str, str]],
    orders: Sequence[str],
    judge_model: str,
    prompt_version: str,
    *,
    endpoint: str | None = None,
) -> tuple[list[Task], dict[tuple[str, str], int]]:
    """Tasks for every question both sides answered; also how many questions each comparison lacks.

    ``endpoint``: the judge's base URL (None: the one a run without ``--base-url`` calls).
    """
    where = default_endpoint() if endpoint is None else normalise_endpoint(endpoint)
    tasks: list[Task] = []
    lacking: dict[tuple[str, str], int] = {}
    for first, second in comparisons:
        lacking[(first, second)] = 0
        for q in eval_set.questions:
            a, b = answers[first].get(q.id), answers[second].get(q.id)
            if a is None or b is None:
                lacking[(first, second)] += 1
                continue
            for order in orders:
                one, two = (a, b) if order == FORWARD else (b, a)
                key = task_key(q.id, q.question, one, two, order, judge_model, prompt_version, where)
                tasks.append(
                    Task(
                        q.id, q.category, q.question, first, second, order, one, two, key,
                        judge_model, prompt_version, where,
                    )  # fmt: skip
                )
    return tasks, lacking


def judgments_path(out_dir: str | Path, set_name: str, judge_model: str) -> Path:
    return Path(out_dir) / "judgments" / set_name / f"{file_name(judge_model)}.jsonl"


def valid_scores(scores) -> bool:
    """Two finite numbers in [0, MAX_SCORE]: what a verdict holds (anything else is not one)."""
    return (
        isinstance(scores, list | tuple)
        and len(scores) == 2
        and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v <= MAX_SCORE
            for v in scores
        )
    )


def unparsable_path(path: str | Path) -> Path:
    """Where the answers with no readable scores go, beside the verdicts (``gpt-4.unparsable.jsonl``)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.unparsable.jsonl")


class JudgmentCache:
    """Verdicts by task key, read from and appended to one JSONL file (created on the first verdict).

    Only a record with two readable scores is a verdict. Others (an empty or unreadable answer, or one left
    by an older version with ``scores: null``) are kept apart in :func:`unparsable_path` for the report; the
    task stays pending, so a rerun asks again.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.unparsable_path = unparsable_path(self.path)
        self._records: dict[str, dict] = {}
        self._unparsable: dict[str, dict] = {}
        for record in read_records(self.path):
            if isinstance(record.get("key"), str):
                if valid_scores(record.get("scores")):
                    self._records[record["key"]] = record
                else:
                    self._unparsable[record["key"]] = record
        for record in read_records(self.unparsable_path):
            if isinstance(record.get("key"), str) and record["key"] not in self._records:
                self._unparsable[record["key"]] = record
        self._lock = threading.Lock()
        self._out: JsonlAppender | None = None
        self._bad: JsonlAppender | None = None

    def __len__(self) -> int:
        return len(self._records)

    def get(self, key: str) -> dict | None:
        """The verdict for ``key``; None when there is none (an unparsable answer is none)."""
        return self._records.get(key)

    def unparsable(self, key: str) -> dict | None:
        """The last unreadable answer for ``key`` when it has no verdict yet."""
        return None if key in self._records else self._unparsable.get(key)

    def endpoints(self) -> Counter:
        """How many verdicts each judge endpoint gave (records older than endpoint keys are not counted)."""
        return Counter(r["endpoint"] for r in self._records.values() if isinstance(r.get("endpoint"), str))

    def add(self, record: dict) -> None:
        """Append a verdict, or, when its scores are not readable, an unparsable answer (never a verdict)."""
        with self._lock:
            if valid_scores(record.get("scores")):
                if self._out is None:
                    self._out = JsonlAppender(self.path)
                self._out.write(record)
                self._records[record["key"]] = record
                self._unparsable.pop(record["key"], None)
            else:
                if self._bad is None:
                    self._bad = JsonlAppender(self.unparsable_path)
                self._bad.write({**record, "scores": None})
                self._unparsable[record["key"]] = record

    def close(self) -> None:
        with self._lock:
            for out in (self._out, self._bad):
                if out is not None:
                    out.close()
            self._out = self._bad = None


def pending(tasks: Sequence[Task], cache: JudgmentCache, retry_unparsable: bool = True) -> list[Task]:
    """Tasks with no verdict yet, each key once. An unparsable answer is no verdict, so its task is always
    pending (``retry_unparsable`` is kept for callers that pass it; it changes nothing)."""
    out, seen = [], set()
    for task in tasks:
        if task.key in seen or cache.get(task.key) is not None:
            continue
        seen.add(task.key)
        out.append(task)
    return out


@dataclass
class Collected:
    pairs: dict[tuple[str, str], list[PairScore]]
    unparsable: list[tuple[Task, str]]
    missing: int  # tasks with no verdict yet


def collect(tasks: Sequence[Task], cache: JudgmentCache) -> Collected:
    """Per comparison, each question's scores with the orders judged averaged (see scoring.combine_orders)."""
    by_question: dict[tuple[str, str], dict[str, dict]] = defaultdict(dict)
    categories: dict[str, str] = {}
    unparsable, missing = [], 0
    for task in tasks:
        record = cache.get(task.key)
        if record is None:
            bad = cache.unparsable(task.key)
            if bad is not None:
                raw = bad.get("raw", "")
                unparsable.append((task, raw if isinstance(raw, str) else ""))
            else:
                missing += 1
        else:
            by_question[(task.first, task.second)].setdefault(task.question_id, {})[task.order] = tuple(
                record["scores"]
            )
            categories[task.question_id] = task.category
    pairs: dict[tuple[str, str], list[PairScore]] = {}
    for comparison, questions in by_question.items():
        rows = []
        for qid, orders in questions.items():
            first, second, n = combine_orders(orders.get(FORWARD), orders.get(SWAPPED))
            rows.append(PairScore(qid, categories[qid], first, second, n))
        pairs[comparison] = rows
    return Collected(pairs, unparsable, missing)
