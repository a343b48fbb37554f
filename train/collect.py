"""Collect one public English dataset as prompt/response JSONL, from the hub or from a local copy.

    python -m train.collect --source alpaca|gpt4all|healthcaremagic|icliniq [--from LOCAL_FILE]
        --out OUT.jsonl [--limit N] [--response-column COLUMN]

Without ``--from`` the dataset is fetched with ``datasets.load_dataset`` (streamed when
``--limit`` is given). ``--from`` reads a local JSON, JSON Lines, CSV or Parquet file in the
source's own column layout (see ``train.sources``). Every record gets ``id``
(``<source>-<row>``) and ``source``; rows with an empty prompt or answer are skipped and
counted. The output is written atomically: a failed run leaves no half-written file.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

from train.sources import LOCAL_FORMATS, SOURCES, Row, Source, get_source, normalise, read_rows
from vichat.data import write_jsonl
from vichat.errors import SettingsError, ViChatError


class SourceUnavailableError(ViChatError):
    """The dataset cannot be fetched from the hub (offline, not found, no access)."""


@dataclass
class CollectArgs:
    source: str
    out: str
    from_file: str | None = None
    limit: int | None = None
    response_column: str | None = None


@dataclass
class CollectReport:
    source: str
    origin: str
    rows: int = 0
    written: int = 0
    skipped_empty: int = 0

    def summary(self, out: str) -> str:
        return (
            f"wrote {self.written} {self.source} records to {out} from {self.origin} "
            f"({self.rows} rows read, {self.skipped_empty} skipped: empty prompt or answer)"
        )


def offline_hint(source: Source, out: str) -> str:
    return (
        f"download it where the hub is reachable and pass the file: python -m train.collect "
        f"--source {source.name} --from FILE({'|'.join(LOCAL_FORMATS)}) --out {out}"
    )


def hub_rows(source: Source, limit: int | None, out: str) -> tuple[Iterable[Row], list[str]]:
    """Rows and column names of the hub dataset; SourceUnavailableError when it cannot be had."""
    import datasets  # slow import; only needed online

    print(f"fetching {source.hub_id} from the Hugging Face hub (offline? use --from FILE)", file=sys.stderr)
    try:
        dataset = datasets.load_dataset(source.hub_id, split=source.split, streaming=limit is not None)
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


def local_rows(path: str) -> tuple[list[dict[str, Any]], list[str]]:
    rows = read_rows(path)
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return rows, list(columns)


def collect(args: CollectArgs) -> CollectReport:
    """Normalise the source's rows and write them to ``args.out``."""
    source = get_source(args.source)
    if args.limit is not None and args.limit < 1:
        raise SettingsError(f"--limit must be at least 1, got {args.limit}")
    if args.from_file:
        rows, columns = local_rows(args.from_file)
        report = CollectReport(source.name, args.from_file)
    else:
        rows, columns = hub_rows(source, args.limit, args.out)
        report = CollectReport(source.name, source.hub_id)
    records = _counted(normalise(source, rows, columns, args.response_column), report)
    try:
        report.written = write_jsonl(args.out, islice(records, args.limit))
    except (OSError, ConnectionError) as exc:
        if args.from_file or isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError):
            raise
        raise unavailable(source, exc, args.out) from None  # a stream that broke mid-way
    return report


def _counted(
    pairs: Iterable[tuple[int, dict[str, Any] | None]], report: CollectReport
) -> Iterator[dict[str, Any]]:
    for _, record in pairs:
        report.rows += 1
        if record is None:
            report.skipped_empty += 1
            continue
        yield record


def parse_args(argv: Sequence[str] | None = None) -> CollectArgs:
    parser = argparse.ArgumentParser(prog="python -m train.collect", description=__doc__.split("\n")[0])
    parser.add_argument("--source", required=True, choices=list(SOURCES))
    parser.add_argument(
        "--from", dest="from_file", metavar="LOCAL_FILE", help="local JSON/JSONL/CSV/Parquet copy"
    )
    parser.add_argument("--out", required=True, help="output JSONL")
    parser.add_argument("--limit", type=int, default=None, help="keep the first N records")
    parser.add_argument("--response-column", default=None, help="answer column to use (e.g. answer_chatgpt)")
    return CollectArgs(**vars(parser.parse_args(argv)))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = collect(args)
    except ViChatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.summary(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
