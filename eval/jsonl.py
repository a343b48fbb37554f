"""JSON Lines files that survive a killed job: one record appended and flushed at a time.

A kill mid-write can leave a torn last line. Readers skip it without touching the file (a report may read
while a judge run appends); the next writer cuts it off before appending, so the job resumes from the last
whole record.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

from vichat.errors import DataError


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def has_lone_surrogate(value) -> bool:
    if isinstance(value, str):
        return any("\ud800" <= ch <= "\udfff" for ch in value)
    if isinstance(value, dict):
        return any(has_lone_surrogate(k) or has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_lone_surrogate(v) for v in value)
    return False


def _whole_value(raw: bytes) -> bool:
    """Whether ``raw`` is complete JSON of some kind (so not a write cut short)."""
    try:
        json.loads(raw)
    except (ValueError, RecursionError):
        return False
    return True


def _parse(raw: bytes) -> dict | None:
    """One record, or None for anything that is not a clean JSON object: bad JSON or UTF-8, NaN/Infinity,
    integers too long to read, nesting too deep, or lone surrogates (text no file can hold)."""
    try:
        record = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict):
        return None
    if b"\\u" in raw and has_lone_surrogate(record):
        return None
    return record


def read_records(path: str | Path) -> list[dict]:
    """All records of ``path`` ([] when it does not exist). A bad line is a DataError naming file and line,
    except a last line with no newline after it: that is an interrupted write, and it is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    records: list[dict] = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        record = _parse(raw)
        if record is None:
            if number == len(lines) and not _whole_value(raw):  # after the final newline: a torn write
                break
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
        if _parse(data[cut:]) is not None:  # a whole record that lost only its newline
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
