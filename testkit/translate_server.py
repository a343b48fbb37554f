"""A stand-in for Google Translate's mobile page, served on 127.0.0.1 for tests and benchmarks.

deep-translator's GoogleTranslator sends ``GET <base>/m?tl=vi&sl=en&q=<text>`` and reads the
text of ``<div class="result-container">`` from the HTML that comes back. This server answers
in that shape, so ``train.translate`` runs against it unchanged (``--url``), and it records
every request, so tests can count what was sent. Behaviours a test needs are plain settings:
a latency per request, a script of answers for the first requests (an HTTP status such as
``429`` or ``500``, or one of the misbehaviours below), texts that always get such an answer,
a ``Retry-After`` header, and a length limit like the real service's.

Misbehaviours (the garbage a real service or a proxy in front of it can send): ``HANG`` (answer
late: a client timeout), ``TRUNCATE`` (a body cut short of its Content-Length, then the
connection closed), ``REDIRECT_LOOP`` (a 302 back to itself), ``GARBAGE`` (200 with bytes that
are not a page), ``NO_ELEMENT`` (200 with an HTML page that holds no translation) and ``EMPTY``
(200 with an empty translation).

The stand-in "translation" upper-cases letters: chunking never changes the result, and text
that was kept out of translation (code) stays visibly lower-case.

    python -m testkit.translate_server --port 8765 --latency 0.1
    python -m train.translate in.jsonl out.jsonl --url http://127.0.0.1:8765/m
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from testkit.http import LocalServer, QuietHandler, stand_in_parser
from vichat.cli import run

HANG = "hang"
"""A scripted answer that sleeps ``hang_s`` before answering: a client timeout."""
TRUNCATE = "truncate"
"""200 announcing a longer body than it sends, then the connection is closed."""
REDIRECT_LOOP = "redirect-loop"
"""302 to the same address, forever."""
GARBAGE = "garbage"
"""200 with bytes that are neither HTML nor UTF-8."""
NO_ELEMENT = "no-element"
"""200 with an HTML page (a login or captcha page) that has no translation element."""
EMPTY = "empty"
"""200 with a translation element that holds nothing."""
MISBEHAVIOURS = (HANG, TRUNCATE, REDIRECT_LOOP, GARBAGE, NO_ELEMENT, EMPTY)


def upper_case(text: str) -> str:
    """The default stand-in translation."""
    return text.upper()


@dataclass
class ServerSettings:
    latency_s: float = 0.0
    translate: Callable[[str], str] = upper_case
    script: list[int | str] = field(default_factory=list)
    """Answers for the first requests, in arrival order: an HTTP status or one of ``MISBEHAVIOURS``."""
    fail_when: dict[str, int | str] = field(default_factory=dict)
    """Texts containing a key always get its answer (a status or one of ``MISBEHAVIOURS``)."""
    retry_after_s: float | None = None
    """Sent as ``Retry-After`` with every 429 and 503 answer."""
    max_chars: int = 5000
    """Like the real service: a text of this many characters or more is refused (HTTP 400)."""
    hang_s: float = 2.0
    element_class: str = "result-container"
    """The class of the ``div`` holding the translation (Google has used ``t0`` and ``result-container``)."""


@dataclass
class RequestLog:
    """What the server received; shared by its handler threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    texts: list[str] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    def add(self, text: str) -> int:
        with self.lock:
            self.texts.append(text)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return len(self.texts)

    def done(self) -> None:
        with self.lock:
            self.in_flight -= 1


class FakeTranslateServer(LocalServer):
    """Start with ``with FakeTranslateServer(...) as server:``; point a translator at ``server.url``."""

    url_path = "/m"
    thread_name = "fake-translate"

    def __init__(self, settings: ServerSettings | None = None, port: int = 0) -> None:
        self.settings = settings or ServerSettings()
        self.log = RequestLog()
        super().__init__(_handler_for(self), port=port)

    @property
    def request_count(self) -> int:
        with self.log.lock:
            return len(self.log.texts)

    @property
    def texts(self) -> list[str]:
        """Every text received, in arrival order (a copy)."""
        with self.log.lock:
            return list(self.log.texts)

    @property
    def max_in_flight(self) -> int:
        """The most requests the server was answering at the same time."""
        with self.log.lock:
            return self.log.max_in_flight

    def reset(self) -> None:
        with self.log.lock:
            self.log.texts.clear()
            self.log.max_in_flight = self.log.in_flight

    def answer(self, text: str) -> Answer:
        """Decide the answer to one request."""
        number = self.log.add(text)
        try:
            return self._answer(text, number)
        finally:
            self.log.done()

    def _answer(self, text: str, number: int) -> Answer:
        settings = self.settings
        planned: int | str | None = None
        if number <= len(settings.script):
            planned = settings.script[number - 1]
        for marker, outcome in settings.fail_when.items():
            if marker in text:
                planned = outcome
        time.sleep(settings.latency_s)
        if planned == HANG:
            time.sleep(settings.hang_s)
        elif planned == TRUNCATE:
            return Answer(200, _result_page(settings.translate(text), settings.element_class), truncate=True)
        elif planned == REDIRECT_LOOP:
            return Answer(302, b"")  # the handler sends it back to the same address
        elif planned == GARBAGE:
            return Answer(200, bytes(range(256)) * 4, {"Content-Type": "application/octet-stream"})
        elif planned == NO_ELEMENT:
            return Answer(200, b"<!DOCTYPE html><html><body><form>Sign in</form></body></html>")
        elif planned == EMPTY:
            return Answer(200, _result_page("", settings.element_class))
        elif isinstance(planned, int) and planned != 200:
            headers = {}
            if planned in (429, 503) and settings.retry_after_s is not None:
                headers["Retry-After"] = f"{settings.retry_after_s:g}"
            return Answer(planned, f"<html><body>error {planned}</body></html>".encode(), headers)
        if len(text) >= settings.max_chars:
            return Answer(400, b"<html><body>text too long</body></html>")
        return Answer(200, _result_page(settings.translate(text), settings.element_class))


@dataclass
class Answer:
    """One HTTP answer: status, body, extra headers; ``truncate`` sends half the body, then hangs up."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    truncate: bool = False


def _result_page(translation: str, element_class: str) -> bytes:
    return (
        "<!DOCTYPE html><html><head><title>Google Translate</title></head><body>"
        f'<div class="{element_class}">{html.escape(translation)}</div></body></html>'
    ).encode()


def _handler_for(server: FakeTranslateServer) -> type[QuietHandler]:
    class Handler(QuietHandler):
        def do_GET(self) -> None:  # noqa: N802 - name required by BaseHTTPRequestHandler
            query = parse_qs(urlsplit(self.path).query, keep_blank_values=True)
            text = query.get("q", [""])[0]
            answer = server.answer(text)
            headers = {"Content-Type": "text/html; charset=utf-8", **answer.headers}
            if answer.status == 302:
                headers.setdefault("Location", self.path)
            headers["Content-Length"] = str(len(answer.body))
            if answer.truncate:
                headers["Connection"] = "close"
                self.close_connection = True
            self.send(
                answer.status,
                answer.body[: len(answer.body) // 2] if answer.truncate else answer.body,
                headers,
            )

    return Handler


def main(argv: Sequence[str] | None = None) -> int:
    args = stand_in_parser("testkit.translate_server", __doc__, port=8765).parse_args(argv)
    server = FakeTranslateServer(ServerSettings(latency_s=args.latency), port=args.port)
    return server.serve_until_ctrl_c("serving a stand-in translator at {url} (Ctrl+C to stop)")


if __name__ == "__main__":
    raise SystemExit(run(main))
