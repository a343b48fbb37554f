"""Writing files so that nothing is lost: atomic writes, outputs that never overwrite inputs, locked out-dirs.

Every file the project writes goes through here (JSONL appenders aside, which flush one whole line at a time
and repair a torn tail; see ``vichat.jsonl``):

- :func:`atomic_write_text` / :func:`atomic_write_bytes` / :func:`atomic_write_json` / :func:`atomic_writer`
  write a temp file in the target's folder, fsync it and rename it over the target, so a crash or a full disk
  leaves the old file whole or the new one whole, never a cut one.
- :func:`refuse_overwriting_inputs` stops a command before it writes an output onto one of its inputs.
- :class:`OutputLock` holds an exclusive lock on an output folder for the life of a job, so a second job on
  the same folder stops at once with a message instead of doubling the work or tearing the files.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from vichat.errors import ViChatError

LOCK_NAME = ".vichat.lock"


class OutputBusyError(ViChatError):
    """Another process is writing to the same output folder."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_writer(
    path: str | os.PathLike[str], mode: str = "w", encoding: str | None = "utf-8"
) -> Iterator[IO]:
    """A handle on a temp file beside ``path``; on a clean exit it is fsynced and renamed onto ``path``.

    On an exception the temp file is removed and ``path`` is left exactly as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        binary = "b" in mode
        with os.fdopen(handle, "wb" if binary else "w", encoding=None if binary else encoding) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        with contextlib.suppress(OSError):  # mkstemp makes 0600: keep the old file's mode, else the umask's
            os.chmod(temp_name, target.stat().st_mode & 0o7777 if target.exists() else 0o666 & ~_umask())
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_writer(path, "wb") as stream:
        stream.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_writer(path) as stream:
        stream.write(text)


def atomic_write_json(path: str | os.PathLike[str], value: Any, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(value, ensure_ascii=False, indent=indent) + "\n")


def atomic_write_lines(path: str | os.PathLike[str], records: Iterable[dict[str, Any]]) -> int:
    """Write JSON Lines atomically; return the number of records."""
    count = 0
    with atomic_writer(path) as stream:
        for record in records:
            stream.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def refuse_overwriting_inputs(
    outputs: Iterable[str | os.PathLike[str]], inputs: Iterable[str | os.PathLike[str]], flag: str = "--out"
) -> None:
    """Raise before anything is written if an output path is (or resolves to) one of the inputs."""
    ins = [Path(p) for p in inputs]
    for out in map(Path, outputs):
        for src in ins:
            if out.resolve() == src.resolve() or _same(out, src):
                raise ViChatError(f"{flag} {out} would overwrite the input {src}; choose another output path")


class OutputLock:
    """An exclusive, non-blocking lock on an output folder (``<dir>/.vichat.lock``), held while a job writes.

    The OS releases it when the process dies, so a killed job never leaves a stale lock behind. ``name``
    picks the lock file: jobs that each write their own files into one folder lock ``.<output>.lock``.
    """

    def __init__(self, folder: str | os.PathLike[str], job: str = "a job", name: str = LOCK_NAME):
        self.folder = Path(folder)
        self.job = job
        self.name = name  # one lock per folder by default; a per-output name lets jobs share a folder
        self._fh: IO[str] | None = None

    def acquire(self) -> OutputLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        fh = (self.folder / self.name).open("a+", encoding="utf-8")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise OutputBusyError(
                f"{self.folder} is in use by {holder}; wait for it to finish or choose another output folder"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{self.job} (pid {os.getpid()})\n")
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
