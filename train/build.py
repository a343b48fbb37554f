"""Build a training mixture (the paper's Chat or Doctor data) with a Table I statistics report.

    python -m train.build --mixture chat --alpaca A.jsonl --gpt4all G.jsonl --out-dir DIR
    python -m train.build --mixture doctor --alpaca A.jsonl --chatdoctor HCM.jsonl ICLINIQ.jsonl --out-dir DIR
        [--sizes alpaca=52000 chatdoctor=all | --ratios alpaca=1 chatdoctor=4 [--total N]]
        [--seed 42] [--val-fraction 0.02] [--max-tokens 512] [--tokenizer whitespace|NAME_OR_PATH]

Chat = Alpaca + GPT4All; Doctor = Alpaca + ChatDoctor (HealthCareMagic + iCliniq). Steps:
read every file (a malformed line stops the build with file:line unless ``--skip-invalid``),
drop records with an empty prompt or response, drop duplicates (same prompt and response
after Unicode NFC, case folding and whitespace collapsing; the first component keeps its
copy), drop records longer than ``--max-tokens`` (prompt + response tokens; the template
adds a few dozen more at training time), pick each component's share with a seeded sample,
shuffle with the seed and split off the validation set. Everything dropped is counted.

Writes ``train.jsonl``, ``validation.jsonl`` and ``stats.md`` / ``stats.csv`` / ``stats.json``:
dataset, samples, avg tokens/sample, total tokens, laid out like the paper's Table I, plus
what the cleaning removed.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import random
import sys
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vichat.data import (
    DatasetStats,
    RecordError,
    TokenCounter,
    compute_stats,
    load_token_counter,
    read_jsonl,
    stats_from_token_counts,
    write_jsonl,
)
from vichat.errors import DataError, SettingsError, ViChatError

MIXTURES: dict[str, tuple[str, ...]] = {"chat": ("alpaca", "gpt4all"), "doctor": ("alpaca", "chatdoctor")}
COMPONENTS = ("alpaca", "gpt4all", "chatdoctor")
DISPLAY = {
    "alpaca": "Alpaca",
    "gpt4all": "GPT4All",
    "chatdoctor": "ChatDoctor",
    "chat": "Chat",
    "doctor": "Doctor",
}
ERRORS_SHOWN = 5


@dataclass
class BuildArgs:
    mixture: str
    out_dir: str
    alpaca: list[str] = field(default_factory=list)
    gpt4all: list[str] = field(default_factory=list)
    chatdoctor: list[str] = field(default_factory=list)
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

    def files(self, component: str) -> list[str]:
        return list(getattr(self, component))


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
    """What happened to one component's records on the way into the mixture."""

    name: str
    files: list[str]
    read: int = 0
    invalid: int = 0
    empty: int = 0
    duplicates: int = 0
    over_long: int = 0
    available: int = 0
    requested: int | None = None
    selected: int = 0


@dataclass
class BuildReport:
    mixture: str
    tokenizer: str
    max_tokens: int
    seed: int
    val_fraction: float
    components: list[ComponentReport]
    table: dict[str, DatasetStats]
    """Table I rows: each component, the whole mixture, train, validation."""
    notes: list[str] = field(default_factory=list)
    out_dir: str = ""


# --------------------------------------------------------------------------- options


def _check(args: BuildArgs) -> None:
    if args.mixture not in MIXTURES:
        raise SettingsError(f"--mixture must be one of {', '.join(MIXTURES)}, got {args.mixture!r}")
    wanted = MIXTURES[args.mixture]
    missing = [f"--{name}" for name in wanted if not args.files(name)]
    if missing:
        raise SettingsError(f"the {args.mixture} mixture needs {' and '.join(missing)} (JSONL files)")
    extra = [f"--{name}" for name in COMPONENTS if name not in wanted and args.files(name)]
    if extra:
        raise SettingsError(
            f"{', '.join(extra)} is not part of the {args.mixture} mixture ({' + '.join(wanted)})"
        )
    if not 0 <= args.val_fraction < 1:
        raise SettingsError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    if args.max_tokens < 1:
        raise SettingsError(f"--max-tokens must be at least 1, got {args.max_tokens}")
    if args.sizes and args.ratios:
        raise SettingsError("give --sizes or --ratios, not both")
    if args.total is not None and (not args.ratios or args.total < 1):
        raise SettingsError("--total goes with --ratios and must be at least 1")


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
    """How many records each component contributes; None means all of them."""
    components = list(available)
    if args.ratios:
        return _plan_ratios(args, available, notes)
    sizes: dict[str, int | None] = dict.fromkeys(components)
    for name, value in parse_assignments(args.sizes, "--sizes", components).items():
        if value == "all":
            continue
        if not value.isdigit():
            raise SettingsError(f"--sizes {name}={value}: the size must be a whole number or 'all'")
        sizes[name] = int(value)
        if int(value) > available[name]:
            notes.append(
                f"{DISPLAY[name]}: {value} requested, {available[name]} available after cleaning; all used"
            )
    return sizes


def _plan_ratios(args: BuildArgs, available: dict[str, int], notes: list[str]) -> dict[str, int | None]:
    components = list(available)
    raw = parse_assignments(args.ratios, "--ratios", components)
    if set(raw) != set(components):
        raise SettingsError(f"--ratios needs a ratio for each of {', '.join(components)}")
    try:
        ratios = {name: float(value) for name, value in raw.items()}
    except ValueError:
        raise SettingsError(f"--ratios values must be numbers, got {args.ratios}") from None
    if any(value < 0 or not math.isfinite(value) for value in ratios.values()) or sum(ratios.values()) <= 0:
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


def dedupe_key(record: dict[str, Any]) -> str:
    """Same prompt and response up to Unicode form, case and whitespace."""

    def norm(text: str) -> str:
        return " ".join(unicodedata.normalize("NFC", text).casefold().split())

    joined = norm(record["prompt"]) + "\x00" + norm(record["response"])
    return hashlib.blake2b(joined.encode("utf-8"), digest_size=16).hexdigest()


def load_component(
    name: str, files: Sequence[str], skip_invalid: bool, seen: set[str]
) -> tuple[list[dict[str, Any]], ComponentReport]:
    """Read, drop empty records and duplicates (``seen`` spans the whole mixture)."""
    report = ComponentReport(name=name, files=list(files))
    kept: list[dict[str, Any]] = []
    invalid: list[RecordError] = []
    for path in files:
        result = read_jsonl(path)
        empty = [error for error in result.errors if error.kind == "empty"]
        invalid += [error for error in result.errors if error.kind != "empty"]
        report.read += len(result.records) + len(result.errors)
        report.empty += len(empty)
        for record in result.records:
            key = dedupe_key(record)
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
            f"{DISPLAY[name]}: {len(invalid)} malformed line(s); fix them or pass --skip-invalid\n{shown}{more}"
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


# --------------------------------------------------------------------------- build


def build(args: BuildArgs, counter: TokenCounter | None = None) -> BuildReport:
    """Make the mixture, write it and its report to ``args.out_dir``; return the report."""
    _check(args)
    counter = counter or load_token_counter(args.tokenizer)
    names = MIXTURES[args.mixture]
    seen: set[str] = set()
    pools: dict[str, list[Item]] = {}
    reports: dict[str, ComponentReport] = {}
    for name in names:
        records, report = load_component(name, args.files(name), args.skip_invalid, seen)
        items = measure(records, counter)
        pools[name] = [item for item in items if item.tokens <= args.max_tokens]
        report.over_long = len(items) - len(pools[name])
        report.available = len(pools[name])
        reports[name] = report
    notes: list[str] = []
    sizes = plan_sizes(args, {name: len(pool) for name, pool in pools.items()}, notes)
    rng = random.Random(args.seed)
    chosen: dict[str, list[Item]] = {}
    for name in names:
        pool, size = pools[name], sizes[name]
        reports[name].requested = size
        chosen[name] = pool if size is None or size >= len(pool) else rng.sample(pool, size)
        reports[name].selected = len(chosen[name])
    mixture = [item for name in names for item in chosen[name]]
    rng.shuffle(mixture)
    validation_size = _validation_size(len(mixture), args.val_fraction)
    validation, train = mixture[:validation_size], mixture[validation_size:]
    table = {DISPLAY[name]: table_row(chosen[name], counter.name) for name in names}
    table[f"{DISPLAY[args.mixture]} mixture"] = table_row(mixture, counter.name)
    table["train"] = table_row(train, counter.name)
    table["validation"] = table_row(validation, counter.name)
    report = BuildReport(
        args.mixture,
        counter.name,
        args.max_tokens,
        args.seed,
        args.val_fraction,
        list(reports.values()),
        table,
        notes,
    )
    write_outputs(Path(args.out_dir), train, validation, report)
    return report


def _validation_size(total: int, fraction: float) -> int:
    if fraction <= 0 or total < 2:
        return 0
    return min(total - 1, max(1, round(total * fraction)))


def write_outputs(
    out_dir: Path, train: Sequence[Item], validation: Sequence[Item], report: BuildReport
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    report.out_dir = str(out_dir)
    write_jsonl(out_dir / "train.jsonl", (item.record for item in train))
    write_jsonl(out_dir / "validation.jsonl", (item.record for item in validation))
    (out_dir / "stats.md").write_text(render_markdown(report), encoding="utf-8")
    with (out_dir / "stats.csv").open("w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["dataset", "samples", "avg_tokens_per_sample", "total_tokens"])
        for name, stats in report.table.items():
            writer.writerow(
                [name, stats.samples, f"{stats.avg_tokens_per_sample or 0:.1f}", stats.total_tokens]
            )
    payload = {
        "mixture": report.mixture,
        "tokenizer": report.tokenizer,
        "max_tokens": report.max_tokens,
        "seed": report.seed,
        "val_fraction": report.val_fraction,
        "components": [asdict(component) for component in report.components],
        "table": {name: stats.to_dict() for name, stats in report.table.items()},
        "notes": report.notes,
    }
    (out_dir / "stats.json").write_text(
        json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )


def _compact(number: float) -> str:
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if number >= limit:
            return f"{number / limit:.1f}{suffix}"
    return f"{number:.0f}"


def render_markdown(report: BuildReport) -> str:
    title = DISPLAY[report.mixture]
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
        "## Cleaning",
        "",
        "| dataset | read | malformed | empty | duplicates | over-long | available | selected |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in report.components:
        lines.append(
            f"| {DISPLAY[c.name]} | {c.read:,} | {c.invalid:,} | {c.empty:,} | {c.duplicates:,} | "
            f"{c.over_long:,} | {c.available:,} | {c.selected:,} |"
        )
    lines += ["", "Files:"] + [f"- {DISPLAY[c.name]}: {', '.join(c.files)}" for c in report.components]
    if report.notes:
        lines += ["", "Notes:"] + [f"- {note}" for note in report.notes]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None = None) -> BuildArgs:
    defaults = BuildArgs(mixture="chat", out_dir="")
    parser = argparse.ArgumentParser(prog="python -m train.build", description=__doc__.split("\n")[0])
    parser.add_argument("--mixture", required=True, choices=list(MIXTURES))
    parser.add_argument("--out-dir", required=True)
    for name in COMPONENTS:
        parser.add_argument(
            f"--{name}", nargs="+", default=[], metavar="JSONL", help=f"{DISPLAY[name]} record files"
        )
    parser.add_argument(
        "--sizes", nargs="+", default=[], metavar="NAME=N", help="records per component (or 'all')"
    )
    parser.add_argument("--ratios", nargs="+", default=[], metavar="NAME=R", help="proportions per component")
    parser.add_argument(
        "--total", type=int, default=None, help="mixture size with --ratios (default: largest)"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--val-fraction", type=float, default=defaults.val_fraction)
    parser.add_argument("--max-tokens", type=int, default=defaults.max_tokens)
    parser.add_argument(
        "--tokenizer", default=defaults.tokenizer, help="'whitespace' or a HF tokenizer id/folder"
    )
    parser.add_argument(
        "--skip-invalid", action="store_true", help="drop malformed lines instead of stopping"
    )
    return BuildArgs(**vars(parser.parse_args(argv)))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = build(args)
    except ViChatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(render_markdown(report))
    print(f"wrote train.jsonl, validation.jsonl, stats.md, stats.csv, stats.json to {report.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
