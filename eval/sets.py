"""Evaluation sets: the paper's 80 general questions and the medical set, or any JSONL in the same format.

Each line is ``{"id", "category", "question", "reference"}``; ``reference`` is the reference assistant's
answer (ChatGPT's in the paper). ``python -m eval.sets --set general`` prints a summary; ``--icliniq N`` draws a
seeded sample of iCliniq patient questions from the hub (online only) into a JSONL file.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from vichat import checks
from vichat.errors import DataError, ViChatError
from vichat.files import atomic_writer, refuse_overwriting_inputs
from vichat.jsonl import has_lone_surrogate, refuse_constant
from vichat.paths import ASSETS

EVAL_DIR = ASSETS / "eval"
BUILTIN = MappingProxyType({"general": EVAL_DIR / "general.jsonl", "medical": EVAL_DIR / "medical.jsonl"})

# The paper's general set (Table III): category -> number of questions, in the paper's order.
GENERAL_CATEGORIES = MappingProxyType(
    {
        "Generic": 10,
        "Knowledge": 10,
        "Roleplay": 10,
        "Common-Sense": 10,
        "Fermi": 10,
        "Counterfactual": 10,
        "Coding": 7,
        "Math": 3,
        "Writing": 10,
    }
)
MEDICAL_CATEGORY = "Medical"
CATEGORIES: tuple[str, ...] = (*GENERAL_CATEGORIES, MEDICAL_CATEGORY)
FIELDS = ("id", "category", "question", "reference")
ICLINIQ_ID = "lavita/ChatDoctor-iCliniq"


class EvalSetUnavailableError(ViChatError):
    """The set cannot be had here (no such file, or the hub is out of reach)."""


@dataclass(frozen=True)
class Question:
    id: str
    category: str
    question: str
    reference: str


@dataclass(frozen=True)
class EvalSet:
    name: str
    path: Path | None
    questions: tuple[Question, ...]
    by_id: dict[str, Question] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_id", {q.id: q for q in self.questions})

    def __len__(self) -> int:
        return len(self.questions)

    @property
    def categories(self) -> list[str]:
        """Categories present, in the paper's order."""
        present = {q.category for q in self.questions}
        return [c for c in CATEGORIES if c in present]

    def counts(self) -> dict[str, int]:
        counted = Counter(q.category for q in self.questions)
        return {c: counted[c] for c in self.categories}

    def head(self, limit: int | None) -> tuple[Question, ...]:
        return self.questions if limit is None else self.questions[: max(limit, 0)]


def _canonical_categories() -> dict[str, str]:
    return {c.lower(): c for c in CATEGORIES}


def set_name(name_or_path: str | Path) -> str:
    """The short name used for output folders: ``general``, or a file's stem."""
    text = str(name_or_path)
    return text if text in BUILTIN else Path(text).stem


def resolve(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    known = ", ".join(BUILTIN)
    if not text.strip():
        raise EvalSetUnavailableError(f"--set is empty: use one of {known} or a JSONL file path")
    path = BUILTIN.get(text, Path(text))
    if path.is_dir():
        raise EvalSetUnavailableError(
            f"eval set {text!r} is a folder: give a JSONL file in it (one question per line), or one of {known}"
        )
    if not path.exists():
        raise EvalSetUnavailableError(f"eval set {text!r} not found: use one of {known} or a JSONL file path")
    if not path.is_file():
        raise EvalSetUnavailableError(f"eval set {text!r} is not a regular file: give a JSONL file path")
    return path


def parse_lines(lines, source: str) -> list[Question]:
    """Questions from JSONL lines; any problem is a DataError naming ``source`` and the line number."""
    canonical = _canonical_categories()
    questions: list[Question] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            row = json.loads(line, parse_constant=refuse_constant)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
        except RecursionError:
            raise DataError(f"{where}: not valid JSON (nested too deeply)") from None
        except ValueError as e:  # an integer too long to read, NaN / Infinity
            raise DataError(f"{where}: not valid JSON ({e})") from None
        if isinstance(row, list) and number == 1:
            raise DataError(
                f"{where}: a JSON array, not JSON Lines: write one object per line ({', '.join(FIELDS)})"
            )
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object with fields {', '.join(FIELDS)}")
        if has_lone_surrogate(row):
            raise DataError(f"{where}: holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text")
        for name in FIELDS:
            value = row.get(name)
            if not isinstance(value, str | int) or isinstance(value, bool) or not str(value).strip():
                raise DataError(f"{where}: field {name!r} is missing or empty (need {', '.join(FIELDS)})")
        category = canonical.get(str(row["category"]).strip().lower())
        if category is None:
            raise DataError(
                f"{where}: unknown category {row['category']!r}; known categories: {', '.join(CATEGORIES)}"
            )
        qid = str(row["id"]).strip()
        if qid in seen:
            raise DataError(f"{where}: duplicate id {qid!r} (first on line {seen[qid]})")
        seen[qid] = number
        questions.append(Question(qid, category, str(row["question"]).strip(), str(row["reference"]).strip()))
    if not questions:
        raise DataError(f"{source}: no questions in this file")
    return questions


def decode_utf8(data: bytes, source: str) -> str:
    """``data`` as UTF-8 text; a DataError naming the line otherwise (UTF-16 is named as such)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in data[:4096]:
        raise DataError(f"{source}:1: UTF-16 text (or binary), not UTF-8: save the file as UTF-8")
    try:
        return data.decode("utf-8-sig" if data.startswith(b"\xef\xbb\xbf") else "utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(f"{source}:{line}: not UTF-8 text ({e.reason}): save the file as UTF-8") from None


def load_eval_set(name_or_path: str | Path) -> EvalSet:
    """A built-in set (``general``, ``medical``) or a JSONL file in the same format."""
    path = resolve(name_or_path)
    text = decode_utf8(path.read_bytes(), str(path))
    # split on newlines only: str.splitlines would also split inside a line on \x1c, \u2028 and the like
    lines = text.replace("\r\n", "\n").split("\n")
    return EvalSet(set_name(name_or_path), path, tuple(parse_lines(lines, str(path))))


def load_icliniq(n: int = 100, seed: int = 0, reference_field: str = "answer_chatgpt") -> EvalSet:
    """A seeded random sample of ``n`` iCliniq patient questions from the hub (the paper's medical set).

    ``reference_field`` picks the reference answer column (``answer_chatgpt`` matches the paper's ChatGPT
    reference; ``answer_icliniq`` is the doctor's). The questions are English, as published: translate them
    (train.translate) for a Vietnamese set.
    """
    try:
        from datasets import load_dataset

        rows = load_dataset(ICLINIQ_ID, split="train")
    except Exception as e:  # offline, no datasets, hub error: all mean "not here"
        raise EvalSetUnavailableError(
            f"cannot load {ICLINIQ_ID} from the Hugging Face hub ({type(e).__name__}); this needs a network. "
            "Offline, use the built-in 'medical' set or a JSONL file path"
        ) from None
    columns = list(rows.column_names)
    question_field = next((c for c in ("input", "question", "instruction") if c in columns), None)
    if question_field is None or reference_field not in columns:
        raise DataError(f"{ICLINIQ_ID}: expected a question column and {reference_field!r}; it has {columns}")
    picked = sorted(random.Random(seed).sample(range(len(rows)), min(n, len(rows))))
    questions = tuple(
        Question(
            f"icliniq-{i:05d}", MEDICAL_CATEGORY, rows[i][question_field].strip(), rows[i][reference_field]
        )
        for i in picked
        if str(rows[i][question_field]).strip() and str(rows[i][reference_field]).strip()
    )
    return EvalSet(f"icliniq{n}-seed{seed}", None, questions)


def write_eval_set(eval_set: EvalSet, path: str | Path) -> Path:
    """Write the set as JSONL, atomically (a crash leaves the old file or the new one, never half)."""
    path = Path(path)
    with atomic_writer(path) as fh:
        for q in eval_set.questions:
            row = {"id": q.id, "category": q.category, "question": q.question, "reference": q.reference}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


@dataclass
class SetsArgs:
    set: str = field(default="general", metadata={"help": "general, medical, or a JSONL path"})
    icliniq: int | None = field(default=None, metadata={"help": "draw this many iCliniq questions (online)"})
    seed: int = 0
    out: str | None = field(default=None, metadata={"help": "where to write the iCliniq sample"})


def main(argv=None) -> int:
    from eval.cli import parse

    (args,) = parse(SetsArgs, argv)
    if args.icliniq is not None:
        n = checks.number("--icliniq", args.icliniq, minimum=1, maximum=1_000_000, integer=True)
        seed = checks.number("--seed", args.seed, minimum=0, maximum=2**32 - 1, integer=True)
        out_path = Path(args.out or f"runs/eval/sets/icliniq{n}-seed{seed}.jsonl")
        if out_path.is_dir():
            raise ViChatError(f"--out {out_path} is a folder: give a file path for the sample")
        refuse_overwriting_inputs([out_path], [p for p in BUILTIN.values() if p.exists()], "--out")
        sample = load_icliniq(n, seed)
        out = write_eval_set(sample, out_path)
        print(f"wrote {len(sample)} iCliniq questions to {out}")
        return 0
    eval_set = load_eval_set(args.set)
    print(f"{eval_set.name}: {len(eval_set)} questions from {eval_set.path}")
    for category, count in eval_set.counts().items():
        print(f"  {category:<15} {count:>3}")
    return 0


if __name__ == "__main__":
    from vichat.cli import run

    raise SystemExit(run(main))
