"""The OpenAI-compatible chat client that the judge and ``openai:<model>`` answerers share.

Two layers of retries, both deliberate: the ``openai`` client's own (``max_retries``, quick, honours
Retry-After) and ours on top (``retries`` with doubling ``backoff``) for rate limits and outages that last
longer. When both are spent the caller gets :class:`JudgeUnavailableError` and stops cleanly. The API key
never leaves this module in a message: every error text is scrubbed of it.
"""

from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass, field

from vichat.errors import ViChatError

KEY_ENV = "OPENAI_API_KEY"
BASE_URL_ENV = "OPENAI_BASE_URL"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
RETRYABLE_STATUS = frozenset({408, 409, 429})  # and every 5xx
PER_REQUEST_STATUS = frozenset({400, 413, 422})  # this request is bad; the others may be fine


class MissingApiKeyError(ViChatError):
    def __init__(self) -> None:
        super().__init__(
            f"{KEY_ENV} is not set: export {KEY_ENV}=... (or pass --api-key) to call the OpenAI-compatible "
            "endpoint; python -m eval.judge --dry-run works without a key"
        )


class JudgeUnavailableError(ViChatError):
    """The endpoint kept failing (rate limit, 5xx, timeouts) after every retry; the run stops here."""


class JudgeRequestError(ViChatError):
    """The endpoint refused a request. ``fatal``: it will refuse all of them (bad key, unknown model)."""

    def __init__(self, message: str, fatal: bool):
        super().__init__(message)
        self.fatal = fatal


class Stopped(Exception):
    """Another worker stopped the run while this one waited to retry."""


@dataclass
class ClientConfig:
    """Where the endpoint is and how hard to try. CLI flags; the key and URL also come from the environment."""

    base_url: str | None = field(
        default=None, metadata={"help": f"endpoint (default ${BASE_URL_ENV}, else OpenAI)"}
    )
    api_key: str | None = field(
        default=None, metadata={"help": f"API key (default ${KEY_ENV}; prefer the env)"}
    )
    timeout: float = field(default=120.0, metadata={"help": "seconds per request before it counts as failed"})
    max_retries: int = field(default=2, metadata={"help": "the openai client's own quick retries"})
    retries: int = field(default=4, metadata={"help": "our retries on top, for long rate limits and outages"})
    backoff: float = field(
        default=2.0, metadata={"help": "seconds before our first retry; doubles each time"}
    )
    max_backoff: float = 60.0

    def __repr__(self) -> str:  # never print the key
        return f"ClientConfig(base_url={self.endpoint!r}, timeout={self.timeout}, retries={self.retries})"

    @property
    def endpoint(self) -> str:
        return self.base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL

    def key(self) -> str:
        key = self.api_key or os.environ.get(KEY_ENV, "")
        if not key.strip():
            raise MissingApiKeyError()
        return key.strip()


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


def scrub(text: str, secrets) -> str:
    """``text`` with every secret (and any 8+ character tail of one) replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
            if len(secret) >= 16:  # endpoints often echo a key's last characters
                text = text.replace(secret[-8:], "***")
    return text


def _status(error) -> int | None:
    return getattr(error, "status_code", None)


def _retry_after(error) -> float | None:
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None) or {}
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        try:
            return float(headers.get(name)) / divisor
        except (TypeError, ValueError):
            continue
    return None


def _describe(error) -> str:
    status = _status(error)
    if status == 429:
        return "rate limit (HTTP 429)"
    if status is not None:
        return f"HTTP {status}"
    return "timeout" if "Timeout" in type(error).__name__ else "connection error"


class ChatClient:
    """``openai.OpenAI`` configured from a :class:`ClientConfig`, with our backoff and key scrubbing."""

    def __init__(self, config: ClientConfig):
        import openai

        self.config = config
        key = config.key()
        self._secrets = (key,)
        self._openai = openai
        self._client = openai.OpenAI(
            api_key=key, base_url=config.endpoint, timeout=config.timeout, max_retries=config.max_retries
        )

    def __repr__(self) -> str:
        return f"ChatClient({self.config!r})"

    def scrub(self, text: str) -> str:
        return scrub(text, self._secrets)

    def complete(
        self,
        model: str,
        messages: list[dict],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        seed: int | None = None,
        stop: threading.Event | None = None,
    ) -> Completion:
        """One chat completion, retried on 429/5xx/timeouts; raises JudgeUnavailableError when all fail."""
        openai, cfg = self._openai, self.config
        extra = {
            k: v
            for k, v in (("temperature", temperature), ("max_tokens", max_tokens), ("seed", seed))
            if v is not None
        }
        last: Exception | None = None
        for attempt in range(cfg.retries + 1):
            wait = None
            try:
                response = self._client.chat.completions.create(model=model, messages=messages, **extra)
            except openai.APIStatusError as e:
                status = e.status_code
                if status not in RETRYABLE_STATUS and status < 500:
                    message = self.scrub(str(getattr(e, "message", "") or e))[:300]
                    raise JudgeRequestError(
                        f"{cfg.endpoint} refused the request (HTTP {status}): {message}",
                        fatal=status not in PER_REQUEST_STATUS,
                    ) from None
                last, wait = e, _retry_after(e)
            except (openai.APITimeoutError, openai.APIConnectionError) as e:
                last = e
            except (openai.APIError, ValueError) as e:  # a 200 whose body is not a chat completion
                raise JudgeRequestError(
                    f"{cfg.endpoint} sent a response that is not a chat completion: {self.scrub(str(e))[:200]}",
                    fatal=False,
                ) from None
            else:
                return self._completion(response)
            if attempt == cfg.retries:
                break
            delay = min(cfg.max_backoff, cfg.backoff * 2**attempt) * random.uniform(0.8, 1.2)
            delay = max(delay, min(wait or 0.0, cfg.max_backoff))
            if stop is None:
                time.sleep(delay)
            elif stop.wait(delay):
                raise Stopped()
        tries = (cfg.retries + 1) * (cfg.max_retries + 1)
        raise JudgeUnavailableError(
            f"{cfg.endpoint} kept failing with {_describe(last)} after {tries} attempts "
            f"(--max-retries {cfg.max_retries}, --retries {cfg.retries}, --timeout {cfg.timeout:g}s)"
        )

    def _completion(self, response) -> Completion:
        choices = getattr(response, "choices", None)
        if not choices or not hasattr(choices[0], "message"):
            raise JudgeRequestError(f"{self.config.endpoint} sent a response with no message", fatal=False)
        usage = getattr(response, "usage", None)
        return Completion(
            text=self.scrub(choices[0].message.content or ""),
            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
        )
