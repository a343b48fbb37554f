"""Prompt/response records: read and check JSONL files, count tokens, summarise a dataset.

Every ViChat data file is JSON Lines, one object per line with a string ``prompt`` and a string
``response`` (extra fields such as ``id``, ``category``, ``topic`` or ``source`` are kept as they
are). Training, the data pipeline (``train.*``) and the app's dataset tab all read records
through this module, so a bad line is reported the same way everywhere: file, 1-based line
number and the reason.

Lines are read through :mod:`vichat.jsonl` (the one JSON Lines reader): bytes decoded line by line, so
a line with invalid UTF-8 costs that line only, and nothing in a line raises (huge integers, deep nesting,
``NaN``, lone surrogates are each a per-line :class:`~vichat.jsonl.RecordError`; a UTF-16 file or a JSON
array is told once, at line 1, with the fix). This module adds the record checks on top.

CLI (every file is checked, every missing one named)::

    python -m vichat.data validate FILE...   # 0 all good, 1 bad lines or no records, 2 a file missing
    python -m vichat.data stats FILE... [--tokenizer NAME_OR_PATH] [--json]   # same exit statuses
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from vichat.checks import arg
from vichat.cli import run
from vichat.errors import DataError, SettingsError
from vichat.files import atomic_write_lines
from vichat.jsonl import FILE_KINDS, RecordError, iter_json_lines, json_type
from vichat.prompts import MAX_PROMPT_CHARS

REQUIRED_FIELDS = ("prompt", "response")
WHITESPACE_TOKENIZER = "whitespace"
STRICT_ERRORS_SHOWN = 5


# --------------------------------------------------------------------------- reading


@dataclass
class ReadResult:
    """Good records of one file (in file order) and the lines that were rejected."""

    path: str
    records: list[dict[str, Any]] = field(default_factory=list)
    errors: list[RecordError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def file_error(self) -> RecordError | None:
        """The error that spoils the whole file (UTF-16, a JSON array), if that is what is wrong."""
        if len(self.errors) == 1 and self.errors[0].kind in FILE_KINDS:
            return self.errors[0]
        return None


def check_record(value: Any, fields: Sequence[str] = REQUIRED_FIELDS) -> tuple[str, str] | None:
    """Return ``(kind, reason)`` when ``value`` is not a usable record, else None."""
    if not isinstance(value, dict):
        return "not_object", f"expected a JSON object, got {json_type(value)}"
    for name in fields:
        if name not in value:
            return "missing_field", f'missing field "{name}"'
        if not isinstance(value[name], str):
            return "not_string", f'field "{name}" must be a string, got {json_type(value[name])}'
        if not value[name].strip():
            return "empty", f'field "{name}" is empty'
    prompt = value.get("prompt")
    if "prompt" in fields and isinstance(prompt, str) and len(prompt.strip()) > MAX_PROMPT_CHARS:
        return "too_long", (
            f'field "prompt" is {len(prompt.strip()):,} characters long; prompts are limited to '
            f"{MAX_PROMPT_CHARS:,} (vichat.prompts.MAX_PROMPT_CHARS): shorten or drop this record"
        )
    return None


def parse_jsonl(lines: Iterable[bytes], path: str, fields: Sequence[str] = REQUIRED_FIELDS) -> ReadResult:
    """Check every line of a JSONL byte stream; keep the good records and every problem."""
    result = ReadResult(path=path)
    for number, value, error in iter_json_lines(lines, path):
        if error is None:
            problem = check_record(value, fields)
            if problem is None:
                result.records.append(value)
                continue
            error = RecordError(path, number, *problem)
        result.errors.append(error)
    return result


def read_jsonl(path: str | os.PathLike[str], fields: Sequence[str] = REQUIRED_FIELDS) -> ReadResult:
    """Read a prompt/response JSONL file; bad lines are returned as errors, never raised."""
    file = Path(path)
    try:
        with file.open("rb") as stream:
            return parse_jsonl(stream, str(path), fields)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a .jsonl file") from None


def raise_for_errors(result: ReadResult, shown: int = STRICT_ERRORS_SHOWN) -> None:
    """Raise DataError naming ``file:line`` for the first ``shown`` problems of ``result``."""
    if result.ok:
        return
    lines = [str(error) for error in result.errors[:shown]]
    more = len(result.errors) - shown
    if more > 0:
        lines.append(f"... and {more} more bad line(s)")
    noun = "line" if len(result.errors) == 1 else "lines"
    raise DataError(
        f"{result.path}: {len(result.errors)} bad {noun} "
        f"(check with: python -m vichat.data validate {result.path})\n" + "\n".join(lines)
    )


def read_jsonl_strict(
    path: str | os.PathLike[str], fields: Sequence[str] = REQUIRED_FIELDS
) -> list[dict[str, Any]]:
    """Read a JSONL file and raise DataError (file:line) if any line is bad."""
    result = read_jsonl(path, fields)
    raise_for_errors(result)
    return result.records


def read_upload(upload: Any, name: str | None = None) -> ReadResult:
    """Read records from what an app upload hands over.

    Accepts raw ``bytes``, a path (``str``/``PathLike``), an open file object (binary or
    text), an object with a ``.name``/``.path`` pointing at a file (Gradio's upload values), or
    a ``{"path": ...}`` dict. ``name`` is used in error messages.
    """
    if isinstance(upload, bytes | bytearray):
        return parse_jsonl(io.BytesIO(bytes(upload)), name or "<upload>")
    if isinstance(upload, dict) and "path" in upload:
        return read_jsonl(upload["path"]) if name is None else _renamed(read_jsonl(upload["path"]), name)
    if isinstance(upload, str | os.PathLike):
        result = read_jsonl(upload)
        return result if name is None else _renamed(result, name)
    if hasattr(upload, "read"):
        content = upload.read()
        if isinstance(content, str):
            content = content.encode("utf-8")
        label = name or str(getattr(upload, "name", "<upload>"))
        return parse_jsonl(io.BytesIO(content), label)
    for attribute in ("path", "name"):
        candidate = getattr(upload, attribute, None)
        if isinstance(candidate, str) and Path(candidate).is_file():
            return read_upload(candidate, name)
    raise DataError(f"cannot read an upload of type {type(upload).__name__}; expected a .jsonl file")


def _renamed(result: ReadResult, name: str) -> ReadResult:
    errors = [RecordError(name, e.line, e.kind, e.reason) for e in result.errors]
    return ReadResult(path=name, records=result.records, errors=errors)


def write_jsonl(path: str | os.PathLike[str], records: Iterable[dict[str, Any]]) -> int:
    """Write records atomically (temp file in the same folder, fsync, then rename); return the count."""
    return atomic_write_lines(path, records)


# --------------------------------------------------------------------------- tokens


class TokenCounter(Protocol):
    """Counts tokens of many texts at once (batched for speed on large datasets)."""

    name: str

    def count(self, texts: Sequence[str]) -> list[int]: ...


@dataclass(frozen=True)
class WhitespaceCounter:
    """Built-in fallback: tokens are whitespace-separated words. Needs no model."""

    name: str = WHITESPACE_TOKENIZER

    def count(self, texts: Sequence[str]) -> list[int]:
        return [len(text.split()) for text in texts]


@dataclass(frozen=True)
class HFCounter:
    """Any Hugging Face tokenizer; special tokens (BOS/EOS) are not counted."""

    name: str
    tokenizer: Any
    batch_size: int = 1000

    def count(self, texts: Sequence[str]) -> list[int]:
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        counts: list[int] = []
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            if backend is not None:
                encodings = backend.encode_batch(batch, add_special_tokens=False)
                counts.extend(len(encoding.ids) for encoding in encodings)
            else:
                counts.extend(len(self.tokenizer.encode(text, add_special_tokens=False)) for text in batch)
        return counts


def load_token_counter(name_or_path: str | None) -> TokenCounter:
    """``whitespace`` (or None) gives the built-in counter; anything else is a HF tokenizer id or folder."""
    if not name_or_path or name_or_path == WHITESPACE_TOKENIZER:
        return WhitespaceCounter()
    from transformers import AutoTokenizer  # slow import, only when a real tokenizer is asked for

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except Exception as exc:  # offline hub, missing folder, bad files: all the user's to fix
        raise SettingsError(
            f"tokenizer {name_or_path!r} could not be loaded ({type(exc).__name__}: {_first_line(exc)}); "
            f"pass a local tokenizer folder or --tokenizer {WHITESPACE_TOKENIZER}"
        ) from None
    return HFCounter(name=name_or_path, tokenizer=tokenizer)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class LengthSummary:
    """Distribution of a length (characters or tokens) over the records."""

    min: int
    mean: float
    p50: int
    p90: int
    p99: int
    max: int
    total: int

    @classmethod
    def of(cls, values: Sequence[int]) -> LengthSummary:
        if not values:
            return cls(0, 0.0, 0, 0, 0, 0, 0)
        ordered = sorted(values)
        total = sum(ordered)
        return cls(
            min=ordered[0],
            mean=total / len(ordered),
            p50=_percentile(ordered, 50),
            p90=_percentile(ordered, 90),
            p99=_percentile(ordered, 99),
            max=ordered[-1],
            total=total,
        )


def _percentile(ordered: Sequence[int], percent: float) -> int:
    """Nearest-rank percentile of an already sorted, non-empty sequence."""
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class DatasetStats:
    """What Table I of the paper reports (samples, avg tokens/sample, total tokens) and more."""

    samples: int
    prompt_chars: LengthSummary
    response_chars: LengthSummary
    tokenizer: str | None = None
    prompt_tokens: LengthSummary | None = None
    response_tokens: LengthSummary | None = None
    sample_tokens: LengthSummary | None = None

    @property
    def total_tokens(self) -> int | None:
        return None if self.sample_tokens is None else self.sample_tokens.total

    @property
    def avg_tokens_per_sample(self) -> float | None:
        return None if self.sample_tokens is None else self.sample_tokens.mean

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["total_tokens"] = self.total_tokens
        data["avg_tokens_per_sample"] = self.avg_tokens_per_sample
        return data


def compute_stats(records: Sequence[dict[str, Any]], counter: TokenCounter | None = None) -> DatasetStats:
    """Counts and length distributions; token figures only when a counter is given.

    A sample's tokens are its prompt's plus its response's (no template, no special tokens).
    """
    prompts = [record["prompt"] for record in records]
    responses = [record["response"] for record in records]
    stats = DatasetStats(
        samples=len(records),
        prompt_chars=LengthSummary.of([len(text) for text in prompts]),
        response_chars=LengthSummary.of([len(text) for text in responses]),
    )
    if counter is None:
        return stats
    prompt_tokens = counter.count(prompts)
    response_tokens = counter.count(responses)
    return stats_from_token_counts(stats, counter.name, prompt_tokens, response_tokens)


def stats_from_token_counts(
    stats: DatasetStats, tokenizer: str, prompt_tokens: Sequence[int], response_tokens: Sequence[int]
) -> DatasetStats:
    """Attach already computed per-record token counts to character statistics."""
    return DatasetStats(
        samples=stats.samples,
        prompt_chars=stats.prompt_chars,
        response_chars=stats.response_chars,
        tokenizer=tokenizer,
        prompt_tokens=LengthSummary.of(prompt_tokens),
        response_tokens=LengthSummary.of(response_tokens),
        sample_tokens=LengthSummary.of([p + r for p, r in zip(prompt_tokens, response_tokens, strict=True)]),
    )


def format_stats(name: str, stats: DatasetStats) -> str:
    """A small plain-text table for terminals."""
    lines = [f"{name}: {stats.samples:,} samples"]
    rows: list[tuple[str, LengthSummary | None]] = [
        ("prompt chars", stats.prompt_chars),
        ("response chars", stats.response_chars),
    ]
    if stats.sample_tokens is not None:
        rows += [
            (f"prompt tokens ({stats.tokenizer})", stats.prompt_tokens),
            (f"response tokens ({stats.tokenizer})", stats.response_tokens),
            (f"sample tokens ({stats.tokenizer})", stats.sample_tokens),
        ]
    width = max(len(label) for label, _ in rows)
    lines.append(f"  {'':{width}}  {'min':>7} {'mean':>9} {'p50':>7} {'p90':>7} {'p99':>7} {'max':>8}")
    for label, summary in rows:
        assert summary is not None
        lines.append(
            f"  {label:{width}}  {summary.min:>7} {summary.mean:>9.1f} {summary.p50:>7} "
            f"{summary.p90:>7} {summary.p99:>7} {summary.max:>8}"
        )
    if stats.sample_tokens is not None:
        lines.append(
            f"  avg tokens/sample: {stats.avg_tokens_per_sample:.1f}   total tokens: {stats.total_tokens:,}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- CLI


@dataclass
class ValidateArgs:
    files: list[str]
    max_shown: int = 50


@dataclass
class StatsArgs:
    files: list[str]
    tokenizer: str | None = None
    json: bool = False


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vichat.data", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    validate = commands.add_parser("validate", help="check prompt/response JSONL files line by line")
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.add_argument(
        "--max-shown",
        type=arg("--max-shown", minimum=0, integer=True),
        default=ValidateArgs.max_shown,
        help="bad lines listed per file",
    )
    stats = commands.add_parser("stats", help="counts, length distributions and token totals")
    stats.add_argument("files", nargs="+", metavar="FILE")
    stats.add_argument(
        "--tokenizer", default=None, help=f"HF tokenizer id or folder, or '{WHITESPACE_TOKENIZER}'"
    )
    stats.add_argument("--json", action="store_true", help="print JSON instead of tables")
    return parser


def _read_each(paths: Sequence[str]) -> tuple[list[ReadResult], list[str]]:
    """Read every file; a missing or unreadable one is reported (``file: reason``) and the rest still read."""
    results: list[ReadResult] = []
    missing: list[str] = []
    for path in paths:
        try:
            results.append(read_jsonl(path))
        except DataError as exc:
            missing.append(str(exc))
        except OSError as exc:  # permission denied, a FIFO gone away...
            missing.append(f"{path}: cannot read ({exc.strerror or exc})")
    for message in missing:
        print(f"error: {message}", file=sys.stderr)
    return results, missing


def _missing_summary(missing: list[str], total: int) -> None:
    if missing:
        print(
            f"error: {len(missing)} of {total} file(s) could not be read (listed above); check the paths",
            file=sys.stderr,
        )


def run_validate(args: ValidateArgs, out: IO[str]) -> int:
    """Print OK or the bad lines per file.

    Exit status: 0 when every file is good, 1 when a file has a bad line or no records, 2 when a file is
    missing or unreadable (every file is still checked and every missing one named).
    """
    exit_code = 0
    max_shown = args.max_shown
    results, missing = _read_each(args.files)
    for result in results:
        path = result.path
        whole = result.file_error
        if whole is not None:
            exit_code = 1
            print(f"INVALID {path}: {whole.reason}", file=out)
            continue
        if result.ok and result.records:
            print(f"OK {path}: {len(result.records):,} records", file=out)
            continue
        exit_code = 1
        if result.ok:
            print(f"INVALID {path}: no records (the file is empty or blank)", file=out)
            continue
        print(
            f"INVALID {path}: {len(result.errors):,} bad line(s), {len(result.records):,} good records",
            file=out,
        )
        for error in result.errors[:max_shown]:
            print(f"  {error}", file=out)
        if len(result.errors) > max_shown:
            print(f"  ... and {len(result.errors) - max_shown} more", file=out)
    _missing_summary(missing, len(args.files))
    return 2 if missing else exit_code


def run_stats(args: StatsArgs, out: IO[str]) -> int:
    """Print statistics per file (and for all files together when there are several).

    The statistics cover the good records. Exit status: 0 when every line of every file was used, 1 when
    bad lines were skipped or a file had no records, 2 when a file is missing or unreadable.
    """
    counter = load_token_counter(args.tokenizer) if args.tokenizer else None
    results, missing = _read_each(args.files)
    named = [(result.path, result.records) for result in results]
    if len(results) > 1:
        named.append(("all files", [record for result in results for record in result.records]))
    report = {name: compute_stats(records, counter) for name, records in named}
    skipped = {result.path: len(result.errors) for result in results if result.errors}
    whole = {result.path: result.file_error.reason for result in results if result.file_error}
    empty = [result.path for result in results if not result.records]
    if args.json:
        payload = {name: stats.to_dict() for name, stats in report.items()}
        document = {"files": payload, "bad_lines": skipped, "file_errors": whole, "missing": missing}
        print(json.dumps(document, indent=2, ensure_ascii=False), file=out)
    else:
        for name, stats in report.items():
            print(format_stats(name, stats), file=out)
            if name in whole:
                print(f"  not read: {whole[name]}", file=out)
            elif name in skipped:
                print(
                    f"  skipped {skipped[name]} bad line(s); list them with: python -m vichat.data validate {name}",
                    file=out,
                )
            elif name in empty:
                print("  no records: the file is empty or blank", file=out)
    _missing_summary(missing, len(args.files))
    if missing:
        return 2
    return 1 if skipped or empty else 0


def main(argv: Sequence[str] | None = None, out: IO[str] | None = None) -> int:
    stream = out or sys.stdout
    namespace = _parser().parse_args(argv)
    command = namespace.command
    del namespace.command
    runners: dict[str, tuple[type, Callable[[Any, IO[str]], int]]] = {
        "validate": (ValidateArgs, run_validate),
        "stats": (StatsArgs, run_stats),
    }
    args_type, runner = runners[command]
    return runner(args_type(**vars(namespace)), stream)


if __name__ == "__main__":
    raise SystemExit(run(main))
