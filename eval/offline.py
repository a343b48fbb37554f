"""Reference-based scores that need no API key, per category and in total.

- chrF (sacrebleu, character n-grams: fair to Vietnamese syllables and diacritics) of each variant's
  answers against the set's reference answers, the mean of per-question scores;
- NLL: the mean per-token negative log-likelihood of each reference answer under a local variant (lower
  means the variant finds the reference more likely), from ``registry.nll``; cached per question in
  ``<out-dir>/offline/<set>/nll-<variant>.jsonl`` so it resumes like the answers do.

    python -m eval.offline --set general --variants Bloomz,Bloomz-Chat [--nll] [--batch-size 4]
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tqdm import tqdm

from eval.answers import OPENAI_PREFIX, REFERENCE, file_name, load_answers, model_identity
from eval.sets import EvalSet, load_eval_set
from vichat import checks
from vichat.errors import DataError, ViChatError
from vichat.files import OutputLock
from vichat.jsonl import JsonlAppender, read_records

TOTAL = "Total"


class Scorer(Protocol):
    def nll(self, variant_name: str, instructions: list[str], references: list[str]) -> list[float]: ...


def chrf_scores(eval_set: EvalSet, answers: Mapping[str, str]) -> dict[str, float]:
    """Question id -> sentence chrF (0-100) of the answer against the reference, for answered questions."""
    from sacrebleu.metrics import CHRF

    chrf = CHRF()
    return {
        q.id: chrf.sentence_score(answers[q.id], [q.reference]).score
        for q in eval_set.questions
        if q.id in answers
    }


def by_category(eval_set: EvalSet, per_question: Mapping[str, float]) -> dict[str, float | None]:
    """Mean per category (in the set's order) and over every scored question (``Total``)."""
    out: dict[str, float | None] = {}
    for category in eval_set.categories:
        values = [
            per_question[q.id] for q in eval_set.questions if q.category == category and q.id in per_question
        ]
        out[category] = sum(values) / len(values) if values else None
    values = [per_question[q.id] for q in eval_set.questions if q.id in per_question]
    out[TOTAL] = sum(values) / len(values) if values else None
    return out


def nll_path(out_dir: str | Path, set_name: str, variant: str) -> Path:
    return Path(out_dir) / "offline" / set_name / f"nll-{file_name(variant)}.jsonl"


def read_nll(out_dir: str | Path, set_name: str, variant: str) -> dict[str, float]:
    path = nll_path(out_dir, set_name, variant)
    out: dict[str, float] = {}
    for number, record in enumerate(read_records(path), start=1):
        if "nll" not in record:
            continue
        value = record["nll"]
        if (
            not isinstance(record.get("id"), str)
            or not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
        ):
            raise DataError(
                f"{path}: record {number} needs a string 'id' and a finite number 'nll'; fix or delete it"
            )
        out[record["id"]] = float(value)
    return out


def has_nll(variant: str) -> bool:
    """Only local variants give likelihoods."""
    return variant != REFERENCE and not variant.startswith(OPENAI_PREFIX)


def compute_nll(
    eval_set: EvalSet,
    variant: str,
    scorer: Scorer,
    out_dir: str | Path,
    *,
    batch_size: int = 4,
    progress: bool = True,
) -> int:
    """Score the references not yet scored for ``variant``; returns how many were added."""
    batch_size = checks.number("--batch-size", batch_size, minimum=1, maximum=4096, integer=True)
    identity = model_identity(scorer, variant, guard=False)  # the guard changes answers, not likelihoods
    path = nll_path(out_dir, eval_set.name, variant)
    for number, record in enumerate(read_records(path), start=1):
        if identity and record.get("model") != identity["model"]:
            raise ViChatError(
                f"{path}:{number} holds a likelihood scored with another model ({record.get('model')} vs "
                f"{identity['model']}: a retrained or re-pointed adapter?); delete the file or pick another "
                "--out-dir to keep both"
            )
    done = read_nll(out_dir, eval_set.name, variant)
    todo = [q for q in eval_set.questions if q.id not in done]
    if not todo:
        return 0
    with (
        JsonlAppender(nll_path(out_dir, eval_set.name, variant)) as out,
        tqdm(total=len(todo), desc=f"NLL {variant}", disable=not progress) as bar,
    ):
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            got = scorer.nll(variant, [q.question for q in batch], [q.reference for q in batch])
            values = [float(v) for v in got]
            if len(values) != len(batch) or not all(math.isfinite(v) for v in values):
                raise ViChatError(
                    f"{variant}: the NLL of a batch is not {len(batch)} finite numbers ({values[:4]}); "
                    "nothing of this batch was saved"
                )
            for q, value in zip(batch, values, strict=True):
                out.write({"id": q.id, "variant": variant, "nll": value, **identity})
            bar.update(len(batch))
    return len(todo)


def format_table(
    eval_set: EvalSet, columns: Mapping[str, Mapping[str, float | None]], digits: int = 2
) -> str:
    names = list(columns)
    lines = ["category".ljust(16) + "".join(n.rjust(16) for n in names)]
    for row in [*eval_set.categories, TOTAL]:
        cells = ["-" if columns[n].get(row) is None else f"{columns[n][row]:.{digits}f}" for n in names]
        lines.append(row.ljust(16) + "".join(c.rjust(16) for c in cells))
    return "\n".join(lines)


@dataclass
class OfflineArgs:
    variants: str = field(metadata={"help": "comma list of variants with answers (see eval.answers)"})
    set: str = "general"
    out_dir: str = "runs/eval"
    nll: bool = field(
        default=False, metadata={"help": "also score the references' likelihood (loads models)"}
    )
    batch_size: int = 4
    models: str | None = field(default=None, metadata={"help": "variant file (default assets/models.yaml)"})


def main(argv=None) -> int:
    from eval.cli import names, parse

    (args,) = parse(OfflineArgs, argv)
    args.batch_size = checks.number("--batch-size", args.batch_size, minimum=1, maximum=4096, integer=True)
    variants = names(args.variants)
    if not variants:
        raise ViChatError("--variants is empty")
    eval_set = load_eval_set(args.set)
    answers = {v: load_answers(args.out_dir, eval_set, v) for v in variants}
    for variant, found in answers.items():
        if not found:
            raise ViChatError(
                f"{variant} has no answers to the {eval_set.name} set in {args.out_dir}: run "
                f"python -m eval.answers --variants {variant} --set {args.set} first"
            )
    chrf = {v: by_category(eval_set, chrf_scores(eval_set, found)) for v, found in answers.items()}
    print(f"chrF against the references ({eval_set.name}):\n{format_table(eval_set, chrf)}")
    if args.nll:
        from vichat.registry import Registry

        registry = Registry.from_yaml(args.models) if args.models else Registry.from_yaml()
        local = [v for v in variants if has_nll(v)]
        for variant in local:
            registry.variant(variant)
        with contextlib.ExitStack() as stack:
            if local:
                folder = nll_path(args.out_dir, eval_set.name, "x").parent
                stack.enter_context(OutputLock(folder, "eval.offline"))
            for variant in local:
                compute_nll(eval_set, variant, registry, args.out_dir, batch_size=args.batch_size)
    nll = {v: by_category(eval_set, read_nll(args.out_dir, eval_set.name, v)) for v in variants if has_nll(v)}
    nll = {v: scores for v, scores in nll.items() if scores[TOTAL] is not None}
    if nll:
        print(f"\nmean NLL of the references (lower is better):\n{format_table(eval_set, nll, 3)}")
    return 0


if __name__ == "__main__":
    from vichat.cli import run

    raise SystemExit(run(main))
