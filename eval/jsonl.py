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


def _parse(raw: bytes) -> dict | None:
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


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
            if number == len(lines):  # after the final newline: a torn write
                break
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
