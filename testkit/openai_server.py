"""A small OpenAI-compatible Chat Completions server on 127.0.0.1, scriptable, for tests and benchmarks.

    with FakeOpenAIServer(Behaviour(latency=0.2, script=["429", "ok"])) as server:
        client = openai.OpenAI(base_url=server.url, api_key="sk-test")

Each request takes the next action from ``script`` (then ``then`` forever):
``ok`` a verdict; ``429`` rate limited; ``500``/``503`` server error (both with ``retry-after-ms`` so the
client's own retries stay quick); ``hang`` no answer for ``hang_s`` seconds (a client timeout);
``garbage`` a verdict nobody can read scores from; ``badjson`` a 200 whose body is not JSON; ``401`` a
bad key, whose message echoes the key (as real endpoints partly do) to test scrubbing; ``400`` a bad request.

``refuse_max_tokens`` mimics OpenAI's newer models (o-series, GPT-5): a request carrying ``max_tokens`` gets
OpenAI's HTTP 400 ``unsupported_parameter`` answer, before any scripted action, and ``max_completion_tokens``
is accepted. ``only_max_tokens`` mimics a server that knows only ``max_tokens`` (older vLLM, llama.cpp
builds): a request carrying ``max_completion_tokens`` gets a 400. Either may be ``True`` (every model) or a
collection of model names.

Verdicts are deterministic: each answer's score is the ``[score=N]`` tag in it, else a hash of its text
(1..10). A message that is not a judge prompt gets an answer derived from its text. Run it by hand with
``python -m testkit.openai_server --port 8000 --latency 0.2`` and point ``--base-url`` at it.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from testkit.http import LocalServer, QuietHandler, stand_in_parser
from vichat.cli import run

ASSISTANT_2 = "Assistant 2's Answer"
_TAG = re.compile(r"\[score=(\d+(?:\.\d+)?)\]")
_JUDGE = re.compile(r"Assistant 1's Answer(?P<one>.*?)Assistant 2's Answer(?P<two>.*)", re.DOTALL)


@dataclass
class Behaviour:
    latency: float = 0.0
    script: list[str] = field(default_factory=list)
    then: str = "ok"
    retry_after_ms: int = 5
    hang_s: float = 3.0
    bias: float = 0.0  # added to Assistant 1's score (capped at 10): a judge with position bias
    refuse_max_tokens: bool | Collection[str] = False  # OpenAI's o-series / GPT-5: max_completion_tokens only
    only_max_tokens: bool | Collection[str] = False  # a server that knows only max_tokens


def _applies(setting: bool | Collection[str], model: str) -> bool:
    return setting if isinstance(setting, bool) else model in setting


MAX_TOKENS_REFUSED = {
    "message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
    "Use 'max_completion_tokens' instead.",
    "type": "invalid_request_error",
    "param": "max_tokens",
    "code": "unsupported_parameter",
}


def score_of(text: str) -> float:
    """The ``[score=N]`` tag in ``text``, else 1..10 from a hash of it."""
    tag = _TAG.search(text)
    if tag:
        return float(tag.group(1))
    return float(int(hashlib.sha256(text.strip().encode()).hexdigest(), 16) % 10 + 1)


def verdict_for(user_message: str, bias: float = 0.0) -> str:
    parts = _JUDGE.search(user_message)
    if parts is None:  # an ordinary question: answer it, deterministically
        return f"Trả lời mẫu ({hashlib.sha256(user_message.encode()).hexdigest()[:8]}): {user_message[:60]}"
    one = parts.group("one").split("###The End")[0]
    two = parts.group("two").split("###The End")[0]
    s1, s2 = min(10.0, score_of(one) + bias), score_of(two)
    return f"{s1:g} {s2:g}\nAssistant 1 scores {s1:g} and Assistant 2 scores {s2:g} for the reasons given."


class FakeOpenAIServer(LocalServer):
    """The server, in a daemon thread. ``requests`` keeps what each call sent (body and Authorization);
    ``max_active`` is the most requests it ever held at once."""

    url_path = "/v1"
    thread_name = "fake-openai"

    def __init__(self, behaviour: Behaviour | None = None, host: str = "127.0.0.1", port: int = 0):
        self.behaviour = behaviour or Behaviour()
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._script_pos = 0
        self.active = self.max_active = 0
        super().__init__(_handler_for(self), host, port)

    @property
    def calls(self) -> int:
        with self._lock:
            return len(self.requests)

    def script(self, *actions: str, then: str = "ok") -> None:
        """Replace the script: these actions for the next requests, then ``then`` for every later one."""
        with self._lock:
            self.behaviour.script, self.behaviour.then, self._script_pos = list(actions), then, 0

    def record(self, record: dict) -> None:
        """Keep a request that was answered without taking a scripted action."""
        with self._lock:
            self.requests.append(record)

    def next_action(self, record: dict) -> str:
        with self._lock:
            self.requests.append(record)
            if self._script_pos < len(self.behaviour.script):
                self._script_pos += 1
                return self.behaviour.script[self._script_pos - 1]
            return self.behaviour.then

    def enter(self) -> None:
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)

    def leave(self) -> None:
        with self._lock:
            self.active -= 1


def _handler_for(server: FakeOpenAIServer) -> type[QuietHandler]:
    class Handler(QuietHandler):
        def _send(self, status: int, body: bytes, headers: dict | None = None) -> None:
            json_body = {"Content-Type": "application/json", "Content-Length": str(len(body))}
            self.send(status, body, {**json_body, **(headers or {})})

        def _error(self, status: int, message: str, kind: str) -> None:
            body = json.dumps({"error": {"message": message, "type": kind, "code": None}}).encode()
            self._send(status, body, {"retry-after-ms": str(server.behaviour.retry_after_ms)})

        def do_POST(self) -> None:
            server.enter()
            try:
                self._post()
            finally:
                server.leave()

        def _post(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._error(404, f"no route {self.path}", "invalid_request_error")
                return
            try:
                body = json.loads(raw)
            except ValueError:
                self._error(400, "body is not JSON", "invalid_request_error")
                return
            auth = self.headers.get("Authorization", "")
            record = {"body": body, "authorization": auth, "time": time.monotonic()}
            fields = body if isinstance(body, dict) else {}
            model = str(fields.get("model", ""))
            if "max_tokens" in fields and _applies(server.behaviour.refuse_max_tokens, model):
                server.record(record)
                return self._send(400, json.dumps({"error": MAX_TOKENS_REFUSED}).encode())
            if "max_completion_tokens" in fields and _applies(server.behaviour.only_max_tokens, model):
                server.record(record)
                return self._error(
                    400,
                    "Unrecognized request argument supplied: max_completion_tokens",
                    "invalid_request_error",
                )
            action = server.next_action(record)
            time.sleep(server.behaviour.latency)
            if action == "hang":
                time.sleep(server.behaviour.hang_s)
            if action == "429":
                return self._error(429, "Rate limit reached for requests", "rate_limit_error")
            if action in ("500", "502", "503"):
                return self._error(int(action), "The server had an error", "server_error")
            if action == "401":
                key = auth.removeprefix("Bearer ")
                return self._error(401, f"Incorrect API key provided: {key}.", "invalid_request_error")
            if action == "400":
                return self._error(
                    400, "This model's maximum context length is exceeded", "invalid_request_error"
                )
            if action == "badjson":
                return self._send(200, b"<html>not json</html>")
            user = next(
                (m.get("content", "") for m in reversed(body.get("messages", [])) if m.get("role") == "user"),
                "",
            )
            text = (
                "Tôi không thể chấm điểm câu trả lời này."
                if action == "garbage"
                else verdict_for(user, server.behaviour.bias)
            )
            reply = {
                "id": f"chatcmpl-{len(server.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "fake"),
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                ],
                "usage": {
                    "prompt_tokens": len(json.dumps(body.get("messages", []))) // 4,
                    "completion_tokens": len(text) // 4,
                    "total_tokens": len(json.dumps(body.get("messages", []))) // 4 + len(text) // 4,
                },
            }
            self._send(200, json.dumps(reply, ensure_ascii=False).encode())

    return Handler


def main(argv: Sequence[str] | None = None) -> int:
    parser = stand_in_parser("testkit.openai_server", __doc__, port=8000)
    parser.add_argument("--script", default="", help="comma list of actions for the first requests")
    args = parser.parse_args(argv)
    behaviour = Behaviour(latency=args.latency, script=[a for a in args.script.split(",") if a])
    server = FakeOpenAIServer(behaviour, port=args.port)
    return server.serve_until_ctrl_c("serving the Chat Completions API on {url} (Ctrl-C stops)")


if __name__ == "__main__":
    raise SystemExit(run(main))
