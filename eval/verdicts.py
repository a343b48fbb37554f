"""What is judged and what was said: the judge prompt, tasks with their cache keys, the verdict cache.

A task is one question of one comparison (first, second) shown in one order; ``forward`` shows the first
side as Assistant 1. Its key is a hash of (question id, question, the two answers in the order shown, order,
judge model, prompt version), so a changed answer or prompt is a new task and an unchanged one is never paid
for twice. Verdicts live in ``<out-dir>/judgments/<set>/<judge>.jsonl``, one line each, appended as they
arrive; :func:`collect` turns them into per-question scores for eval.scoring.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from eval.answers import file_name
from eval.jsonl import JsonlAppender, read_records
from eval.scoring import PairScore, combine_orders
from eval.sets import EvalSet
from vichat.errors import DataError
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
                temperature=float(data.get("temperature", 0.2)),
                max_tokens=int(data.get("max_tokens", 1024)),
            )
        except (OSError, ValueError, KeyError, TypeError) as e:
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

    @property
    def assistants(self) -> tuple[str, str]:
        return (self.first, self.second) if self.order == FORWARD else (self.second, self.first)


def task_key(question_id, question, answer_1, answer_2, order, judge_model, prompt_version) -> str:
    fields = [question_id, question, answer_1, answer_2, order, judge_model, prompt_version]
    return hashlib.sha256(json.dumps(fields, ensure_ascii=False).encode()).hexdigest()


def build_tasks(
    eval_set: EvalSet,
    answers: Mapping[str, Mapping[str, str]],
    comparisons: Sequence[tuple[str, str]],
    orders: Sequence[str],
    judge_model: str,
    prompt_version: str,
) -> tuple[list[Task], dict[tuple[str, str], int]]:
    """Tasks for every question both sides answered; also how many questions each comparison lacks."""
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
                key = task_key(q.id, q.question, one, two, order, judge_model, prompt_version)
                tasks.append(Task(q.id, q.category, q.question, first, second, order, one, two, key))
    return tasks, lacking


def judgments_path(out_dir: str | Path, set_name: str, judge_model: str) -> Path:
    return Path(out_dir) / "judgments" / set_name / f"{file_name(judge_model)}.jsonl"


class JudgmentCache:
    """Verdicts by task key, read from and appended to one JSONL file (created on the first verdict)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._records = {r["key"]: r for r in read_records(self.path) if isinstance(r.get("key"), str)}
        self._lock = threading.Lock()
        self._out: JsonlAppender | None = None

    def __len__(self) -> int:
        return len(self._records)

    def get(self, key: str) -> dict | None:
        return self._records.get(key)

    def add(self, record: dict) -> None:
        with self._lock:
            if self._out is None:
                self._out = JsonlAppender(self.path)
            self._out.write(record)
            self._records[record["key"]] = record

    def close(self) -> None:
        with self._lock:
            if self._out is not None:
                self._out.close()
                self._out = None


def pending(tasks: Sequence[Task], cache: JudgmentCache, retry_unparsable: bool = False) -> list[Task]:
    """Tasks with no verdict yet (or an unparsable one, when asked), each key once."""
    out, seen = [], set()
    for task in tasks:
        record = cache.get(task.key)
        if task.key in seen or (
            record is not None and not (retry_unparsable and record.get("scores") is None)
        ):
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
            missing += 1
        elif record.get("scores") is None:
            unparsable.append((task, record.get("raw", "")))
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
