"""JSON Lines, one home: every project file of one JSON object per line is read and appended through here.

Three layers, each used where its strictness fits:

- one JSON value (:func:`decode_json`, :func:`loads`): nothing in a line raises anything but
  :class:`JSONProblem`. JSON that Python's parser would choke on (integers of thousands of digits, brackets
  nested thousands deep) and JSON that would poison later steps (``NaN``, ``Infinity``, lone ``\ud800``
  surrogate escapes, which no UTF-8 file can hold) each get a kind and a reason.
- a data file, line by line (:func:`iter_json_lines`): lines are read as bytes and decoded one by one, so a
  line with invalid UTF-8 costs that line only; blank lines are skipped; each bad line is a
  :class:`RecordError` (file, 1-based line, reason). A file saved as UTF-16, or a JSON array instead of JSON
  Lines, is told as such once, at line 1, with the fix. ``vichat.data`` checks prompt/response records on top.
- append logs that survive a killed job (answers, judgments, votes, the app's logs): :class:`JsonlAppender`
  appends one flushed line at a time. A kill mid-write can leave a torn last line; readers (:func:`log_lines`,
  :func:`read_records`) skip it without touching the file (a report may read while a judge run appends), and
  the next writer cuts it off (:func:`repair_tail`) before appending, so the job resumes from the last whole
  record.
"""

from __future__ import annotations

import json
import math
import re
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vichat.errors import DataError

# --------------------------------------------------------------------------- one JSON value

MAX_INT_DIGITS = 4300
"""Python's own limit for turning digits into an int; longer numbers are refused per line, not raised."""


class JSONProblem(ValueError):
    """A JSON text that cannot be a record: bad syntax, NaN, a number too long, a lone surrogate.

    ``pos`` is the character offset of the problem in the text (None when unknown).
    """

    def __init__(self, kind: str, reason: str, pos: int | None = None):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.pos = pos


class _Refused(Exception):
    """Raised from inside the decoder's hooks; becomes a JSONProblem."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def _refuse_nan(name: str) -> Any:
    raise _Refused("nan", f"{name} is not valid JSON (write null or a number instead)")


def _checked_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise _Refused(
            "number",
            f"a number with {digits:,} digits is too long to read (the limit is {MAX_INT_DIGITS:,}); "
            "write it as a string",
        )
    return int(text)


def _checked_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        shown = text if len(text) <= 20 else text[:17] + "..."
        raise _Refused("number", f"the number {shown} is too large (it would be infinity)")
    return value


_DECODER = json.JSONDecoder(parse_constant=_refuse_nan, parse_int=_checked_int, parse_float=_checked_float)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def decode_json(text: str, start: int = 0) -> tuple[Any, int]:
    """Decode one JSON value of ``text`` at ``start``; return it and the offset just after it.

    Everything a record could not hold is a :class:`JSONProblem`, never another exception: bad syntax,
    nesting too deep for the parser (``json``), ``NaN``/``Infinity`` (``nan``), integers over
    4,300 digits or floats that overflow (``number``), and ``\\ud800``-style escapes that leave a lone
    UTF-16 surrogate, which no UTF-8 file can hold and which crash any later write (``surrogate``).
    """
    try:
        value, end = _DECODER.raw_decode(text, start)
    except json.JSONDecodeError as exc:
        raise JSONProblem("json", exc.msg, exc.pos) from None
    except _Refused as exc:
        raise JSONProblem(exc.kind, exc.reason) from None
    except RecursionError:
        raise JSONProblem(
            "json", "values nested too deeply to read (over about 1,000 brackets deep)"
        ) from None
    if _SURROGATE_ESCAPE.search(text, start, end):  # valid pairs match too; look at the decoded strings
        where = lone_surrogate(value)
        if where is not None:
            raise JSONProblem(
                "surrogate",
                f"{where} holds a lone UTF-16 surrogate (a \\ud800-\\udfff escape without its pair), "
                "which is not text; fix or remove that escape",
            )
    return value, end


def lone_surrogate(value: Any) -> str | None:
    """Where the first string with a lone surrogate is (``field "x"``), or None. Iterative: no recursion."""
    stack: list[tuple[Any, str]] = [(value, "a value")]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return where
        elif isinstance(item, dict):
            for key, inner in item.items():
                if _SURROGATE.search(key):
                    return "a field name"
                stack.append((inner, f'field "{key}"' if where == "a value" else where))
        elif isinstance(item, list):
            stack.extend((inner, where) for inner in item)
    return None


def loads(text: str) -> Any:
    """One whole JSON text (surrounding whitespace allowed), with :func:`decode_json`'s checks."""
    start = len(text) - len(text.lstrip())
    value, end = decode_json(text, start)
    if text[end:].strip():
        raise JSONProblem("json", "extra text after the JSON value (two values on one line?)", end)
    return value


def json_type(value: Any) -> str:
    """How a message names the JSON type of ``value`` (``an object``, ``a number``...)."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    if isinstance(value, bool | type(None) | dict | list | str):
        return names[type(value)]
    return "a number"


# --------------------------------------------------------------------------- a data file, line by line

FILE_KINDS = ("utf16", "utf32", "json_array")
"""Kinds that describe the whole file rather than one line (reported once, at line 1)."""

JSON_ARRAY_FIX = (
    'python -c "import json,sys; [print(json.dumps(r, ensure_ascii=False)) for r in json.load(sys.stdin)]" '
    "< FILE.json > FILE.jsonl"
)


@dataclass(frozen=True)
class RecordError:
    """One bad line: where it is and why it was rejected.

    ``kind`` is one of ``utf8``, ``json``, ``nan``, ``number``, ``surrogate``, ``not_object``,
    ``missing_field``, ``not_string``, ``empty``, ``too_long``, or, for a whole file (line 1),
    ``utf16``, ``utf32``, ``json_array``; callers that treat some problems differently (a mixture
    builder drops empty records but refuses malformed ones) switch on it.
    """

    path: str
    line: int
    kind: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


def _json_reason(problem: JSONProblem, text: str) -> str:
    """The reason with the column where the problem is; at a line's end, say so (a cut line, a missing bracket)."""
    if problem.kind != "json" or problem.pos is None:
        return problem.reason
    message = problem.reason.removesuffix(" at")  # "Unterminated string starting at"
    end = len(text.rstrip())
    if problem.pos >= end or message.startswith("Unterminated string"):
        where = "at the end of the line" if problem.pos >= end else f"at column {problem.pos + 1}"
        return f"malformed JSON: {message} {where}: the line is cut short or a closing quote or bracket is missing"
    return f"malformed JSON: {message} at column {problem.pos + 1}"


def encoding_error(raw: bytes, path: str) -> RecordError | None:
    """A UTF-16/UTF-32 file, told by its byte-order mark or by NUL bytes between ASCII characters."""
    for bom, kind, name in (
        (b"\xff\xfe\x00\x00", "utf32", "UTF-32"),
        (b"\x00\x00\xfe\xff", "utf32", "UTF-32"),
        (b"\xff\xfe", "utf16", "UTF-16"),
        (b"\xfe\xff", "utf16", "UTF-16"),
    ):
        if raw.startswith(bom):
            return RecordError(
                path, 1, kind, f"file is {name} (it starts with a {name} byte-order mark); save it as UTF-8"
            )
    sample = raw[:4096]
    if sample.count(0) * 4 >= len(sample) > 1:
        return RecordError(
            path, 1, "utf16", "file is UTF-16 (NUL bytes between the characters); save it as UTF-8"
        )
    return None


def _strip_newline(raw: bytes) -> bytes:
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    return raw


def _decoded(raw: bytes, number: int, path: str) -> str | RecordError:
    """One line as text without its line break, or the error that it is not UTF-8."""
    try:
        return _strip_newline(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        return RecordError(path, number, "utf8", f"invalid UTF-8 at byte {exc.start}")


def iter_json_lines(lines: Iterable[bytes], path: str) -> Iterator[tuple[int, Any, RecordError | None]]:
    """Yield ``(line_number, value, error)`` for every non-blank line of a JSONL byte stream.

    Exactly one of ``value``/``error`` is meaningful: ``error`` is None when the line decoded
    and parsed. Any JSON value is accepted here; record checks come on top. A UTF-16 file or a
    JSON array (not JSON Lines) gives one error for the whole file, at line 1.
    """
    stream = iter(lines)
    for number, raw in enumerate(stream, start=1):
        if number == 1:
            problem = encoding_error(raw, path)
            if problem is not None:
                yield number, None, problem
                return
        text = _decoded(raw, number, path)
        if isinstance(text, RecordError):
            yield number, None, text
            continue
        if number == 1:
            text = text.removeprefix("\ufeff")
        if not text.strip():
            continue
        if text.lstrip().startswith("["):  # the first value opens a JSON array instead of JSON Lines?
            rest = list(stream)
            if _is_json_array(text, rest):
                yield (
                    number,
                    None,
                    RecordError(
                        path,
                        number,
                        "json_array",
                        f"this is a JSON array, not JSON Lines (one object per line); convert it with: {JSON_ARRAY_FIX}",
                    ),
                )
                return
            stream = iter(rest)
        yield _parse_line(number, text, path)
        yield from _parse_rest(stream, number, path)
        return


def _parse_rest(
    rest: Iterable[bytes], first: int, path: str
) -> Iterator[tuple[int, Any, RecordError | None]]:
    """The lines after the first value: no whole-file checks any more."""
    for number, raw in enumerate(rest, start=first + 1):
        text = _decoded(raw, number, path)
        if isinstance(text, RecordError):
            yield number, None, text
        elif text.strip():
            yield _parse_line(number, text, path)


def _is_json_array(first: str, rest: list[bytes]) -> bool:
    try:
        whole = first + "\n" + b"\n".join(rest).decode("utf-8")
        return isinstance(loads(whole), list)
    except (UnicodeDecodeError, JSONProblem):
        return False


def _parse_line(number: int, text: str, path: str) -> tuple[int, Any, RecordError | None]:
    try:
        return number, loads(text), None
    except JSONProblem as problem:
        return number, None, RecordError(path, number, problem.kind, _json_reason(problem, text))


# --------------------------------------------------------------------------- append logs


def refuse_constant(name: str) -> None:
    """A ``parse_constant`` hook for :func:`json.loads`: ``NaN`` and ``Infinity`` are not JSON numbers."""
    raise ValueError(f"{name} is not a JSON number")


def has_lone_surrogate(value: Any) -> bool:
    """Whether a string in ``value`` (keys included) holds a lone UTF-16 surrogate: text no file can hold."""
    return lone_surrogate(value) is not None


def is_whole_json(raw: bytes) -> bool:
    """Whether ``raw`` is complete JSON of some kind (so not a write cut short)."""
    try:
        json.loads(raw)
    except (ValueError, RecursionError):
        return False
    return True


def parse_object(raw: bytes) -> dict | None:
    """One record, or None for anything that is not a clean JSON object: bad JSON or UTF-8, NaN/Infinity,
    integers too long to read, nesting too deep, or lone surrogates (text no file can hold)."""
    try:
        record = json.loads(raw, parse_constant=refuse_constant)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict):
        return None
    if b"\\u" in raw and has_lone_surrogate(record):
        return None
    return record


def log_lines(path: Path) -> Iterator[tuple[int, bytes, dict | None]]:
    """``(line_number, raw, record)`` for every non-blank line of an append log; ``record`` is None for a line
    that is not a clean JSON object (:func:`parse_object`). A last line with no newline after it that is not
    whole JSON is an interrupted write: it ends the log, unreported."""
    lines = path.read_bytes().split(b"\n")
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        record = parse_object(raw)
        if record is None and number == len(lines) and not is_whole_json(raw):  # after the final newline
            return
        yield number, raw, record


def read_records(path: str | Path) -> list[dict]:
    """All records of ``path`` ([] when it does not exist). A bad line is a DataError naming file and line,
    except a last line with no newline after it: that is an interrupted write, and it is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    records: list[dict] = []
    for number, raw, record in log_lines(path):
        if record is None:
            if raw.lstrip().startswith(b"["):
                raise DataError(
                    f"{path}:{number}: a JSON array, not JSON Lines: write one JSON object per line"
                )
            raise DataError(f"{path}:{number}: not a JSON object; fix or delete this line")
        records.append(record)
    return records


def repair_tail(path: Path) -> None:
    """Make ``path`` end with a newline after its last whole record (cutting off a torn last line)."""
    if not path.exists():
        return
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    cut = data.rfind(b"\n") + 1
    with path.open("r+b") as fh:
        if parse_object(data[cut:]) is not None:  # a whole record that lost only its newline
            fh.seek(0, 2)
            fh.write(b"\n")
        else:
            fh.truncate(cut)
            print(f"{path}: dropped a torn last line (an interrupted write)", file=sys.stderr)


class JsonlAppender:
    """Appends records to a JSONL file, one flushed line each; safe to share between threads."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_tail(self.path)
        self._lock = threading.Lock()
        self._fh = self.path.open("a", encoding="utf-8")

    def write(self, record: dict) -> None:
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self._lock:
            self._fh.write(line)
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            self._fh.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
