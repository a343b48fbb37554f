"""The OpenAI-compatible chat client that the judge and ``openai:<model>`` answerers share.

Two layers of retries, both deliberate: the ``openai`` client's own (``max_retries``, quick, honours
Retry-After) and ours on top (``retries`` with doubling ``backoff``) for rate limits and outages that last
longer. A 200 that is not a chat completion (an HTML page, a cut or non-JSON body, no choices) is retried
the same way: proxies and overloaded servers send those for a while. When the retries are spent the caller
gets :class:`JudgeUnavailableError` and stops cleanly. The API key never leaves this module in a message:
every error text is scrubbed of it. :func:`normalise_endpoint` gives the one spelling of a base URL that
caches key their entries by, so verdicts from one server are never taken for another's.

The output limit has two names. OpenAI's newer models (the o-series reasoning models and the GPT-5 family)
refuse ``max_tokens`` with HTTP 400 and want ``max_completion_tokens``; vLLM, TGI and llama.cpp servers know
``max_tokens`` (some know only it). So the limit is sent as ``max_tokens`` unless the model's name belongs
to a family known to need the new name (:func:`needs_max_completion_tokens`), and a 400 saying that
``max_tokens`` is not supported switches that model to ``max_completion_tokens`` (one immediate resend,
remembered for the client's life). Nothing ever switches the other way, so a server that knows only
``max_tokens`` keeps getting it.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from vichat import checks
from vichat.errors import SettingsError, ViChatError

KEY_ENV = "OPENAI_API_KEY"
BASE_URL_ENV = "OPENAI_BASE_URL"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
RETRYABLE_STATUS = frozenset({408, 409, 429})  # and every 5xx
PER_REQUEST_STATUS = frozenset({400, 413, 422})  # this request is bad; the others may be fine
# Model names (after any "provider/" prefix) that refuse max_tokens: o1, o1-mini, o3, o3-pro, o4-mini, gpt-5,
# gpt-5-mini, gpt-5.1, ... and later generations. gpt-4o and gpt-4.1 still accept max_tokens.
_COMPLETION_TOKENS_MODELS = re.compile(r"^(?:o[1-9]\d*|gpt-(?:[5-9]|\d{2,}))(?:$|[-.:_ ])", re.IGNORECASE)


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


class _Malformed(Exception):
    """A 200 whose body is not a usable chat completion; retried like an outage."""


def normalise_endpoint(url: str) -> str:
    """The one spelling of a base URL: scheme and host lower-cased, default port, credentials, query and
    trailing slashes dropped (``HTTP://User:pw@Host:80/v1/`` -> ``http://host/v1``). Verdicts are cached
    under it, so it must name the server, and never hold a secret."""
    text = (url or "").strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        parts, port = None, None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise SettingsError(
            f"--base-url must be an http(s) URL such as {DEFAULT_BASE_URL} (got {text[:200]!r})"
        )
    scheme, host = parts.scheme.lower(), parts.hostname.lower()
    if ":" in host:  # IPv6
        host = f"[{host}]"
    default_port = {"http": 80, "https": 443}[scheme]
    netloc = host if port in (None, default_port) else f"{host}:{port}"
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}"


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

    @property
    def normalised_endpoint(self) -> str:
        """:func:`normalise_endpoint` of :attr:`endpoint` (a SettingsError when it is not an http(s) URL)."""
        return normalise_endpoint(self.endpoint)

    def validate(self) -> ClientConfig:
        """Check every number (a SettingsError naming the flag) and the URL; return self."""
        self.timeout = checks.number("--timeout", self.timeout, above=0, maximum=86400)
        self.max_retries = checks.number(
            "--max-retries", self.max_retries, minimum=0, maximum=100, integer=True
        )
        self.retries = checks.number("--retries", self.retries, minimum=0, maximum=100, integer=True)
        self.backoff = checks.number("--backoff", self.backoff, minimum=0, maximum=3600)
        self.max_backoff = checks.number("max_backoff", self.max_backoff, minimum=0, maximum=3600)
        self.normalised_endpoint  # noqa: B018  (raises on a bad URL)
        return self

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


def needs_max_completion_tokens(model: str) -> bool:
    """Whether ``model`` is in a family known to refuse ``max_tokens`` (o1/o3/o4..., gpt-5...)."""
    name = (model or "").strip().rsplit("/", 1)[-1]
    return bool(_COMPLETION_TOKENS_MODELS.match(name))


def _refuses_max_tokens(error) -> bool:
    """Whether an HTTP 400 says ``max_tokens`` is not supported (use ``max_completion_tokens``): OpenAI names
    it in ``param``; other gateways only in the message."""
    if _status(error) != 400:
        return False
    body = getattr(error, "body", None)
    message = str(body.get("message", "")) if isinstance(body, dict) else ""
    message = (message or str(getattr(error, "message", "") or "")).lower()
    if getattr(error, "param", None) == "max_tokens":
        return "max_completion_tokens" in message or "unsupported" in (getattr(error, "code", "") or "")
    return "max_tokens" in message.replace("max_completion_tokens", "") and "max_completion_tokens" in message


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
    if isinstance(error, _Malformed):
        return str(error)
    status = _status(error)
    if status == 429:
        return "rate limit (HTTP 429)"
    if status is not None:
        return f"HTTP {status}"
    if "Timeout" in type(error).__name__:
        return "timeout"
    cause = error.__cause__ or error.__context__
    if cause is not None and type(cause).__name__ == "TooManyRedirects":
        return "a redirect loop (too many redirects)"
    return "connection error"


def _kind_of_body(text: str) -> str:
    head = text.lstrip()[:200].lower()
    if head.startswith(("<!doctype", "<html", "<")):
        return "an HTML page"
    return "a body that is not JSON, or is cut off"


class ChatClient:
    """``openai.OpenAI`` configured from a :class:`ClientConfig`, with our backoff and key scrubbing."""

    def __init__(self, config: ClientConfig):
        import openai

        self.config = config.validate()
        key = config.key()
        self._secrets = (key,)
        self.endpoint = self.scrub(config.normalised_endpoint)  # what verdicts are keyed by, and messages say
        self._openai = openai
        self._lock = threading.Lock()
        self._completion_tokens_models: set[str] = set()  # refused max_tokens once: asked with the new name
        self._client = openai.OpenAI(
            api_key=key, base_url=config.endpoint, timeout=config.timeout, max_retries=config.max_retries
        )

    def __repr__(self) -> str:
        return f"ChatClient({self.config!r})"

    def scrub(self, text: str) -> str:
        return scrub(text, self._secrets)

    def limit_name(self, model: str) -> str:
        """The name this client sends ``model``'s output limit under: ``max_completion_tokens`` for the known
        families and for models whose server refused ``max_tokens`` before; else ``max_tokens``."""
        with self._lock:
            known = model in self._completion_tokens_models
        return "max_completion_tokens" if known or needs_max_completion_tokens(model) else "max_tokens"

    def _create(self, model: str, messages: list[dict], options: dict, max_tokens: int | None):
        """One request; when the server refuses ``max_tokens`` for this model, remember it and resend once
        at once with ``max_completion_tokens`` (never the reverse)."""
        limit = {} if max_tokens is None else {self.limit_name(model): max_tokens}
        try:
            return self._client.chat.completions.create(model=model, messages=messages, **options, **limit)
        except self._openai.BadRequestError as e:
            if "max_tokens" not in limit or not _refuses_max_tokens(e):
                raise
            with self._lock:
                self._completion_tokens_models.add(model)
        limit = {"max_completion_tokens": max_tokens}
        return self._client.chat.completions.create(model=model, messages=messages, **options, **limit)

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
        options = {k: v for k, v in (("temperature", temperature), ("seed", seed)) if v is not None}
        last: Exception | None = None
        for attempt in range(cfg.retries + 1):
            wait = None
            try:
                response = self._create(model, messages, options, max_tokens)
                return self._completion(response)
            except openai.APIStatusError as e:
                status = e.status_code
                if status not in RETRYABLE_STATUS and status < 500:
                    message = self.scrub(str(getattr(e, "message", "") or e))[:300]
                    raise JudgeRequestError(
                        f"{self.endpoint} refused the request (HTTP {status}): {message}",
                        fatal=status not in PER_REQUEST_STATUS,
                    ) from None
                last, wait = e, _retry_after(e)
            except (openai.APITimeoutError, openai.APIConnectionError) as e:
                last = e
            except _Malformed as e:
                last = e
            except (openai.APIError, ValueError, RecursionError) as e:  # a 200 whose body is not JSON
                document = getattr(e, "doc", "")
                kind = _kind_of_body(document if isinstance(document, str) else "")
                last = _Malformed(f"{kind} instead of a chat completion")
            if attempt == cfg.retries:
                break
            delay = min(cfg.max_backoff, cfg.backoff * 2**attempt) * random.uniform(0.8, 1.2)
            delay = max(delay, min(wait or 0.0, cfg.max_backoff))
            if stop is None:
                time.sleep(delay)
            elif stop.wait(delay):
                raise Stopped()
        if isinstance(last, _Malformed):
            tries = cfg.retries + 1
            flags = f"--retries {cfg.retries}"
        else:
            tries = (cfg.retries + 1) * (cfg.max_retries + 1)
            flags = f"--max-retries {cfg.max_retries}, --retries {cfg.retries}, --timeout {cfg.timeout:g}s"
        described = f"{self.endpoint} kept failing with {_describe(last)} after {tries} attempts ({flags})"
        raise JudgeUnavailableError(self.scrub(described))

    def _completion(self, response) -> Completion:
        """The text and usage of a chat completion; :class:`_Malformed` when the 200 is something else."""
        if isinstance(response, str | bytes):
            text = response.decode("utf-8", "replace") if isinstance(response, bytes) else response
            raise _Malformed(f"{_kind_of_body(text)} instead of a chat completion")
        choices = getattr(response, "choices", None)
        if not isinstance(choices, list):
            raise _Malformed("a response that is not a chat completion")
        if not choices:
            raise _Malformed("a chat completion with no choices")
        message = getattr(choices[0], "message", None)
        content = getattr(message, "content", None)
        if message is None or not (content is None or isinstance(content, str)):
            raise _Malformed("a chat completion with no message")
        usage = getattr(response, "usage", None)

        def count(name: str) -> int:
            value = getattr(usage, name, 0)
            return value if isinstance(value, int) and 0 <= value < 10**12 else 0

        return Completion(
            text=self.scrub(content or ""),
            prompt_tokens=count("prompt_tokens"),
            completion_tokens=count("completion_tokens"),
        )
