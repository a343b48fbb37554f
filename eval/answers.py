"""Answers to an eval set, one JSONL file per variant, resumable.

    python -m eval.answers --variants reference,Bloomz,Bloomz-Chat --set general [--out-dir runs/eval]
                           [--seed 0] [--batch-size 4] [--limit N]

Each answer is appended to ``<out-dir>/answers/<set>/<variant>.jsonl`` as soon as its batch finishes
(``{"id", "variant", "answer", "settings"}``), so a killed run resumes where it stopped and a rerun
generates nothing. Variant kinds:

- ``reference``: the set's own reference answers (no model);
- ``openai:<model>``: an OpenAI-compatible chat model, through the judge's client settings;
- anything else: a ViChat variant from assets/models.yaml, with the paper's decoding and a fixed seed.

Answers are reproducible for the same seed and batch size. Batches are formed from the questions still to
answer, so use ``--batch-size 1`` if a resumed run must match an uninterrupted one token for token. The
set's answers folder is locked while a run writes, so a second run on it stops at once with a message.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tqdm import tqdm

from eval.client import ChatClient, ClientConfig
from eval.sets import EvalSet, load_eval_set
from vichat import checks
from vichat.errors import DataError, ViChatError
from vichat.files import OutputLock
from vichat.jsonl import JsonlAppender, read_records
from vichat.paths import resolve

REFERENCE = "reference"
OPENAI_PREFIX = "openai:"


class Generator(Protocol):
    """What answers a batch of questions: the registry, an OpenAI model, the references, a test stand-in."""

    def generate_batch(self, variant_name: str, instructions: list[str], settings) -> list[str]: ...


class ReferenceAnswers:
    """The set's own reference answers, looked up by question text."""

    def __init__(self, eval_set: EvalSet):
        self._by_question = {q.question: q.reference for q in eval_set.questions}

    def generate_batch(self, variant_name: str, instructions: list[str], settings) -> list[str]:
        return [self._by_question[i] for i in instructions]


class OpenAIAnswers:
    """An OpenAI-compatible chat model answering each question as the user's message."""

    def __init__(self, client: ChatClient, max_tokens: int = 1024):
        self.client, self.max_tokens = client, max_tokens

    def generate_batch(self, variant_name: str, instructions: list[str], settings) -> list[str]:
        model = variant_name.removeprefix(OPENAI_PREFIX)
        return [
            self.client.complete(
                model,
                [{"role": "user", "content": text}],
                temperature=settings.temperature,
                max_tokens=self.max_tokens,
                seed=settings.seed,
            ).text.strip()
            for text in instructions
        ]


def file_name(variant: str) -> str:
    """A file name for a variant name (``openai:gpt-4o`` -> ``openai_gpt-4o``)."""
    return re.sub(r"[^\w.+-]", "_", variant)


def answers_path(out_dir: str | Path, set_name: str, variant: str) -> Path:
    return Path(out_dir) / "answers" / set_name / f"{file_name(variant)}.jsonl"


def paper_settings(seed: int | None):
    """The paper's decoding (256 new tokens, temperature 0.5, top-k 20, repetition penalty 1.2) with a seed."""
    from vichat.generation import GenerationSettings

    return GenerationSettings(seed=seed)


def settings_record(variant: str, settings, extra: dict | None = None) -> dict:
    if variant == REFERENCE:
        return {"source": "reference"}
    record = settings.to_dict() if hasattr(settings, "to_dict") else dataclasses.asdict(settings)
    return {**record, **(extra or {})}


def read_answers(path: str | Path) -> dict[str, dict]:
    """id -> record for the answers already in ``path`` (the last one wins if an id repeats)."""
    out: dict[str, dict] = {}
    for number, record in enumerate(read_records(path), start=1):
        if not isinstance(record.get("id"), str) or not isinstance(record.get("answer"), str):
            raise DataError(f"{path}:{number}: an answer record needs string fields 'id' and 'answer'")
        out[record["id"]] = record
    return out


def load_answers(out_dir: str | Path, eval_set: EvalSet, variant: str) -> dict[str, str]:
    """id -> answer text of one variant; ``reference`` falls back to the set itself when not generated."""
    path = answers_path(out_dir, eval_set.name, variant)
    if variant == REFERENCE and not path.exists():
        return {q.id: q.reference for q in eval_set.questions}
    if not path.exists():
        raise ViChatError(
            f"no answers for {variant!r} on the {eval_set.name} set ({path} does not exist): run "
            f"python -m eval.answers --variants {variant} --set {eval_set.name}"
        )
    return {qid: r["answer"] for qid, r in read_answers(path).items() if qid in eval_set.by_id}


def _comparable(settings: dict) -> dict:
    return {k: v for k, v in settings.items() if k != "batch_size"}


def generate_answers(
    eval_set: EvalSet,
    variant: str,
    generator: Generator,
    out_dir: str | Path,
    settings=None,
    *,
    batch_size: int = 4,
    limit: int | None = None,
    extra_settings: dict | None = None,
    progress: bool = True,
) -> int:
    """Answer the questions of ``eval_set`` not yet in the variant's file; returns how many were added."""
    batch_size = checks.number("--batch-size", batch_size, minimum=1, maximum=4096, integer=True)
    limit = checks.number("--limit", limit, minimum=1, integer=True, allow_none=True)
    path = answers_path(out_dir, eval_set.name, variant)
    done = read_answers(path)
    wanted = settings_record(
        variant, settings, {**model_identity(generator, variant), **(extra_settings or {})}
    )
    for record in done.values():
        held = record.get("settings", {})
        if _comparable(held) != _comparable(wanted):
            what = (
                "another model (a retrained or re-pointed adapter?)"
                if held.get("model") != wanted.get("model")
                else "other settings"
            )
            raise ViChatError(
                f"{path} holds answers made with {what} ({held} vs {wanted}); "
                "delete the file or pick another --out-dir to keep both"
            )
    pending = [q for q in eval_set.head(limit) if q.id not in done]
    if not pending:
        return 0
    wanted = {**wanted, "batch_size": batch_size} if variant != REFERENCE else wanted
    with JsonlAppender(path) as out, tqdm(total=len(pending), desc=variant, disable=not progress) as bar:
        for start in range(0, len(pending), batch_size):
            batch = pending[start : start + batch_size]
            texts = generator.generate_batch(variant, [q.question for q in batch], settings)
            if not isinstance(texts, list | tuple) or len(texts) != len(batch):
                got = len(texts) if isinstance(texts, list | tuple) else type(texts).__name__
                raise ViChatError(f"{variant}: got {got} answers for {len(batch)} questions")
            if not all(isinstance(t, str) for t in texts):
                raise ViChatError(f"{variant}: an answer is not text; nothing of this batch was saved")
            for q, text in zip(batch, texts, strict=True):
                out.write({"id": q.id, "variant": variant, "answer": text, "settings": wanted})
            bar.update(len(batch))
    return len(pending)


@dataclass
class AnswersArgs:
    variants: str = field(
        metadata={"help": "comma list: reference, openai:<model>, or variants of models.yaml"}
    )
    set: str = field(default="general", metadata={"help": "general, medical, or a JSONL path"})
    out_dir: str = "runs/eval"
    seed: int = 0
    batch_size: int = 4
    limit: int | None = field(default=None, metadata={"help": "answer only the first N questions"})
    models: str | None = field(default=None, metadata={"help": "variant file (default assets/models.yaml)"})
    openai_max_tokens: int = field(
        default=1024, metadata={"help": "answer length for openai:<model> variants"}
    )


def _generators(variants, eval_set, args, client_config) -> dict[str, tuple[Generator, dict | None]]:
    out: dict[str, tuple[Generator, dict | None]] = {}
    registry = client = None
    for variant in variants:
        if variant == REFERENCE:
            out[variant] = ReferenceAnswers(eval_set), None
        elif variant.startswith(OPENAI_PREFIX):
            client = client or ChatClient(client_config)
            out[variant] = (
                OpenAIAnswers(client, args.openai_max_tokens),
                {"max_tokens": args.openai_max_tokens},
            )
        else:
            if registry is None:
                from vichat.registry import Registry

                registry = Registry.from_yaml(args.models) if args.models else Registry.from_yaml()
            registry.variant(variant)  # an unknown name fails here
            out[variant] = registry, None
    return out


def model_identity(generator, variant: str, *, guard: bool = True) -> dict:
    """``{"model": ...}`` for a ViChat variant (a registry generates it), else nothing. ``guard=False``:
    without the variant's guard (a likelihood is the model's alone)."""
    if variant == REFERENCE or not (hasattr(generator, "bases") and hasattr(generator, "variant")):
        return {}
    return {"model": variant_identity(generator, variant, guard=guard)}


def variant_identity(registry, name: str, *, guard: bool = True) -> dict:
    """What makes a variant's answers what they are, beyond the decoding settings: its base, template,
    adapter (by the hash of its weights) and guard. Answers recorded under another identity (an adapter
    retrained in place, a variant pointed at another folder) are never taken for this one's on a rerun."""
    v = registry.variant(name)
    identity = {
        "base": registry.bases[v.base].source if v.base in registry.bases else v.base,
        "template": v.template,
    }
    if v.backend != "local":
        identity["endpoint"] = v.endpoint.model if v.endpoint else None
    if (
        guard and v.guard != "off"
    ):  # (only when on: answers recorded before guards existed keep their identity)
        identity["guard"] = v.guard
    if v.adapter:
        folder = resolve(v.adapter)
        weights = [
            folder / n for n in ("adapter_model.safetensors", "adapter_model.bin") if (folder / n).is_file()
        ]
        identity["adapter"] = _file_hash(weights[0]) if weights else v.adapter  # a hub id names itself
    return identity


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()[:16]}"


def lock_for(out_dir: str | Path, set_name: str, job: str = "eval.answers") -> OutputLock:
    """The lock an answers run holds on ``<out-dir>/answers/<set>`` (the UI should hold it too)."""
    return OutputLock(answers_path(out_dir, set_name, "x").parent, job)


def main(argv=None) -> int:
    from eval.cli import names, parse

    args, client_config = parse((AnswersArgs, ClientConfig), argv)
    client_config.validate()
    args.seed = checks.number("--seed", args.seed, minimum=0, maximum=2**32 - 1, integer=True)
    args.batch_size = checks.number("--batch-size", args.batch_size, minimum=1, maximum=4096, integer=True)
    args.limit = checks.number("--limit", args.limit, minimum=1, integer=True, allow_none=True)
    args.openai_max_tokens = checks.number(
        "--openai-max-tokens", args.openai_max_tokens, minimum=1, maximum=1_000_000, integer=True
    )
    variants = names(args.variants)
    if not variants:
        raise ViChatError("--variants is empty: name at least one variant (e.g. reference,Bloomz-Chat)")
    eval_set = load_eval_set(args.set)
    settings = paper_settings(args.seed)
    generators = _generators(variants, eval_set, args, client_config)  # every name checked before any work
    with lock_for(args.out_dir, eval_set.name):
        for variant in variants:
            generator, extra = generators[variant]
            added = generate_answers(
                eval_set, variant, generator, args.out_dir, settings,
                batch_size=args.batch_size, limit=args.limit, extra_settings=extra,
            )  # fmt: skip
            path = answers_path(args.out_dir, eval_set.name, variant)
            print(f"{variant}: {added} new answers, {len(read_answers(path))} in {path}")
    return 0


if __name__ == "__main__":
    from vichat.cli import run

    raise SystemExit(run(main))
