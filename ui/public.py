"""Public mode: what a visitor of a shared app (a Hugging Face Space, or ``python app.py --public``) may do.

A Space has no login and no quotas, so the app itself must hold the line. In public mode:

- training (a CPU-heavy subprocess) is off unless the owner sets ``VICHAT_TRAIN_SECRET`` and the visitor types
  it in;
- the judge endpoint is one of a configured list (``VICHAT_JUDGE_ENDPOINTS``, default the official OpenAI
  URL): a free-text base URL would let a visitor make the server POST to any host (a blind SSRF);
- the Datasets tokenizer is whitespace or one of the registry's bases: no hub downloads of arbitrary ids and
  no probing of local paths through error messages;
- uploads are bounded in bytes and rows and deleted when the session ends;
- each session has a rate limit on generations and sees only its own jobs.

Outside public mode a local user may point the judge anywhere and load any tokenizer folder, but a path that
is not a tokenizer folder still gets one message whether it exists or not.
"""

from __future__ import annotations

import collections
import hmac
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from vichat.checks import positive_int
from vichat.errors import SettingsError
from vichat.registry import Registry

log = logging.getLogger(__name__)

SPACE_ENV = "SPACE_ID"
TRAIN_SECRET_ENV = "VICHAT_TRAIN_SECRET"
JUDGE_ENDPOINTS_ENV = "VICHAT_JUDGE_ENDPOINTS"
RATE_ENV = "VICHAT_GENERATIONS_PER_MINUTE"
OFFICIAL_JUDGE = "https://api.openai.com/v1"
MB = 1024 * 1024
LOCAL_UPLOAD_BYTES = 50 * MB
PUBLIC_UPLOAD_BYTES = 10 * MB
PUBLIC_UPLOAD_ROWS = 20_000
PUBLIC_GENERATIONS_PER_MINUTE = 12
WHITESPACE = "whitespace"
BASE_TOKENIZER = "tokenizer of "
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})?$")


class PublicModeRefusal(SettingsError):
    """A visitor asked for something the public app does not allow; the message says what is allowed."""


def normalise_url(url: str) -> str:
    """One spelling of an http(s) base URL (the judge cache's, eval.client.normalise_endpoint, when present)."""
    try:
        from eval.client import normalise_endpoint
    except ImportError:
        return _check_http_url((url or "").strip().rstrip("/"))
    try:
        return normalise_endpoint(url)
    except SettingsError:
        raise SettingsError(
            f"the judge endpoint must be an http(s) URL with a host, like {OFFICIAL_JUDGE}; got {str(url)[:200]!r}"
        ) from None


def _endpoints(text: str | None) -> tuple[str, ...]:
    found = [normalise_url(u) for u in (text or "").split(",") if u.strip()]
    return tuple(dict.fromkeys(found)) or (normalise_url(OFFICIAL_JUDGE),)


def _check_http_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        ok = False
    if not ok:
        raise SettingsError(
            f"the judge endpoint must be an http(s) URL with a host, like {OFFICIAL_JUDGE}; got {url[:200]!r}"
        )
    return url


@dataclass(frozen=True)
class Policy:
    """What this app allows; ``Policy()`` is a local app, ``Policy.from_env(...)`` reads the environment."""

    public: bool = False
    train_secret: str | None = field(default=None, repr=False)
    judge_endpoints: tuple[str, ...] = (OFFICIAL_JUDGE,)
    max_upload_bytes: int = LOCAL_UPLOAD_BYTES
    max_upload_rows: int | None = None
    generations_per_minute: int | None = None

    @classmethod
    def from_env(cls, public: bool = False, environ: Mapping[str, str] | None = None) -> Policy:
        env = os.environ if environ is None else environ
        if not (public or env.get(SPACE_ENV)):
            return cls()

        rate = env.get(RATE_ENV)
        return cls(
            public=True,
            train_secret=(env.get(TRAIN_SECRET_ENV) or "").strip() or None,
            judge_endpoints=_endpoints(env.get(JUDGE_ENDPOINTS_ENV)),
            max_upload_bytes=PUBLIC_UPLOAD_BYTES,
            max_upload_rows=PUBLIC_UPLOAD_ROWS,
            generations_per_minute=positive_int(RATE_ENV, rate) if rate else PUBLIC_GENERATIONS_PER_MINUTE,
        )

    # ------------------------------------------------------------------------------------------ train

    @property
    def train_allowed(self) -> bool:
        """Whether the Train tab may run at all (locally always; in public mode only with an owner's secret)."""
        return not self.public or self.train_secret is not None

    @property
    def train_needs_secret(self) -> bool:
        return self.public and self.train_secret is not None

    def check_train(self, entered: str | None) -> None:
        if not self.public:
            return
        if self.train_secret is None:
            raise PublicModeRefusal(
                "training is off on this public app; run the app on your own machine to train "
                f"(or, as its owner, set {TRAIN_SECRET_ENV})"
            )
        if not hmac.compare_digest((entered or "").strip().encode(), self.train_secret.encode()):
            raise PublicModeRefusal("training on this public app needs the owner's secret: enter it above")

    # ------------------------------------------------------------------------------------------ judge

    def judge_endpoint(self, url: str | None) -> str | None:
        """The endpoint to call (None: the client's default); a refusal for one a visitor may not use."""
        text = (url or "").strip()
        if self.public:
            if not text:
                return self.judge_endpoints[0]
            try:
                url = normalise_url(text)
            except SettingsError:
                url = None
            if url not in self.judge_endpoints:
                raise PublicModeRefusal(
                    "the judge endpoint is fixed on this public app: choose one of "
                    f"{', '.join(self.judge_endpoints)}"
                )
            return url
        return normalise_url(text) if text else None

    # -------------------------------------------------------------------------------------- tokenizer

    def tokenizer_choices(self, registry: Registry) -> list[str]:
        return [WHITESPACE, *(BASE_TOKENIZER + k for k in registry.bases)]

    def check_tokenizer(self, name: str | None, registry: Registry) -> str:
        """``name`` cleaned: whitespace, ``tokenizer of BASE``, or (not public) a tokenizer folder / hub id."""
        name = (name or WHITESPACE).strip() or WHITESPACE
        if name == WHITESPACE:
            return name
        if name.startswith(BASE_TOKENIZER):
            key = name.removeprefix(BASE_TOKENIZER)
            if key in registry.bases:
                return name
            raise SettingsError(f"{key!r} is not a base of this app; known: {', '.join(registry.bases)}")
        if self.public:
            raise PublicModeRefusal(
                "on this public app tokens are counted with whitespace or a base's tokenizer "
                f"({', '.join(self.tokenizer_choices(registry))})"
            )
        return check_tokenizer_source(name)


def check_tokenizer_source(name: str) -> str:
    """A local tokenizer folder or a hub id; one message for any other path, whether it exists or not."""
    path = Path(name).expanduser()
    looks_like_path = name.startswith(("/", ".", "~", "\\")) or ".." in name or "\\" in name
    try:
        exists = path.exists()
    except (OSError, ValueError):  # a name too long, a NUL byte: not a usable path either
        exists = False
    if looks_like_path or exists:
        try:
            is_tokenizer = path.is_dir() and any((path / f).is_file() for f in TOKENIZER_FILES)
        except (OSError, ValueError):
            is_tokenizer = False
        if not is_tokenizer:
            raise SettingsError(
                f"{name!r} is not a tokenizer folder (one holding {' or '.join(TOKENIZER_FILES[:2])}); give "
                f"such a folder, a hub id like owner/name, {WHITESPACE!r} or a base's tokenizer"
            )
        return str(path)
    if not HUB_ID.match(name):
        raise SettingsError(
            f"{name!r} is neither a tokenizer folder nor a hub id like owner/name; "
            f"use {WHITESPACE!r} or a base's tokenizer"
        )
    return name


# ------------------------------------------------------------------------------------------ rate limit


class RateLimiter:
    """At most ``limit`` units of work per ``window_s`` seconds per session (a sliding window); None: no limit."""

    def __init__(
        self, limit: int | None, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit, self.window_s, self.clock = limit, window_s, clock
        self._used: dict[str, collections.deque] = {}
        self._lock = threading.Lock()

    def take(self, session: str | None, cost: int = 1, what: str = "generations") -> None:
        """Count ``cost`` units for the session, or raise PublicModeRefusal saying when to try again."""
        if self.limit is None:
            return
        cost = max(1, min(int(cost), self.limit))  # one run of any size is always possible in a fresh window
        now = self.clock()
        with self._lock:
            used = self._used.setdefault(session or "-", collections.deque())
            while used and used[0] <= now - self.window_s:
                used.popleft()
            if len(used) + cost > self.limit:
                wait = max(1, round(used[len(used) + cost - self.limit - 1] + self.window_s - now))
                raise PublicModeRefusal(
                    f"rate limit: this public app allows {self.limit} {what} a minute per session; "
                    f"try again in {wait} s"
                )
            used.extend([now] * cost)

    def close_session(self, session: str | None) -> None:
        with self._lock:
            self._used.pop(session or "-", None)


# -------------------------------------------------------------------------------------------- uploads


def upload_folder() -> Path:
    """Where Gradio keeps uploads (its cache); only files in there are ever deleted by SessionUploads."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio").resolve()


class SessionUploads:
    """The uploads each session made, deleted when the session ends (and no other session holds the file).

    Gradio stores an upload under a folder named by its content hash, so two sessions that upload the same
    bytes share one file: it goes only when the last of them closes. A path outside ``root`` (a caller of the
    API naming some other file) is never deleted.
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root).resolve() if root is not None else None
        self._held: dict[str, set[Path]] = {}
        self._lock = threading.Lock()

    def _root(self) -> Path:
        return self.root if self.root is not None else upload_folder()

    def track(self, session: str | None, path: str | os.PathLike | None) -> None:
        if not path:
            return
        try:
            resolved = Path(path).resolve()
        except (OSError, ValueError):
            return
        if not resolved.is_relative_to(self._root()):
            return
        with self._lock:
            self._held.setdefault(session or "-", set()).add(resolved)

    def close_session(self, session: str | None) -> list[Path]:
        """Delete the session's uploads that no other session holds; the paths deleted."""
        with self._lock:
            mine = self._held.pop(session or "-", set())
            still_held = set().union(*self._held.values()) if self._held else set()
            doomed = sorted(mine - still_held)
        deleted = []
        for path in doomed:
            try:
                path.unlink(missing_ok=True)
                deleted.append(path)
                if path.parent != self._root() and not any(path.parent.iterdir()):
                    path.parent.rmdir()  # Gradio's per-upload hash folder, now empty
            except OSError as e:
                log.warning("could not delete upload %s: %s", path, e)
        return deleted


def check_upload_size(path: Path, policy: Policy) -> None:
    """Refuse an upload over the byte or row bound, before reading it."""
    size = path.stat().st_size
    if size > policy.max_upload_bytes:
        raise SettingsError(
            f"{path.name} is {size / MB:.1f} MB; uploads here are limited to {policy.max_upload_bytes / MB:g} MB: "
            "upload a smaller sample"
        )
    if policy.max_upload_rows is not None:
        with path.open("rb") as f:
            rows = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        if rows > policy.max_upload_rows:
            raise SettingsError(
                f"{path.name} has {rows:,} lines; uploads here are limited to {policy.max_upload_rows:,}: "
                "upload a smaller sample"
            )


# ---------------------------------------------------------------------------------------- served files


def served_folders(runs: Path) -> list[str]:
    """The folders whose files the app hands out for download (launch's ``allowed_paths``): the judge's."""
    return [str((Path(runs) / "eval").resolve())]


def check_servable(folder: Path, allowed: list[str] | None = None) -> None:
    """Refuse, before any work or paid call, an output folder the app could not write or hand out.

    Gradio serves returned files from ``allowed_paths``, the working directory and the temp directory only.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".vichat-write-check-"):
            pass
    except OSError as e:
        raise SettingsError(
            f"the output folder {folder} is not writable ({e.strerror or e}); start the app with --runs "
            "pointing at a writable folder"
        ) from None
    resolved = folder.resolve()
    roots = [*(allowed or []), os.getcwd(), tempfile.gettempdir()]
    if not any(resolved.is_relative_to(Path(r).resolve()) for r in roots):
        raise SettingsError(
            f"the output folder {folder} is outside the folders this app may serve for download "
            f"({', '.join(roots)}); start the app with --runs inside one of them"
        )


# ---------------------------------------------------------------------------------------------- guard


class Guard:
    """The policy and the per-session state it needs (rate windows, uploads, jobs), one per app.

    Tabs register what to forget or delete when a browser session ends; app.py calls :meth:`close_session`
    from ``demo.unload``.
    """

    def __init__(self, policy: Policy | None = None, uploads_root: Path | None = None) -> None:
        self.policy = policy or Policy()
        self.limiter = RateLimiter(self.policy.generations_per_minute)
        self.uploads = SessionUploads(uploads_root)
        self._closers: list[Callable[[str | None], object]] = [
            self.limiter.close_session,
            self.uploads.close_session,
        ]

    @property
    def public(self) -> bool:
        return self.policy.public

    def on_close(self, fn: Callable[[str | None], object]) -> None:
        self._closers.append(fn)

    def close_session(self, session: str | None) -> None:
        for fn in self._closers:
            try:
                fn(session)
            except Exception as e:  # one cleanup failing must not skip the others
                log.warning("session cleanup %s failed: %s", getattr(fn, "__qualname__", fn), e)

    def banner(self) -> str:
        """One line for the page header saying what public mode changes (empty for a local app)."""
        if not self.public:
            return ""
        train = "training needs the owner's secret" if self.policy.train_allowed else "training is off"
        rate = self.policy.generations_per_minute
        return (
            f"**Public mode**: {train}; judge endpoint {', '.join(self.policy.judge_endpoints)}; uploads up to "
            f"{self.policy.max_upload_bytes / MB:g} MB, deleted when you leave; {rate} generations a minute."
        )
