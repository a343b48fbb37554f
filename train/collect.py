"""Collect one public dataset as prompt/response JSONL, from the hub or from local files as published.

    python -m train.collect --source NAME [--from PATH...] --out OUT.jsonl [--limit N] [--response-column COLUMN]

NAME is one of ``train.sources.SOURCES``: ``alpaca``, ``gpt4all``, ``healthcaremagic``, ``icliniq``,
``genmedgpt``, ``alpaca-vi``, ``lima-vi``, ``vimedaqa``. Without ``--from`` the dataset is fetched with
``datasets.load_dataset`` (streamed when ``--limit`` is given); sources with no hub copy say where to get
the files. ``--from`` takes files, folders (the source's own file type, e.g. every ``.json`` checkpoint
of LIMA-vi) and globs, in the source's own layout (see ``train.sources``).

Why it works this way: the published files are messy (translation failures, nulls, checkpoint files that
overlap), and a training mixture must say what it dropped. So a bad *file* (malformed JSON, UTF-16, wrong
columns) stops the run with ``file:line`` and nothing is written, while a bad *row* is dropped and counted
by reason, and the counts (rows read, records kept, dropped by reason, with an example place for each,
duplicates, multi-turn records made) are printed. Every record gets ``id`` and ``source``. The output is
written atomically (a failed run leaves no half-written file) and never onto one of the inputs.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from train.sources import (
    DUPLICATE,
    EMPTY,
    LOCAL_FORMATS,
    SOURCES,
    LocatedRow,
    Outcome,
    Row,
    Source,
    expand_inputs,
    get_source,
    normalise,
    read_located_rows,
)
from vichat.checks import arg
from vichat.cli import run
from vichat.data import write_jsonl
from vichat.errors import DataError, SettingsError, ViChatError
from vichat.files import refuse_overwriting_inputs

EXAMPLES_SHOWN = 3


class SourceUnavailableError(ViChatError):
    """The dataset cannot be fetched from the hub (offline, not found, no access, no hub copy)."""


@dataclass
class CollectArgs:
    source: str
    out: str
    from_file: str | Sequence[str] | None = None
    limit: int | None = None
    response_column: str | None = None

    @property
    def inputs(self) -> list[str]:
        if self.from_file is None:
            return []
        return [self.from_file] if isinstance(self.from_file, str) else list(self.from_file)


@dataclass
class CollectReport:
    source: str
    origin: str
    files: int = 0
    rows: int = 0
    written: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    multi_turn_rows: int = 0
    multi_turn_records: int = 0

    @property
    def skipped_empty(self) -> int:
        return self.dropped[EMPTY]

    @property
    def duplicates(self) -> int:
        return self.dropped[DUPLICATE]

    def count(self, outcome: Outcome) -> None:
        self.rows += 1
        if outcome.dropped is not None:
            self.dropped[outcome.dropped] += 1
            shown = self.examples.setdefault(outcome.dropped, [])
            if len(shown) < EXAMPLES_SHOWN:
                shown.append(outcome.where.rsplit("/", 1)[-1])  # the file's name is enough here
        elif len(outcome.records) > 1:
            self.multi_turn_rows += 1
            self.multi_turn_records += len(outcome.records)

    def summary(self, out: str) -> str:
        lines = [f"wrote {self.written:,} {self.source} records to {out} from {self.origin}"]
        made = f"  {self.rows:,} rows read, {sum(self.dropped.values()):,} dropped"
        if self.multi_turn_rows:
            made += (
                f"; {self.multi_turn_records:,} records from {self.multi_turn_rows:,} multi-turn "
                "conversations (one per turn, earlier turns folded into the prompt)"
            )
        lines.append(made)
        for reason, number in self.dropped.most_common():
            lines.append(f"  dropped {number:,}: {reason} (e.g. {', '.join(self.examples[reason])})")
        return "\n".join(lines)


def offline_hint(source: Source, out: str) -> str:
    files = f" ({source.where})" if source.where else ""
    return (
        f"download it where the hub is reachable{files} and pass the files: python -m train.collect "
        f"--source {source.name} --from PATH({'|'.join(LOCAL_FORMATS)}, a folder or a glob) --out {out}"
    )


def hub_rows(source: Source, limit: int | None, out: str) -> tuple[Iterable[Row], list[str]]:
    """Rows and column names of the hub dataset; SourceUnavailableError when it cannot be had."""
    if source.hub_id is None:
        raise SourceUnavailableError(
            f"{source.name} has no copy on the Hugging Face hub that matches the published files; get "
            f"{source.where} and pass them: python -m train.collect --source {source.name} --from PATH --out {out}"
        )
    import datasets  # slow import; only needed online

    print(f"fetching {source.hub_id} from the Hugging Face hub (offline? use --from PATH)", file=sys.stderr)
    config = [source.config] if source.config else []
    try:
        dataset = datasets.load_dataset(
            source.hub_id, *config, split=source.split, streaming=limit is not None
        )
        columns = list(dataset.column_names or [])
        if not columns:  # a stream without declared features: look at the first row
            first = next(iter(dataset), {})
            columns = list(first)
    except Exception as exc:  # offline, 404, gated, hub outage: the user can always go local
        raise unavailable(source, exc, out) from None
    return dataset, columns


def unavailable(source: Source, exc: BaseException, out: str) -> SourceUnavailableError:
    reason = (str(exc).strip().splitlines() or [""])[0]
    return SourceUnavailableError(
        f"cannot fetch {source.hub_id} from the Hugging Face hub ({type(exc).__name__}: {reason}); "
        + offline_hint(source, out)
    )


def local_rows(path: str) -> tuple[list[LocatedRow], list[str]]:
    rows = read_located_rows(path)
    columns: dict[str, None] = {}
    for located in rows:
        columns.update(dict.fromkeys(located.row))
    return rows, list(columns)


def _local_outcomes(
    source: Source, files: list[Path], response_column: str | None, report: CollectReport
) -> Iterator[Outcome]:
    """Every file is read and checked (columns, JSON) before anything is written; then rows stream out."""
    seen: set[str] = set()
    tables = []
    for file in files:
        rows, columns = local_rows(str(file))
        if not rows:
            raise DataError(f"{file}: no rows (an empty file or list); is it the right file?")
        try:
            source.response_column(columns, response_column)
        except DataError as exc:
            raise DataError(f"{file}: {exc}") from None
        tables.append((file, rows, columns))
    report.files = len(files)
    for file, rows, columns in tables:
        prefix = source.name if len(files) == 1 else f"{source.name}-{file.stem}"
        yield from normalise(source, rows, columns, response_column, id_prefix=prefix, seen=seen)


def collect(args: CollectArgs) -> CollectReport:
    """Normalise the source's rows and write them to ``args.out``; DataError when none is usable."""
    source = get_source(args.source)
    if args.limit is not None and (isinstance(args.limit, bool) or args.limit < 1):
        raise SettingsError(f"--limit must be at least 1, got {args.limit}")
    out = Path(args.out)
    if out.is_dir():
        raise SettingsError(
            f"--out {out} is a folder; give a file name such as {out / (source.name + '.jsonl')}"
        )
    if args.inputs:
        files = expand_inputs(args.inputs, source.formats)
        refuse_overwriting_inputs([out], files)
        origin = str(files[0]) if len(files) == 1 else f"{len(files)} files ({', '.join(args.inputs)})"
        report = CollectReport(source.name, origin)
        outcomes = _local_outcomes(source, files, args.response_column, report)
    else:
        rows, columns = hub_rows(source, args.limit, args.out)
        report = CollectReport(source.name, source.hub_id or source.name)
        outcomes = normalise(source, rows, columns, args.response_column)
    records = islice(_counted(outcomes, report), args.limit)
    try:
        first = next(records, None)  # reads every local file before the output is touched
        if first is None:
            raise DataError(_nothing_kept(report))
        report.written = write_jsonl(out, _chain(first, records))
    except (OSError, ConnectionError) as exc:
        if args.inputs or isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError):
            raise
        raise unavailable(source, exc, args.out) from None  # a stream that broke mid-way
    return report


def _chain(first: dict[str, Any], rest: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    yield first
    yield from rest


def _nothing_kept(report: CollectReport) -> str:
    if not report.rows:
        return f"{report.origin}: no rows; nothing written (is the file empty?)"
    reasons = "; ".join(
        f"{number:,} {reason} (e.g. {', '.join(report.examples[reason])})"
        for reason, number in report.dropped.items()
    )
    return f"{report.origin}: all {report.rows:,} rows were dropped, nothing written: {reasons}"


def _counted(outcomes: Iterable[Outcome], report: CollectReport) -> Iterator[dict[str, Any]]:
    for outcome in outcomes:
        report.count(outcome)
        yield from outcome.records


def parse_args(argv: Sequence[str] | None = None) -> CollectArgs:
    parser = argparse.ArgumentParser(prog="python -m train.collect", description=__doc__.split("\n")[0])
    parser.add_argument("--source", required=True, choices=list(SOURCES))
    parser.add_argument(
        "--from",
        dest="from_file",
        metavar="PATH",
        nargs="+",
        action="extend",
        help="local files as published: files, folders or globs (JSON/JSONL/CSV/Parquet)",
    )
    parser.add_argument("--out", required=True, help="output JSONL")
    parser.add_argument(
        "--limit", type=arg("--limit", minimum=1, integer=True), default=None, help="keep the first N records"
    )
    parser.add_argument("--response-column", default=None, help="answer column to use (e.g. answer_chatgpt)")
    return CollectArgs(**vars(parser.parse_args(argv)))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = collect(args)
    print(report.summary(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
