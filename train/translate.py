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
- Every translated chunk is stored in a SQLite cache keyed by a hash of (engine, endpoint,
  languages, text), so a stand-in server's answers are never served as a real service's. A
  rerun, or a resumed run, sends no request for anything already translated. An empty answer
  to a text that has words is a failure, never cached.
- Finished records are appended to ``OUT.partial`` as they complete (any order, one line per
  record). A killed run resumes from it (the journal names the input, endpoint and settings it
  belongs to; it is only ever appended to, or replaced whole by temp file and rename); when all
  records are done they are written to OUT in input order and the journal is removed.
- Requests run in a bounded thread pool. HTTP 429, 5xx, timeouts, connection errors and broken
  answers (a body cut short, a redirect loop) are retried with exponential backoff and jitter
  (``Retry-After`` is honoured); a record that still fails goes to the failures file (written
  whole at the end) with its index, id and reason, the others go on, and the exit status is 1.
  Run the same command again to retry only those. Ctrl-C stops a backoff at once.
- Before any work: numbers, the URL, the languages and ``--fields`` are checked, OUT and the
  failures file may not be the input (nor a file translate did not write), and OUT's folder is
  locked (created if missing), so a second translation into it stops with a message.

The Google client is deep-translator's ``GoogleTranslator`` with its endpoint made a setting
(``--url``) so a stand-in server on 127.0.0.1 can answer (see ``testkit.translate_server``),
plus what the library's ``translate`` lacks for bulk use: a timeout, per-thread HTTP sessions,
query parameters built per call (the library mutates shared state), and errors that say which
HTTP status came back.
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import dataclasses
import difflib
import hashlib
import http.client
import json
import os
import random
import re
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import requests
from bs4 import BeautifulSoup
from deep_translator import GoogleTranslator
from deep_translator.constants import BASE_URLS, GOOGLE_LANGUAGES_TO_CODES
from tqdm import tqdm

from vichat.checks import arg, number
from vichat.cli import run
from vichat.data import read_jsonl_strict
from vichat.errors import DataError, SettingsError
from vichat.files import OutputLock, atomic_write_lines, atomic_writer, refuse_overwriting_inputs
from vichat.jsonl import parse_object

GOOGLE_URL = BASE_URLS["GOOGLE_TRANSLATE"]
TRANSLATORS = ("google", "none")
JOURNAL_SUFFIX = ".partial"
FAILURES_SUFFIX = ".failures.jsonl"
JOURNAL_VERSION = 2
MAX_REDIRECTS = 10
LANGUAGE_CODES = {code.lower(): code for code in GOOGLE_LANGUAGES_TO_CODES.values()}
LANGUAGE_NAMES = {name.lower(): code for name, code in GOOGLE_LANGUAGES_TO_CODES.items()}

NUMBER_FLAGS: dict[str, tuple[str, dict[str, Any]]] = {
    "concurrency": ("--concurrency", {"minimum": 1, "maximum": 256, "integer": True}),
    "max_chars": ("--max-chars", {"minimum": 20, "maximum": 1_000_000, "integer": True}),
    "max_attempts": ("--max-attempts", {"minimum": 1, "maximum": 100, "integer": True}),
    "timeout_s": ("--timeout", {"above": 0, "maximum": 3600}),
    "backoff_s": ("--backoff", {"minimum": 0, "maximum": 3600}),
    "backoff_max_s": ("--backoff-max", {"minimum": 0, "maximum": 3600}),
}
"""Every numeric setting: its flag and its bounds (checked by ``vichat.checks`` on the CLI and in the API)."""
RETRIES_BOUNDS: dict[str, Any] = {"minimum": 0, "maximum": 99, "integer": True}


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
        self.checked()

    def checked(self) -> TranslateSettings:
        """These settings with every value checked and languages as codes; SettingsError names the flag."""
        if self.translator not in TRANSLATORS:
            raise SettingsError(
                f"--translator must be one of {', '.join(TRANSLATORS)}, got {self.translator!r}"
            )
        numbers = {
            name: number(flag, getattr(self, name), **bounds) for name, (flag, bounds) in NUMBER_FLAGS.items()
        }
        fields = tuple(dict.fromkeys(self.fields))
        if not fields or not all(isinstance(name, str) and name.strip() for name in fields):
            raise SettingsError(f"--fields needs one or more field names, got {list(self.fields)}")
        languages = {"source_lang": self.source_lang, "target_lang": self.target_lang}
        if self.translator == "google":
            check_url(self.url)
            languages = {
                "source_lang": language_code("--source-lang", self.source_lang, allow_auto=True),
                "target_lang": language_code("--target-lang", self.target_lang, allow_auto=False),
            }
        return dataclasses.replace(self, fields=fields, **numbers, **languages)


def check_url(url: Any) -> str:
    """``url`` if it is an absolute http(s) address; SettingsError saying what a good one looks like."""
    example = (
        f"an http:// or https:// address such as {GOOGLE_URL} (or http://127.0.0.1:8765/m for a stand-in)"
    )
    text = url if isinstance(url, str) else ""
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number or out of range
    except ValueError as exc:
        raise SettingsError(f"--url {url!r} is not a valid address ({exc}); give {example}") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or any(c.isspace() for c in text):
        raise SettingsError(f"--url must be {example}, got {url!r}")
    return text


def endpoint_key(url: str) -> str:
    """The endpoint as it goes into cache and journal keys: one spelling per address, no credentials."""
    parts = urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError:  # only for an unchecked URL (``--translator none``); it is sent nowhere
        port = None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port in (None, {"http": 80, "https": 443}.get(scheme)) else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path.rstrip("/") or "/", parts.query, ""))


def language_code(flag: str, value: Any, allow_auto: bool) -> str:
    """The Google language code for a code or an English name (``vi``, ``Vietnamese``); else SettingsError."""
    text = value.strip().lower() if isinstance(value, str) else ""
    if allow_auto and text == "auto":
        return "auto"
    if text in LANGUAGE_CODES:
        return LANGUAGE_CODES[text]
    if text in LANGUAGE_NAMES:
        return LANGUAGE_NAMES[text]
    close = difflib.get_close_matches(text, [*LANGUAGE_CODES, *LANGUAGE_NAMES], n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    auto = " or auto" if allow_auto else ""
    raise SettingsError(
        f"{flag} {value!r} is not a language Google Translate knows{hint}; give a code such as en, vi, fr"
        f"{auto}, or an English name such as vietnamese"
    )


# --------------------------------------------------------------------------- errors


class ServiceError(Exception):
    """The service answered, but not with a translation."""

    def __init__(self, message: str, retryable: bool, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after_s = retry_after_s


class TranslationFailed(Exception):
    """A text could not be translated, retries included; the reason is the message."""


class Stopped(Exception):  # noqa: N818 - a state, not a failure of the text
    """The run is stopping (Ctrl-C): no new request, no more waiting."""


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
            session.max_redirects = MAX_REDIRECTS
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
    """Translated chunks on disk: SQLite, one row per (engine, endpoint, languages, text) hash, thread-safe.

    ``namespace`` holds everything but the text that changes a translation; an empty translation is
    never stored, and one found (from an older version) counts as missing.
    """

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
        return row[0] if row is not None and row[0].strip() else None

    def put(self, text: str, translation: str) -> None:
        if not translation.strip():
            return
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
    written: int = 0
    """Records written to OUT (0: OUT was not written, every record failed)."""
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
    stop: threading.Event = field(default_factory=threading.Event)
    """Set when the run stops (Ctrl-C): every backoff ends at once and no new request starts."""

    def delay(self, attempt: int, retry_after_s: float | None) -> float:
        """Exponential backoff with jitter (50% to 150%), at least Retry-After, at most the cap."""
        base = self.backoff_s * 2 ** (attempt - 1) * (0.5 + self.rng.random())
        return min(self.backoff_max_s, max(base, retry_after_s or 0.0))


NOT_RETRIED = (
    requests.exceptions.InvalidURL,
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidSchema,
)
"""Requests that can never pass (the URL is checked up front; these are for an injected client)."""


def call_with_retries(call: Callable[[], str], policy: RetryPolicy, stats: TranslateStats) -> str:
    """Run ``call``; retry what may pass later (429, 5xx, timeouts, broken connections and answers).

    The backoff waits on ``policy.stop``, so a stopping run (Ctrl-C) ends it at once (``Stopped``).
    """
    reason = "no attempt made"
    for attempt in range(1, policy.max_attempts + 1):
        if policy.stop.is_set():
            raise Stopped()
        retry_after = None
        try:
            stats.add("requests")
            return call()
        except ServiceError as exc:
            if not exc.retryable:
                raise TranslationFailed(str(exc)) from None
            reason, retry_after = str(exc), exc.retry_after_s
        except NOT_RETRIED as exc:
            raise TranslationFailed(f"bad request address ({exc})") from None
        except requests.Timeout:
            reason = "timed out"
        except requests.ConnectionError as exc:
            reason = f"connection failed ({type(exc).__name__})"
        except requests.exceptions.ChunkedEncodingError:
            reason = "the answer was cut short (connection closed mid-body)"
        except requests.TooManyRedirects:
            reason = f"more than {MAX_REDIRECTS} redirects (a redirect loop)"
        except (requests.RequestException, http.client.HTTPException) as exc:
            reason = f"broken answer ({type(exc).__name__}: {exc})"
        if attempt < policy.max_attempts:
            stats.add("retries")
            if policy.stop.wait(policy.delay(attempt, retry_after)):
                raise Stopped()
    raise TranslationFailed(f"{reason}, gave up after {policy.max_attempts} attempts")


def _nonempty(translation: str) -> str:
    """An answer with no text for a text with words is a failure (it is never cached)."""
    if not translation.strip():
        raise ServiceError("the service returned an empty translation", False)
    return translation


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
                translation = call_with_retries(
                    lambda: _nonempty(self.client.translate(text)), self.policy, self.stats
                )
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

    The first line identifies the run (input hash, endpoint and settings); a journal from another
    input or other settings is replaced (its chunks stay in the cache). The file is only appended
    to; when it must be cleaned (a line cut short by a kill, a duplicate) or replaced, a clean copy
    is written beside it and renamed over it, so a full disk or a crash never loses a finished record.
    """

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path = path
        self.header = {"journal": JOURNAL_VERSION, **header}
        self._stream: IO[str] | None = None

    def open(self) -> set[int]:
        """Open for appending; return the indices already done."""
        done, clean = self._read_done() if self.path.exists() else ({}, False)
        if not clean:
            with atomic_writer(self.path) as stream:
                stream.write(json.dumps(self.header, ensure_ascii=False) + "\n")
                stream.writelines(done.values())
        self._stream = self.path.open("a", encoding="utf-8")
        return set(done)

    def _read_done(self) -> tuple[dict[int, str], bool]:
        """The finished records' lines by index, and whether the file holds exactly those (nothing to clean)."""
        done: dict[int, str] = {}
        clean = True
        with self.path.open("rb") as stream:
            first = stream.readline()
            if parse_object(first) != self.header or not first.endswith(b"\n"):
                return {}, False
            for raw in stream:
                entry = parse_object(raw)  # None: malformed, cut short, not one of ours
                if raw.endswith(b"\n") and isinstance(entry, dict) and isinstance(entry.get("i"), int):
                    clean = clean and entry["i"] not in done
                    done[entry["i"]] = raw.decode("utf-8")
                else:
                    clean = False
        return done, clean

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
    a malformed input file, SettingsError for bad settings or paths, OutputBusyError when
    another run writes into OUT's folder. Nothing is written before all of that is checked.
    """
    settings = (settings or TranslateSettings()).checked()
    source, target = Path(input_path), Path(output_path)
    journal_path = target.with_name(target.name + JOURNAL_SUFFIX)
    failures_path = (
        Path(settings.failures) if settings.failures else target.with_name(target.name + FAILURES_SUFFIX)
    )
    _check_paths(source, target, journal_path, failures_path)
    records = read_jsonl_strict(source)
    if not records:
        raise DataError(
            f"{source}: no records to translate (the file is empty or only blank lines); give a JSONL file of records"
        )
    _check_fields(source, records, settings.fields)
    with OutputLock(
        _output_folder(target),
        job=f"train.translate writing {target.name}",
        name=f".vichat-{target.name}.lock",
    ):
        return _translate_locked(source, target, journal_path, failures_path, records, settings, client)


def _translate_locked(
    source: Path,
    target: Path,
    journal_path: Path,
    failures_path: Path,
    records: list[dict[str, Any]],
    settings: TranslateSettings,
    client: TextTranslator | None,
) -> TranslateStats:
    stats = TranslateStats(records=len(records))
    passthrough = settings.translator == "none" and client is None
    own_client = client is None and not passthrough
    client = client or (None if passthrough else make_client(settings))
    cache = None if passthrough else _open_cache(settings)
    journal = Journal(journal_path, journal_header(source, settings))
    policy = _policy(settings)
    try:
        done = journal.open()
        stats.resumed = len(done)
        pipeline = (
            PassThrough()
            if client is None
            else TextPipeline(client, cache, policy, stats, settings.max_chars)
        )
        todo = [index for index in range(len(records)) if index not in done]
        failures = _run(records, todo, pipeline, settings, journal, stats, policy.stop)
        journal.close()
        if stats.resumed + stats.translated:  # all failed: an OUT from an earlier run is left alone
            stats.written = atomic_write_lines(target, journal.records_in_order())
        if failures:
            atomic_write_lines(failures_path, failures)
        else:
            failures_path.unlink(missing_ok=True)  # checked up front: a failures file of ours, or none
            journal.path.unlink()
    finally:
        journal.close()
        if cache is not None:
            cache.close()
        if own_client and hasattr(client, "close"):
            client.close()
    return stats


def _check_paths(source: Path, target: Path, journal: Path, failures: Path) -> None:
    """Refuse, before anything is written, outputs that would overwrite the input or a user's file."""
    refuse_overwriting_inputs([target, journal], [source], "OUT")
    refuse_overwriting_inputs([failures], [source], "--failures")
    if failures.resolve() in (target.resolve(), journal.resolve()):
        raise SettingsError(f"--failures {failures} must differ from OUT ({target}) and its journal")
    for flag, path in (("OUT", target), ("--failures", failures)):
        if path.is_dir():
            raise SettingsError(f"{flag} {path} is a folder; give a file path such as {path / 'out.jsonl'}")
    if not _is_failures_file(failures):
        raise SettingsError(
            f"--failures {failures} exists and is not a failures file written by train.translate; "
            "choose another path (it is left as it is)"
        )


def _is_failures_file(path: Path) -> bool:
    """True when ``path`` is missing, empty, or every line is a failure entry: safe to replace or remove."""
    if not path.exists():
        return True
    try:
        with path.open("rb") as stream:
            for raw in stream:
                if not raw.strip():
                    continue
                entry = json.loads(raw)
                if not (isinstance(entry, dict) and "index" in entry and "reason" in entry):
                    return False
    except (OSError, ValueError, RecursionError):
        return False
    return True


def _check_fields(source: Path, records: Sequence[dict[str, Any]], fields: Sequence[str]) -> None:
    """Every field to translate holds text in at least one record (a typo would silently skip it)."""
    present: dict[str, bool] = {}
    for record in records:
        for name, value in record.items():
            present[name] = present.get(name, False) or isinstance(value, str)
    missing = [name for name in fields if name not in present]
    if missing:
        names = ", ".join(f'"{name}"' for name in missing)
        raise SettingsError(
            f"--fields: no record of {source} has the field {names}; "
            f"its records have: {', '.join(sorted(present))}"
        )
    textless = [name for name in fields if not present[name]]
    if textless:
        raise SettingsError(
            f"--fields: the field {', '.join(textless)} holds no text in any record of {source}; "
            f"fields with text: {', '.join(sorted(name for name, text in present.items() if text))}"
        )


def _output_folder(target: Path) -> Path:
    """OUT's folder, created if missing; SettingsError when a file stands where a folder must be."""
    folder = target.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise SettingsError(
            f"cannot create the folder {folder} for OUT: a file of that name is in the way; choose another OUT"
        ) from None
    return folder


def _open_cache(settings: TranslateSettings) -> TranslationCache | None:
    if not settings.cache_dir:
        return None
    return TranslationCache(settings.cache_dir, cache_namespace(settings))


def cache_namespace(settings: TranslateSettings) -> str:
    """What besides the text decides a translation: engine, endpoint, languages."""
    return "\x00".join(
        [settings.translator, endpoint_key(settings.url), settings.source_lang, settings.target_lang]
    )


def _policy(settings: TranslateSettings) -> RetryPolicy:
    return RetryPolicy(settings.max_attempts, settings.backoff_s, settings.backoff_max_s)


def journal_header(source: Path, settings: TranslateSettings) -> dict[str, Any]:
    """What a journal belongs to: the input's bytes and every setting that changes a translated record."""
    return {
        "input_sha256": _file_sha256(source),
        "translator": settings.translator,
        "endpoint": endpoint_key(settings.url) if settings.translator != "none" else None,
        "source_lang": settings.source_lang,
        "target_lang": settings.target_lang,
        "fields": list(settings.fields),
        "max_chars": settings.max_chars,
    }


def _run(
    records: Sequence[dict[str, Any]],
    todo: Sequence[int],
    pipeline: Translates,
    settings: TranslateSettings,
    journal: Journal,
    stats: TranslateStats,
    stop: threading.Event,
) -> list[dict[str, Any]]:
    """Translate ``todo`` in a bounded pool; journal each record as it completes; return the failures.

    On any exit but a normal one (Ctrl-C), ``stop`` is set: backoffs end and no request starts.
    """
    window = settings.concurrency * 2
    queue = iter(todo)
    pending: dict[futures.Future[dict[str, Any]], int] = {}
    failures: list[dict[str, Any]] = []
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
                    failures.append(_failure(index, records[index], exc))
                progress.update(1)
            progress.set_postfix(requests=stats.requests, failed=stats.failed, refresh=False)
            refill()
    except BaseException:
        stop.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        progress.close()
    return sorted(failures, key=lambda entry: entry["index"])


def _failure(index: int, record: dict[str, Any], exc: RecordFailed) -> dict[str, Any]:
    return {"index": index, "id": record.get("id"), "field": exc.field_name, "reason": exc.reason}


# --------------------------------------------------------------------------- CLI


@dataclass
class TranslateArgs:
    input: str
    output: str
    settings: TranslateSettings


def _number_arg(name: str) -> Callable[[str], Any]:
    flag, bounds = NUMBER_FLAGS[name]
    return arg(flag, **bounds)


def parse_args(argv: Sequence[str] | None = None) -> TranslateArgs:
    defaults = TranslateSettings()
    parser = argparse.ArgumentParser(prog="python -m train.translate", description=__doc__.split("\n")[0])
    parser.add_argument("input", metavar="IN", help="prompt/response JSONL in English")
    parser.add_argument("output", metavar="OUT", help="translated JSONL (written in input order)")
    parser.add_argument("--translator", choices=TRANSLATORS, default=defaults.translator)
    parser.add_argument(
        "--concurrency",
        type=_number_arg("concurrency"),
        default=defaults.concurrency,
        help="requests in flight",
    )
    parser.add_argument(
        "--cache", dest="cache_dir", default=defaults.cache_dir, help="cache folder ('' disables)"
    )
    parser.add_argument("--failures", default=None, help=f"failures JSONL (default: OUT{FAILURES_SUFFIX})")
    parser.add_argument("--url", default=defaults.url, help="Google Translate mobile endpoint")
    parser.add_argument("--source-lang", default=defaults.source_lang, help="code or name, or auto")
    parser.add_argument("--target-lang", default=defaults.target_lang, help="code or name")
    parser.add_argument(
        "--fields", nargs="+", default=list(defaults.fields), help="record fields to translate"
    )
    parser.add_argument(
        "--max-chars", type=_number_arg("max_chars"), default=defaults.max_chars, help="request size limit"
    )
    parser.add_argument(
        "--timeout",
        dest="timeout_s",
        type=_number_arg("timeout_s"),
        default=defaults.timeout_s,
        help="seconds",
    )
    attempts = parser.add_mutually_exclusive_group()
    attempts.add_argument(
        "--max-attempts",
        type=_number_arg("max_attempts"),
        default=defaults.max_attempts,
        help="requests per text, the first included",
    )
    attempts.add_argument(
        "--retries",
        type=arg("--retries", **RETRIES_BOUNDS),
        default=None,
        help="retries after the first request (--max-attempts minus one)",
    )
    parser.add_argument(
        "--backoff",
        dest="backoff_s",
        type=_number_arg("backoff_s"),
        default=defaults.backoff_s,
        help="first delay (s)",
    )
    parser.add_argument(
        "--backoff-max",
        dest="backoff_max_s",
        type=_number_arg("backoff_max_s"),
        default=defaults.backoff_max_s,
    )
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    values = vars(parser.parse_args(argv))
    source, output = values.pop("input"), values.pop("output")
    retries = values.pop("retries")
    if retries is not None:
        values["max_attempts"] = retries + 1
    values["fields"] = tuple(values["fields"])
    return TranslateArgs(source, output, TranslateSettings(**values))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    journal = f"{args.output}{JOURNAL_SUFFIX}"
    try:
        stats = translate_file(args.input, args.output, args.settings)
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: finished records are kept in {journal}; run the same command to resume",
            file=sys.stderr,
        )
        return 130
    print(stats.summary())
    if stats.failed:
        failures = args.settings.failures or f"{args.output}{FAILURES_SUFFIX}"
        kept = (
            f"{args.output} holds the other {stats.written}"
            if stats.written
            else f"{args.output} not written"
        )
        print(
            f"{stats.failed} record(s) failed (see {failures}); {kept}. "
            "Run the same command again to retry only the failed ones.",
            file=sys.stderr,
        )
        return 1
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
