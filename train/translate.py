"""Translate prompt/response records from English to Vietnamese, cached, concurrent and resumable.

    python -m train.translate IN.jsonl OUT.jsonl [--translator google|none] [--concurrency 8]
        [--cache .cache/translate] [--failures OUT.jsonl.failures.jsonl] [--url URL] [--max-chars 5000]

How it works
- Each text is cut into request-sized chunks below ``--max-chars`` (Google refuses 5000
  characters or more) at paragraph, then line, sentence and word boundaries, and rejoined
  exactly. Fenced code blocks are never sent; inline ``code`` is replaced by ``[[n]]`` markers
  and put back afterwards. A translation that loses a marker or a line break is redone in
  smaller pieces (line by line, or the prose around the code separately), so the layout
  survives even when the service reflows it.
- Every translated chunk is stored in a SQLite cache keyed by a hash of (engine, languages,
  text). A rerun, or a resumed run, sends no request for anything already translated.
- Finished records are appended to ``OUT.partial`` as they complete (any order, one line per
  record). A killed run resumes from it; when all records are done they are written to OUT in
  input order and the journal is removed.
- Requests run in a bounded thread pool. HTTP 429, 5xx, timeouts and connection errors are
  retried with exponential backoff and jitter (``Retry-After`` is honoured); a record that still
  fails goes to the failures file with its index, id and reason. Run the same command again to
  retry only those.

The Google client is deep-translator's ``GoogleTranslator`` with its endpoint made a setting
(``--url``) so a stand-in server on 127.0.0.1 can answer (see ``train.fake_translate_server``),
plus what the library's ``translate`` lacks for bulk use: a timeout, per-thread HTTP sessions,
query parameters built per call (the library mutates shared state), and errors that say which
HTTP status came back.
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import hashlib
import json
import os
import random
import re
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import requests
from bs4 import BeautifulSoup
from deep_translator import GoogleTranslator
from deep_translator.constants import BASE_URLS
from tqdm import tqdm

from vichat.data import read_jsonl_strict, write_jsonl
from vichat.errors import SettingsError, ViChatError

GOOGLE_URL = BASE_URLS["GOOGLE_TRANSLATE"]
TRANSLATORS = ("google", "none")
JOURNAL_SUFFIX = ".partial"
FAILURES_SUFFIX = ".failures.jsonl"
JOURNAL_VERSION = 1


@dataclass
class TranslateSettings:
    """Everything that controls a translation run (the CLI flags, one to one)."""

    translator: str = "google"
    source_lang: str = "en"
    target_lang: str = "vi"
    url: str = GOOGLE_URL
    fields: tuple[str, ...] = ("prompt", "response")
    max_chars: int = 5000
    """A request's text is always shorter than this (Google's limit is 5000)."""
    concurrency: int = 8
    timeout_s: float = 15.0
    max_attempts: int = 6
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0
    cache_dir: str | None = ".cache/translate"
    failures: str | None = None
    progress: bool = True

    def check(self) -> None:
        if self.translator not in TRANSLATORS:
            raise SettingsError(
                f"--translator must be one of {', '.join(TRANSLATORS)}, got {self.translator!r}"
            )
        limits = {
            "--concurrency": (self.concurrency, 1, 256),
            "--max-chars": (self.max_chars, 20, 1_000_000),
            "--max-attempts": (self.max_attempts, 1, 100),
        }
        for flag, (value, low, high) in limits.items():
            if not low <= value <= high:
                raise SettingsError(f"{flag} must be between {low} and {high}, got {value}")
        if self.timeout_s <= 0 or self.backoff_s < 0 or self.backoff_max_s < 0:
            raise SettingsError("--timeout must be > 0 and --backoff/--backoff-max must be >= 0")
        if not self.fields:
            raise SettingsError("--fields needs at least one field name")


# --------------------------------------------------------------------------- errors


class ServiceError(Exception):
    """The service answered, but not with a translation."""

    def __init__(self, message: str, retryable: bool, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after_s = retry_after_s


class TranslationFailed(Exception):
    """A text could not be translated, retries included; the reason is the message."""


class RecordFailed(Exception):
    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(f'field "{field_name}": {reason}')
        self.field_name = field_name
        self.reason = reason


# --------------------------------------------------------------------------- clients


class TextTranslator(Protocol):
    """Translates one request-sized text (shorter than the limit, already stripped)."""

    def translate(self, text: str) -> str: ...


class EndpointGoogleTranslator(GoogleTranslator):
    """deep-translator's GoogleTranslator aimed at a configurable endpoint, safe to share across threads.

    Sends the library's request (``GET base_url?tl=..&sl=..&q=..``) and reads the library's
    elements (``div.t0``, else ``div.result-container``), with a timeout and a session per thread.
    """

    def __init__(self, source: str, target: str, base_url: str = GOOGLE_URL, timeout_s: float = 15.0) -> None:
        super().__init__(source=source, target=target)
        self._base_url = base_url
        self.timeout_s = timeout_s
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def translate(self, text: str, **kwargs: Any) -> str:
        params = {**self._url_params, "tl": self._target, "sl": self._source, self.payload_key: text}
        response = self._session().get(self._base_url, params=params, timeout=self.timeout_s)
        try:
            _raise_for_status(response)
            soup = BeautifulSoup(response.text, "html.parser")
        finally:
            response.close()
        element = soup.find(self._element_tag, self._element_query) or soup.find(
            self._element_tag, self._alt_element_query
        )
        if element is None:
            raise ServiceError(
                "the answer has no translation element (blocked or page layout changed)", False
            )
        return element.get_text().strip()

    def close(self) -> None:
        with self._sessions_lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()


def _raise_for_status(response: requests.Response) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    if status == 429 or status >= 500:
        raise ServiceError(f"HTTP {status}", True, _retry_after(response.headers.get("Retry-After")))
    raise ServiceError(f"HTTP {status}", False)


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date; the exponential backoff applies instead


@dataclass(frozen=True)
class PassThrough:
    """``--translator none``: every text comes back unchanged; nothing is sent or cached."""

    def translate(self, text: str) -> str:
        return text


def make_client(settings: TranslateSettings) -> TextTranslator:
    return EndpointGoogleTranslator(
        settings.source_lang, settings.target_lang, base_url=settings.url, timeout_s=settings.timeout_s
    )


# --------------------------------------------------------------------------- cache


class TranslationCache:
    """Translated chunks on disk: SQLite, one row per (engine, languages, text) hash, safe across threads."""

    def __init__(self, directory: str | os.PathLike[str], namespace: str) -> None:
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "translations.sqlite3"
        self.namespace = namespace
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS translations (key TEXT PRIMARY KEY, source TEXT, target TEXT)"
        )

    def key(self, text: str) -> str:
        return hashlib.sha256(f"{self.namespace}\x00{text}".encode()).hexdigest()

    def get(self, text: str) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT target FROM translations WHERE key = ?", (self.key(text),)
            ).fetchone()
        return None if row is None else row[0]

    def put(self, text: str, translation: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO translations (key, source, target) VALUES (?, ?, ?)",
                (self.key(text), text, translation),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()


# --------------------------------------------------------------------------- counters


@dataclass
class TranslateStats:
    """What a run did. ``requests`` counts HTTP requests sent, retries included."""

    records: int = 0
    resumed: int = 0
    translated: int = 0
    failed: int = 0
    requests: int = 0
    cache_hits: int = 0
    retries: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)

    def summary(self) -> str:
        return (
            f"{self.translated} translated, {self.resumed} resumed, {self.failed} failed of {self.records} records; "
            f"{self.requests} requests ({self.retries} retries), {self.cache_hits} cache hits"
        )


# --------------------------------------------------------------------------- retries


@dataclass
class RetryPolicy:
    max_attempts: int = 6
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int, retry_after_s: float | None) -> float:
        """Exponential backoff with jitter (50% to 150%), at least Retry-After, at most the cap."""
        base = self.backoff_s * 2 ** (attempt - 1) * (0.5 + self.rng.random())
        return min(self.backoff_max_s, max(base, retry_after_s or 0.0))


def call_with_retries(
    call: Callable[[], str],
    policy: RetryPolicy,
    stats: TranslateStats,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Run ``call``; retry what may pass later (429, 5xx, timeouts, connection errors)."""
    reason = "no attempt made"
    for attempt in range(1, policy.max_attempts + 1):
        retry_after = None
        try:
            stats.add("requests")
            return call()
        except ServiceError as exc:
            if not exc.retryable:
                raise TranslationFailed(str(exc)) from None
            reason, retry_after = str(exc), exc.retry_after_s
        except requests.Timeout:
            reason = "timed out"
        except requests.ConnectionError as exc:
            reason = f"connection failed ({type(exc).__name__})"
        if attempt < policy.max_attempts:
            stats.add("retries")
            sleep(policy.delay(attempt, retry_after))
    raise TranslationFailed(f"{reason}, gave up after {policy.max_attempts} attempts")


# --------------------------------------------------------------------------- splitting text

FENCE = re.compile(r"^[ \t]{0,3}(`{3,}|~{3,})")
INLINE_CODE = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)")
MARKER = re.compile(r"\[\s*\[\s*(\d+)\s*\]\s*\]")
LETTER = re.compile(r"[^\W\d_]")
SPLIT_LEVELS = (
    re.compile(r"\n[ \t]*\n\s*"),  # paragraphs
    re.compile(r"\n"),  # lines
    re.compile(r"(?<=[.!?…;:])\s+"),  # sentences
    re.compile(r"\s+"),  # words
)


def split_code_blocks(text: str) -> list[tuple[bool, str]]:
    """``[(is_code, piece), ...]`` whose pieces join back to ``text``; fenced blocks are code.

    A fence opens with three or more backticks or tildes and closes with a line starting
    with at least as many of the same; an unclosed fence runs to the end (as in Markdown).
    """
    pieces: list[tuple[bool, str]] = []
    prose: list[str] = []
    lines = iter(text.splitlines(keepends=True))
    for line in lines:
        opening = FENCE.match(line)
        if not opening:
            prose.append(line)
            continue
        if prose:
            pieces.append((False, "".join(prose)))
            prose = []
        fence = opening.group(1)
        block = [line]
        for inner in lines:
            block.append(inner)
            closing = FENCE.match(inner)
            if closing and closing.group(1)[0] == fence[0] and len(closing.group(1)) >= len(fence):
                break
        pieces.append((True, "".join(block)))
    if prose:
        pieces.append((False, "".join(prose)))
    return pieces


def mask_inline_code(text: str) -> tuple[str, list[str]] | None:
    """Replace inline code spans by ``[[n]]``; None when the text already holds such markers."""
    if MARKER.search(text):
        return None
    spans: list[str] = []

    def keep(match: re.Match[str]) -> str:
        spans.append(match.group(0))
        return f"[[{len(spans) - 1}]]"

    return INLINE_CODE.sub(keep, text), spans


def unmask(text: str, spans: Sequence[str]) -> str:
    return MARKER.sub(lambda match: spans[int(match.group(1))], text) if spans else text


def _cut_after(text: str, separator: re.Pattern[str]) -> list[str]:
    pieces, start = [], 0
    for match in separator.finditer(text):
        if match.end() > start:
            pieces.append(text[start : match.end()])
            start = match.end()
    if start < len(text):
        pieces.append(text[start:])
    return pieces


def split_for_limit(text: str, limit: int, level: int = 0) -> list[str]:
    """Cut ``text`` into pieces shorter than ``limit`` that join back to exactly ``text``.

    Cuts at paragraph breaks first, then line breaks, sentence ends, spaces, and as a last
    resort anywhere; neighbouring small pieces are packed together up to the limit.
    """
    if len(text) < limit:
        return [text]
    if level >= len(SPLIT_LEVELS):
        return [text[start : start + limit - 1] for start in range(0, len(text), limit - 1)]
    chunks: list[str] = []
    current = ""
    for unit in _cut_after(text, SPLIT_LEVELS[level]):
        if len(unit) >= limit:
            if current:
                chunks.append(current)
                current = ""
            chunks.extend(split_for_limit(unit, limit, level + 1))
        elif len(current) + len(unit) >= limit:
            chunks.append(current)
            current = unit
        else:
            current += unit
    if current:
        chunks.append(current)
    return chunks


# --------------------------------------------------------------------------- translating text


@dataclass
class TextPipeline:
    """Turns one whole text into its translation: code kept, limit respected, cache first."""

    client: TextTranslator
    cache: TranslationCache | None
    policy: RetryPolicy
    stats: TranslateStats
    max_chars: int
    _inflight: dict[str, futures.Future[str]] = field(default_factory=dict, init=False, repr=False)
    _inflight_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def translate(self, text: str) -> str:
        return "".join(piece if is_code else self._prose(piece) for is_code, piece in split_code_blocks(text))

    def _prose(self, text: str) -> str:
        masked = mask_inline_code(text)
        if masked is None:  # the text has its own [[n]]: no markers; translate around the code instead
            return "".join(self._around_code(piece) for piece in _split_keep(INLINE_CODE, text))
        body, spans = masked
        chunks = split_for_limit(body, self.max_chars)
        return unmask("".join(self._chunk(chunk, markers=bool(spans)) for chunk in chunks), spans)

    def _around_code(self, piece: str) -> str:
        if INLINE_CODE.fullmatch(piece):
            return piece
        return "".join(self._chunk(chunk, markers=False) for chunk in split_for_limit(piece, self.max_chars))

    def _chunk(self, chunk: str, markers: bool) -> str:
        """Translate one chunk; redo it in smaller pieces if line breaks or markers got lost."""
        core, lead, trail = _strip(chunk)
        if not LETTER.search(MARKER.sub("", core) if markers else core):
            return chunk  # nothing to translate: numbers, punctuation, code markers
        translation = self._request(core)
        if "\n" in core and translation.count("\n") != core.count("\n"):
            lines = _cut_after(core, SPLIT_LEVELS[1])
            return lead + "".join(self._chunk(line, markers) for line in lines) + trail
        if markers and sorted(MARKER.findall(translation)) != sorted(MARKER.findall(core)):
            pieces = _split_keep(MARKER, core)
            return lead + "".join(p if MARKER.fullmatch(p) else self._chunk(p, False) for p in pieces) + trail
        return lead + translation + trail

    def _request(self, text: str) -> str:
        """One text through the cache; identical texts in flight at once share one request."""
        cached = self._cached(text)
        if cached is not None:
            return cached
        with self._inflight_lock:
            shared = self._inflight.get(text)
            if shared is None:
                own: futures.Future[str] = futures.Future()
                self._inflight[text] = own
        if shared is not None:
            self.stats.add("cache_hits")
            return shared.result()
        try:
            translation = self._cached(text)
            if translation is None:
                translation = call_with_retries(lambda: self.client.translate(text), self.policy, self.stats)
                if self.cache is not None:
                    self.cache.put(text, translation)
            own.set_result(translation)
            return translation
        except BaseException as exc:
            own.set_exception(exc)
            raise
        finally:
            with self._inflight_lock:
                del self._inflight[text]

    def _cached(self, text: str) -> str | None:
        cached = None if self.cache is None else self.cache.get(text)
        if cached is not None:
            self.stats.add("cache_hits")
        return cached


def _strip(text: str) -> tuple[str, str, str]:
    core = text.strip()
    if not core:
        return "", text, ""
    start = text.index(core)
    return core, text[:start], text[start + len(core) :]


def _split_keep(pattern: re.Pattern[str], text: str) -> list[str]:
    """Split ``text`` around ``pattern``'s matches, keeping the matches as pieces."""
    pieces, start = [], 0
    for match in pattern.finditer(text):
        pieces += [text[start : match.start()], match.group(0)]
        start = match.end()
    pieces.append(text[start:])
    return [piece for piece in pieces if piece]


class Translates(Protocol):
    def translate(self, text: str) -> str: ...


def translate_record(record: dict[str, Any], fields: Sequence[str], pipeline: Translates) -> dict[str, Any]:
    """A copy of ``record`` with ``fields`` translated; other fields are kept as they are."""
    result = dict(record)
    for name in fields:
        value = record.get(name)
        if not isinstance(value, str):
            continue
        try:
            result[name] = pipeline.translate(value)
        except TranslationFailed as exc:
            raise RecordFailed(name, str(exc)) from None
    return result


# --------------------------------------------------------------------------- journal


class Journal:
    """Finished records of an unfinished run, one JSON line each: ``{"i": index, "record": {...}}``.

    The first line identifies the run (input hash and settings); a journal from another input
    or other settings is set aside. A line cut short by a kill is dropped on reopening.
    """

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path = path
        self.header = {"journal": JOURNAL_VERSION, **header}
        self._stream: IO[str] | None = None

    def open(self) -> set[int]:
        """Open for appending; return the indices already done."""
        done: dict[int, str] = {}
        if self.path.exists():
            done = self._read_done()
        with self.path.open("w", encoding="utf-8") as stream:  # rewrite: drops a torn last line
            stream.write(json.dumps(self.header, ensure_ascii=False) + "\n")
            stream.writelines(done.values())
        self._stream = self.path.open("a", encoding="utf-8")
        return set(done)

    def _read_done(self) -> dict[int, str]:
        done: dict[int, str] = {}
        with self.path.open("rb") as stream:
            first = stream.readline()
            if _loads(first) != self.header:
                return {}
            for raw in stream:
                entry = _loads(raw)
                if raw.endswith(b"\n") and isinstance(entry, dict) and isinstance(entry.get("i"), int):
                    done[entry["i"]] = raw.decode("utf-8")
        return done

    def add(self, index: int, record: dict[str, Any]) -> None:
        assert self._stream is not None, "open() first"
        self._stream.write(json.dumps({"i": index, "record": record}, ensure_ascii=False) + "\n")
        self._stream.flush()

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def records_in_order(self) -> Iterator[dict[str, Any]]:
        """The journal's records sorted by input index, read one at a time."""
        offsets: dict[int, int] = {}
        with self.path.open("rb") as stream:
            stream.readline()
            while raw := stream.readline():
                offsets[json.loads(raw)["i"]] = stream.tell() - len(raw)
            for index in sorted(offsets):
                stream.seek(offsets[index])
                yield json.loads(stream.readline())["record"]


def _loads(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- the run


def translate_file(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    settings: TranslateSettings | None = None,
    client: TextTranslator | None = None,
) -> TranslateStats:
    """Translate a JSONL file, resuming a previous run; return what was done.

    ``client`` replaces the HTTP client (tests inject failures with it). Raises DataError for
    a malformed input file and SettingsError for bad settings.
    """
    settings = settings or TranslateSettings()
    settings.check()
    source, target = Path(input_path), Path(output_path)
    if source.resolve() == target.resolve():
        raise SettingsError(f"OUT must differ from IN ({source})")
    records = read_jsonl_strict(source)
    stats = TranslateStats(records=len(records))
    passthrough = settings.translator == "none" and client is None
    own_client = client is None and not passthrough
    client = client or (None if passthrough else make_client(settings))
    cache = None if passthrough else _open_cache(settings)
    journal = Journal(target.with_name(target.name + JOURNAL_SUFFIX), _journal_header(source, settings))
    failures_path = Path(settings.failures or target.with_name(target.name + FAILURES_SUFFIX))
    try:
        done = journal.open()
        stats.resumed = len(done)
        pipeline = (
            PassThrough()
            if client is None
            else TextPipeline(client, cache, _policy(settings), stats, settings.max_chars)
        )
        todo = [index for index in range(len(records)) if index not in done]
        with failures_path.open("w", encoding="utf-8") as failures:
            _run(records, todo, pipeline, settings, journal, failures, stats)
        journal.close()
        write_jsonl(target, journal.records_in_order())
        if stats.failed == 0:
            journal.path.unlink()
            failures_path.unlink()
    finally:
        journal.close()
        if cache is not None:
            cache.close()
        if own_client and hasattr(client, "close"):
            client.close()
    return stats


def _open_cache(settings: TranslateSettings) -> TranslationCache | None:
    if not settings.cache_dir:
        return None
    namespace = f"{settings.translator}:{settings.source_lang}:{settings.target_lang}"
    return TranslationCache(settings.cache_dir, namespace)


def _policy(settings: TranslateSettings) -> RetryPolicy:
    return RetryPolicy(settings.max_attempts, settings.backoff_s, settings.backoff_max_s)


def _journal_header(source: Path, settings: TranslateSettings) -> dict[str, Any]:
    return {
        "input_sha256": _file_sha256(source),
        "translator": settings.translator,
        "source_lang": settings.source_lang,
        "target_lang": settings.target_lang,
        "fields": list(settings.fields),
    }


def _run(
    records: Sequence[dict[str, Any]],
    todo: Sequence[int],
    pipeline: Translates,
    settings: TranslateSettings,
    journal: Journal,
    failures: IO[str],
    stats: TranslateStats,
) -> None:
    """Translate ``todo`` in a bounded pool; journal each record as it completes."""
    window = settings.concurrency * 2
    queue = iter(todo)
    pending: dict[futures.Future[dict[str, Any]], int] = {}
    progress = tqdm(
        total=len(records),
        initial=len(records) - len(todo),
        unit="rec",
        desc="translate",
        disable=not settings.progress,
    )
    pool = futures.ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="translate")

    def refill() -> None:
        while len(pending) < window and (index := next(queue, None)) is not None:
            pending[pool.submit(translate_record, records[index], settings.fields, pipeline)] = index

    try:
        refill()
        while pending:
            finished, _ = futures.wait(pending, return_when=futures.FIRST_COMPLETED)
            for future in finished:
                index = pending.pop(future)
                try:
                    journal.add(index, future.result())
                    stats.add("translated")
                except RecordFailed as exc:
                    stats.add("failed")
                    _write_failure(failures, index, records[index], exc)
                progress.update(1)
            progress.set_postfix(requests=stats.requests, failed=stats.failed, refresh=False)
            refill()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        progress.close()


def _write_failure(stream: IO[str], index: int, record: dict[str, Any], exc: RecordFailed) -> None:
    entry = {"index": index, "id": record.get("id"), "field": exc.field_name, "reason": exc.reason}
    stream.write(json.dumps(entry, ensure_ascii=False) + "\n")
    stream.flush()


# --------------------------------------------------------------------------- CLI


@dataclass
class TranslateArgs:
    input: str
    output: str
    settings: TranslateSettings


def parse_args(argv: Sequence[str] | None = None) -> TranslateArgs:
    defaults = TranslateSettings()
    parser = argparse.ArgumentParser(prog="python -m train.translate", description=__doc__.split("\n")[0])
    parser.add_argument("input", metavar="IN", help="prompt/response JSONL in English")
    parser.add_argument("output", metavar="OUT", help="translated JSONL (written in input order)")
    parser.add_argument("--translator", choices=TRANSLATORS, default=defaults.translator)
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency, help="requests in flight")
    parser.add_argument(
        "--cache", dest="cache_dir", default=defaults.cache_dir, help="cache folder ('' disables)"
    )
    parser.add_argument("--failures", default=None, help=f"failures JSONL (default: OUT{FAILURES_SUFFIX})")
    parser.add_argument("--url", default=defaults.url, help="Google Translate mobile endpoint")
    parser.add_argument("--source-lang", default=defaults.source_lang)
    parser.add_argument("--target-lang", default=defaults.target_lang)
    parser.add_argument(
        "--fields", nargs="+", default=list(defaults.fields), help="record fields to translate"
    )
    parser.add_argument("--max-chars", type=int, default=defaults.max_chars, help="request size limit")
    parser.add_argument("--timeout", dest="timeout_s", type=float, default=defaults.timeout_s, help="seconds")
    parser.add_argument("--max-attempts", type=int, default=defaults.max_attempts)
    parser.add_argument(
        "--backoff", dest="backoff_s", type=float, default=defaults.backoff_s, help="first delay (s)"
    )
    parser.add_argument("--backoff-max", dest="backoff_max_s", type=float, default=defaults.backoff_max_s)
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    values = vars(parser.parse_args(argv))
    source, output = values.pop("input"), values.pop("output")
    values["fields"] = tuple(values["fields"])
    return TranslateArgs(source, output, TranslateSettings(**values))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    journal = f"{args.output}{JOURNAL_SUFFIX}"
    try:
        stats = translate_file(args.input, args.output, args.settings)
    except ViChatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: finished records are kept in {journal}; run the same command to resume",
            file=sys.stderr,
        )
        return 130
    print(stats.summary())
    if stats.failed:
        failures = args.settings.failures or f"{args.output}{FAILURES_SUFFIX}"
        print(
            f"{stats.failed} record(s) failed (see {failures}); {args.output} holds the others. "
            "Run the same command again to retry only the failed ones.",
            file=sys.stderr,
        )
        return 1
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
