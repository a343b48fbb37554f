"""The variant registry: names -> (base, adapter, template, backend), read from assets/models.yaml.

One :class:`Registry` owns every loaded model. The app's tabs, the CLIs and evaluation receive it; nothing
reaches for a global. Bases load lazily on first use; all variants of a base share one copy of its weights.

The variant file is checked whole when it is read: UTF-8 text (UTF-16 and stray bytes are named), valid YAML,
the expected shapes (a mapping of bases, a list of variants, each a mapping with text names) and only the keys
documented in assets/models.yaml; every problem is one :class:`ViChatError` naming the file, the variant and the
key. Numbers go through :mod:`vichat.checks`.

``api_key_env`` names the environment variable whose value is sent to an ``openai`` endpoint as its API key,
so a variant file could otherwise send any secret of the environment to any server. It must look like an API
key variable: upper-case letters, digits and ``_``, ending in ``_API_KEY``, ``_KEY`` or ``_TOKEN``; never a
credential of another service (``AWS_*``, ``GITHUB_*``/``GH_*``, ``GITLAB_*``, CI, package-index and Docker
tokens, anything with SECRET, PASSWORD or PRIVATE in it); and the Hugging Face hub token (``HF_TOKEN`` and its
aliases) only to Hugging Face hosts. The key's value is never logged or shown.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from vichat import checks, fast, generation, safety
from vichat.backends import Decoder, FastDecoder, ReferenceDecoder, RemoteDecoder, Request, interleave
from vichat.errors import UnknownVariantError, VariantUnavailableError, ViChatError
from vichat.fast.scheduler import MAX_BATCH, Scheduler, plan_batch
from vichat.generation import GenerationSettings, GenerationStats
from vichat.loading import (
    Availability,
    BaseSpec,
    LoadedBase,
    adapter_availability,
    adapter_folder,
    base_availability,
    load_base,
)
from vichat.omp import in_own_thread
from vichat.paths import MODELS_YAML
from vichat.prompts import Template, get_template, template_names

log = logging.getLogger(__name__)

BACKENDS = ("local", "openai")
TOP_KEYS = ("bases", "variants")
BASE_KEYS = ("source", "load_in_8bit", "description", "hub_id")  # hub_id: read by train.card
VARIANT_KEYS = ("name", "base", "template", "adapter", "backend", "description", "endpoint", "fast", "guard")
ENDPOINT_KEYS = ("base_url", "model", "api_key_env", "timeout_s")
MAX_FILE_BYTES = 2 * 2**20  # a variant file is a few kB; anything this big is the wrong file
MAX_TIMEOUT_S = 3600.0

KEY_ENV_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,99}")
KEY_ENV_SUFFIXES = ("_API_KEY", "_KEY", "_TOKEN")
# credentials of other services: never sent to a completions endpoint
FOREIGN_PREFIXES = (
    "AWS_", "AZURE_CLIENT_", "GOOGLE_APPLICATION_", "GITHUB_", "GH_", "GITLAB_", "GIT_", "CI_", "ACTIONS_",
    "RUNNER_", "NPM_", "PYPI_", "TWINE_", "DOCKER_", "SSH_", "GPG_",
)  # fmt: skip
FOREIGN_WORDS = ("SECRET", "PASSWORD", "PASSWD", "PRIVATE")
HUB_TOKENS = ("HF_TOKEN", "HF_API_TOKEN", "HF_API_KEY", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACEHUB_API_TOKEN")
HUB_HOSTS = ("huggingface.co", "huggingface.cloud", "hf.space")


def api_key_env_problem(name: object, base_url: str = "") -> str:
    """Why ``name`` may not be sent as an endpoint's API key ('' if it may); see the module docstring."""
    rule = "it must name an API key variable: upper-case letters, digits and _, ending in _API_KEY, _KEY or _TOKEN"
    if not isinstance(name, str) or not KEY_ENV_NAME.fullmatch(name):
        return f"{name!r} is not an environment variable name; {rule}"
    if not name.endswith(KEY_ENV_SUFFIXES):
        return f"{name!r} does not look like an API key variable; {rule}"
    if name.startswith(FOREIGN_PREFIXES) or any(w in name for w in FOREIGN_WORDS):
        return f"{name!r} is a credential of another service, not an API key for a completions server"
    if name in HUB_TOKENS:
        host = (urlsplit(base_url).hostname or "").lower()
        if not any(host == h or host.endswith("." + h) for h in HUB_HOSTS):
            return f"{name!r} is your Hugging Face hub token; it is sent only to Hugging Face hosts, not to {host!r}"
    return ""


@dataclass(frozen=True)
class Endpoint:
    """An OpenAI-compatible completions server serving this variant."""

    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = 120.0

    def __post_init__(self) -> None:
        problem = api_key_env_problem(self.api_key_env, self.base_url)
        if problem:
            raise ViChatError(f"endpoint {self.base_url}: api_key_env {problem}; use e.g. VLLM_API_KEY")
        checks.number("endpoint timeout_s", self.timeout_s, above=0, maximum=MAX_TIMEOUT_S)


@dataclass(frozen=True)
class Variant:
    name: str
    base: str
    template: str = "chat"
    adapter: str | None = None
    backend: str = "local"
    description: str = ""
    endpoint: Endpoint | None = None
    # local on CPU: "auto" runs the fast int8 decoder (vichat.fast) where it applies; "off": transformers
    fast: str = "auto"
    guard: str = "off"  # "medical": the answers pass vichat.safety's medical guard

    @property
    def is_tuned(self) -> bool:
        return self.adapter is not None or (self.endpoint is not None and self.base != self.endpoint.model)


# ---------------------------------------------------------------------------------------- the variant file


def read_models_file(path: Path) -> object:
    """The YAML in ``path``, or one ViChatError naming the file and what is wrong with it."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ViChatError(
            f"variant file {path} not found: give an existing file with --models (default {MODELS_YAML})"
        ) from None
    except IsADirectoryError:
        raise ViChatError(f"variant file {path} is a folder: give the YAML file itself") from None
    except OSError as e:
        raise ViChatError(f"cannot read the variant file {path}: {e.strerror or e}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ViChatError(
            f"{path}: {len(raw)} bytes is too big for a variant file; give the models.yaml file"
        )
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in raw:
        raise ViChatError(f"{path} is UTF-16 (or holds NUL bytes), not UTF-8 text: save it again as UTF-8")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ViChatError(f"{path}, line {line}: bytes that are not UTF-8; save the file as UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ViChatError(f"{path}{where}: not valid YAML ({problem}); fix the syntax there") from None
    except RecursionError:
        raise ViChatError(
            f"{path}: a value cannot be read: it is nested too deeply for a variant file"
        ) from None
    except (ValueError, OverflowError) as e:  # e.g. a date that does not exist
        raise ViChatError(f"{path}: a value cannot be read ({e}); quote it if it is meant as text") from None
    if data is None:
        raise ViChatError(f"{path} is empty: it needs 'bases' and 'variants' (see assets/models.yaml)")
    return data


def _kind(value: object) -> str:
    names = {
        dict: "a mapping",
        list: "a list",
        str: "text",
        bool: "true/false",
        int: "a number",
        float: "a number",
    }
    return names.get(type(value), type(value).__name__)


def _unknown(where: str, given: dict, allowed: tuple[str, ...]) -> None:
    unknown = [k for k in given if k not in allowed]
    if unknown:
        raise ViChatError(
            f"{where} has unknown keys: {', '.join(sorted(map(str, unknown)))} (allowed: {', '.join(allowed)})"
        )


def _text(where: str, key: str, value: object, *, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        got = "nothing" if value is None else f"{_kind(value)} {value!r}"
        raise ViChatError(f"{where}: {key} must be non-empty text (got {got}); quote it if it is a number")
    return value.strip()


def _base(source: str, key: object, b: object) -> BaseSpec:
    if not isinstance(key, str) or not key.strip():
        raise ViChatError(f'{source}: base key {key!r} must be text; quote it (e.g. "{key}":)')
    where = f"{source}: base {key!r}"
    if not isinstance(b, dict):
        raise ViChatError(f"{where} must be a mapping with source (got {_kind(b)})")
    _unknown(where, b, BASE_KEYS)
    src = _text(where, "source", b.get("source"))
    in8 = b.get("load_in_8bit", False)
    if not isinstance(in8, bool):
        raise ViChatError(f"{where}: load_in_8bit must be true or false (got {in8!r})")
    desc = b.get("description") or ""
    if not isinstance(desc, str):
        raise ViChatError(f"{where}: description must be text (got {_kind(desc)})")
    return BaseSpec(key, src, in8, desc)


def _endpoint(where: str, e: object) -> Endpoint:
    if not isinstance(e, dict):
        raise ViChatError(f"{where}: endpoint must be a mapping with base_url and model (got {_kind(e)})")
    _unknown(f"{where}: endpoint", e, ENDPOINT_KEYS)
    url = _text(where, "endpoint base_url", e.get("base_url"))
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ViChatError(
            f"{where}: endpoint base_url must be an http(s) URL such as http://127.0.0.1:8000/v1"
        )
    if parts.username or parts.password:
        raise ViChatError(
            f"{where}: endpoint base_url holds a user name or password; remove it and put the key in the "
            "environment variable named by api_key_env"
        )
    model = _text(where, "endpoint model", e.get("model"))
    key_env = e.get("api_key_env", "OPENAI_API_KEY")
    problem = api_key_env_problem(key_env, url)
    if problem:
        raise ViChatError(f"{where}: api_key_env {problem}; use e.g. VLLM_API_KEY")
    timeout = checks.number(
        f"{where}: endpoint timeout_s", e.get("timeout_s", 120.0), above=0, maximum=MAX_TIMEOUT_S
    )
    return Endpoint(url, model, key_env, float(timeout))


def _variant(source: str, i: int, v: object, bases: dict[str, BaseSpec]) -> Variant:
    if not isinstance(v, dict):
        raise ViChatError(
            f"{source}: variant #{i + 1} is {_kind(v)} ({str(v)[:40]!r}), not a mapping with name, base, ... "
            "(each variant starts with '- name:')"
        )
    name = v.get("name")
    if name is None:
        raise ViChatError(
            f"{source}: variant #{i + 1}: name must be non-empty text (got nothing); add name: ..."
        )
    if not isinstance(name, str) or not name.strip():
        raise ViChatError(
            f"{source}: variant #{i + 1}: name must be non-empty text (got {_kind(name)} {name!r}); "
            f'quote it: name: "{name}"'
        )
    where = f"{source}: variant {name!r}"
    _unknown(where, v, VARIANT_KEYS)
    base = _text(where, "base", v.get("base"))
    backend = v.get("backend", "local")
    if backend not in BACKENDS:
        raise ViChatError(f"{where}: backend must be one of {', '.join(BACKENDS)} (got {backend!r})")
    template = v.get("template", "chat")
    if not isinstance(template, str) or template not in template_names():
        raise ViChatError(f"{where}: unknown template {template!r}; known: {', '.join(template_names())}")
    adapter = _text(where, "adapter", v.get("adapter"), required=False)
    desc = v.get("description") or ""
    if not isinstance(desc, str):
        raise ViChatError(f"{where}: description must be text (got {_kind(desc)})")
    mode = v.get("fast", "auto")
    mode = {True: "auto", False: "off"}.get(mode, mode) if isinstance(mode, bool) else mode  # YAML on/off
    if not isinstance(mode, str) or mode.lower() not in fast.FAST_MODES:
        raise ViChatError(f"{where}: fast must be one of {', '.join(fast.FAST_MODES)} (got {mode!r})")
    guard = v.get("guard", "off")
    guard = "off" if guard is False else guard  # YAML off
    if guard not in safety.GUARDS:
        raise ViChatError(f"{where}: guard must be one of {', '.join(safety.GUARDS)} (got {guard!r})")
    endpoint = _endpoint(where, v["endpoint"]) if v.get("endpoint") is not None else None
    if backend == "openai" and endpoint is None:
        raise ViChatError(f"{where} uses backend openai but has no endpoint")
    if backend == "local" and endpoint is not None:
        raise ViChatError(
            f"{where} has an endpoint but backend local; set backend: openai or drop the endpoint"
        )
    if backend == "local" and base not in bases:
        raise ViChatError(f"{where} names unknown base {base!r}; known: {', '.join(bases) or '-'}")
    return Variant(name.strip(), base, template, adapter, backend, desc, endpoint, mode.lower(), guard)


def _parse(data: object, source: str) -> tuple[dict[str, BaseSpec], list[Variant]]:
    if not isinstance(data, dict):
        raise ViChatError(
            f"{source} must be a mapping with keys 'bases' and 'variants' (got {_kind(data)}); see assets/models.yaml"
        )
    _unknown(source, data, TOP_KEYS)
    if "variants" not in data:
        raise ViChatError(f"{source}: expected keys 'bases' and 'variants'")
    raw_bases = data.get("bases") or {}
    if not isinstance(raw_bases, dict):
        raise ViChatError(
            f"{source}: bases must be a mapping of base keys to sources (got {_kind(raw_bases)})"
        )
    bases = {str(k): _base(source, k, b) for k, b in raw_bases.items()}
    raw_variants = data["variants"]
    if not isinstance(raw_variants, list) or not raw_variants:
        got = "an empty list" if raw_variants == [] else _kind(raw_variants)
        raise ViChatError(
            f"{source}: variants must be a list of variants, each starting with '- name:' (got {got})"
        )
    variants = [_variant(source, i, v, bases) for i, v in enumerate(raw_variants)]
    names = [v.name for v in variants]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ViChatError(f"{source}: duplicate variant names: {', '.join(sorted(dupes))}")
    return bases, variants


@dataclass
class LoadStatus:
    """What loading a base is doing, for a screen to show while it waits (never "generating..." then)."""

    state: str = "idle"  # idle, loading, ready, failed
    step: str = ""
    started: float = 0.0
    step_started: float = 0.0
    estimate_s: float | None = None  # of the current step, where known
    error: str = ""

    def begin(self, step: str, estimate_s: float | None = None) -> None:
        now = time.monotonic()
        if self.state != "loading":
            self.state, self.started = "loading", now
        self.step, self.step_started, self.estimate_s = step, now, estimate_s

    def describe(self) -> str:
        if self.state != "loading":
            return self.error if self.state == "failed" else self.state
        spent = time.monotonic() - self.step_started
        left = f", about {max(1, round(self.estimate_s - spent))} s left" if self.estimate_s else ""
        return f"{self.step} ({spent:.0f} s so far{left})"


_ABOUT = re.compile(r"about (\d+) s")


@dataclass
class Registry:
    bases: dict[str, BaseSpec]
    variants: dict[str, Variant]
    device: str | None = None
    progress: object = print
    _loaded: dict[str, LoadedBase] = field(default_factory=dict, repr=False)
    _load_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _fast_notes: dict[str, str] = field(default_factory=dict, repr=False)  # variant -> why not fast
    max_batch: int = MAX_BATCH  # rows per fast batch (fewer where memory is short: plan_batch)
    _schedulers: dict[str, Scheduler] = field(default_factory=dict, repr=False)
    _decoders: dict[tuple, Decoder] = field(default_factory=dict, repr=False)
    _status: dict[str, LoadStatus] = field(default_factory=dict, repr=False)  # base key -> loading status

    # ------------------------------------------------------------------------------------ construction

    @classmethod
    def from_yaml(cls, path: str | Path = MODELS_YAML, **kwargs) -> Registry:
        path = Path(path)
        bases, variants = _parse(read_models_file(path), str(path))
        return cls(bases, {v.name: v for v in variants}, **kwargs)

    def add_variant(self, variant: Variant) -> None:
        """Register a variant at run time (e.g. an adapter the app just trained)."""
        if not isinstance(variant.name, str) or not variant.name.strip():
            raise ViChatError(f"a variant's name must be non-empty text (got {variant.name!r})")
        if variant.template not in template_names():
            raise ViChatError(f"variant {variant.name!r}: unknown template {variant.template!r}")
        if variant.backend not in BACKENDS:
            raise ViChatError(f"variant {variant.name!r}: backend must be one of {', '.join(BACKENDS)}")
        if variant.backend == "local" and variant.base not in self.bases:
            raise ViChatError(f"unknown base {variant.base!r}; known: {', '.join(self.bases)}")
        self.variants[variant.name] = variant

    # -------------------------------------------------------------------------------------- look-ups

    def names(self) -> list[str]:
        return list(self.variants)

    def variant(self, name: str) -> Variant:
        try:
            return self.variants[name]
        except KeyError:
            raise UnknownVariantError(
                f"unknown variant {name!r}; known: {', '.join(self.variants)}"
            ) from None

    def template(self, name: str) -> Template:
        return get_template(self.variant(name).template)

    def availability(self, name: str) -> Availability:
        v = self.variant(name)
        if v.backend == "openai":
            return Availability(True, f"remote endpoint {v.endpoint.base_url} ({v.endpoint.model})")
        base = base_availability(self.bases[v.base])
        if not base.ok:
            return base
        if v.adapter:
            return adapter_availability(v.adapter, self.bases[v.base])
        return base

    def available_names(self) -> list[str]:
        return [n for n in self.variants if self.availability(n).ok]

    def siblings(self, name: str) -> list[str]:
        """Variants sharing this variant's base (for compare: base vs tuned)."""
        base = self.variant(name).base
        return [n for n, v in self.variants.items() if v.base == base]

    # ---------------------------------------------------------------------------------------- loading

    def load_status(self, key: str) -> LoadStatus:
        """How loading base ``key`` stands (a live object: read it while a load runs)."""
        return self._status.setdefault(key, LoadStatus())

    def loaded_base(self, key: str) -> LoadedBase:
        status = self.load_status(key)
        if key not in self._loaded:
            status.begin(f"loading the base model {key}")

        def progress(message: str) -> None:
            if message.startswith("Converting"):
                about = _ABOUT.search(message)
                status.begin("converting the bundled model, once", float(about.group(1)) if about else None)
            self.progress(message)

        with self._load_lock:
            try:
                if key not in self._loaded:
                    self._loaded[key] = in_own_thread(
                        load_base, self.bases[key], self.device, progress=progress
                    )
            except Exception as e:
                status.state, status.error = "failed", f"loading {key} failed: {e}"
                raise
            if status.state == "loading" and status.step.startswith(("loading the base", "converting")):
                status.state = "ready"
            return self._loaded[key]

    def preload(self, names: Sequence[str]) -> threading.Thread:
        """Load what ``names`` need in a background thread: bases, adapters, the fast engine (its kernels timed).

        A request that comes meanwhile waits for the same load; :meth:`load_status` says what it is doing.
        Failures are logged and kept in the status; the request that needs the variant gets the error.
        """

        def run() -> None:
            for name in names:
                v = self.variant(name)
                if v.backend != "local":
                    continue
                status = self.load_status(v.base)
                try:
                    self.prepare(name)
                    if v.fast != "off" and v.base not in self._schedulers:
                        status.begin("preparing the fast CPU engine (timing kernels on this machine)", 10.0)
                    self.decoder(name)
                    status.state = "ready"
                except Exception as e:  # noqa: BLE001 - kept for the screens, raised again on use
                    status.state, status.error = "failed", f"{name}: {e}"
                    log.warning("preloading %s failed: %s", name, e)

        thread = threading.Thread(target=run, name="vichat-preload", daemon=True)
        thread.start()
        return thread

    def prepare(self, name: str) -> tuple[LoadedBase, str | None]:
        """Load what ``name`` needs: its base (once per base) and its adapter onto that base."""
        v = self.variant(name)
        if v.backend != "local":
            raise ViChatError(f"variant {name!r} is served remotely, not loaded here")
        if v.adapter:
            check = adapter_availability(v.adapter, self.bases[v.base])
            if not check.ok and not check.reason.startswith("adapter " + v.adapter + " is not downloaded"):
                raise VariantUnavailableError(f"{name}: {check.reason}")
        base = self.loaded_base(v.base)
        if v.adapter is None:
            return base, None
        in_own_thread(base.add_adapter, name, adapter_folder(v.adapter))  # see in_own_thread
        return base, name

    def loaded(self) -> dict[str, LoadedBase]:
        return dict(self._loaded)

    def fast_engine(self, name: str, base: LoadedBase, adapter: str | None) -> fast.GemmaFast | None:
        """The fast CPU engine for a prepared variant, or None (reference path; the reason logged once)."""
        if self.variant(name).fast == "off":
            return None
        try:
            return in_own_thread(fast.engine_for, base, adapter, batch=self.max_batch)  # see in_own_thread
        except fast.FastUnsupported as e:
            if self._fast_notes.get(name) != str(e):
                self._fast_notes[name] = str(e)
                log.warning("%s: %s; using transformers generate instead of the fast path", name, e)
            return None

    def fast_note(self, name: str) -> str:
        """Why ``name`` last fell back from the fast path ('' if it did not, or has not run yet)."""
        return self._fast_notes.get(name, "")

    def scheduler(self, base: LoadedBase) -> Scheduler:
        """The continuous-batching scheduler of ``base``'s fast engine (one per base and engine)."""
        with self._load_lock:
            sched = self._schedulers.get(base.spec.key)
            if sched is None or sched.engine is not base.fast:
                sched = Scheduler(base.fast, plan_batch(base.fast, wanted=self.max_batch))
                self._schedulers[base.spec.key] = sched
            return sched

    # -------------------------------------------------------------------------------------- decoders

    def decoder(self, name: str) -> Decoder:
        """The decoder serving ``name``, chosen from its configuration by :data:`DECODERS`."""
        v = self.variant(name)
        return DECODERS[v.backend, v.fast if v.backend == "local" else "auto"](self, v)

    def request(
        self,
        name: str,
        instruction: str,
        settings: GenerationSettings | None = None,
        cancel: threading.Event | None = None,
        stats: GenerationStats | None = None,
    ) -> tuple[Decoder, Request]:
        """The decoder of ``name`` and the request for one instruction (the template applied here)."""
        v = self.variant(name)
        template = get_template(v.template)
        decoder = self.decoder(name)  # a local variant's base and adapter are loaded here, once
        adapter = name if v.backend == "local" and v.adapter else None  # its name on the base (prepare)
        request = Request(
            template.build(instruction),
            settings or GenerationSettings(),
            tuple(template.stop),
            adapter,
            cancel,
        )
        if stats is not None:
            request.stats = stats
        return decoder, request

    # ------------------------------------------------------------------------------------- generation

    def stream(
        self,
        name: str,
        instruction: str,
        settings: GenerationSettings | None = None,
        cancel: threading.Event | None = None,
        stats: GenerationStats | None = None,
    ) -> Iterator[str]:
        """The variant's reply to one instruction, piece by piece (through its guard, if it has one)."""
        decoder, request = self.request(name, instruction, settings, cancel, stats)
        guards = self._guards([(name, instruction)])
        for _, piece in _guarded(decoder.stream([request]), guards):
            yield piece

    def _guards(self, items: Sequence[tuple[str, str]]) -> dict[int, safety.MedicalGuard]:
        """Index -> the guard of each (variant, instruction) whose variant has one."""
        made = {i: safety.make_guard(self.variant(n).guard, q) for i, (n, q) in enumerate(items)}
        return {i: g for i, g in made.items() if g is not None}

    def stream_together(
        self,
        items: Sequence[tuple[str, str]],
        settings: GenerationSettings | None = None,
        cancels: Sequence[threading.Event | None] | None = None,
        stats: Sequence[GenerationStats] | None = None,
    ) -> Iterator[tuple[int, str]]:
        """Several (variant, instruction) replies at once, as ``(index, piece)``.

        Variants on the same fast base decode in one batch (Compare's two answers grow side by side);
        requests for different decoders run concurrently, each on its own.
        """
        yield from _guarded(self._together(items, settings, cancels, stats), self._guards(items))

    def _together(self, items, settings, cancels, stats) -> Iterator[tuple[int, str]]:
        groups: dict[int, tuple[Decoder, list[int], list[Request]]] = {}
        for i, (name, instruction) in enumerate(items):
            cancel = cancels[i] if cancels else None
            decoder, request = self.request(name, instruction, settings, cancel, stats[i] if stats else None)
            groups.setdefault(id(decoder), (decoder, [], []))
            groups[id(decoder)][1].append(i)
            groups[id(decoder)][2].append(request)
        parts = list(groups.values())
        if len(parts) == 1:
            decoder, index, requests = parts[0]
            for j, piece in decoder.stream(requests):
                yield index[j], piece
            return

        def part(decoder, index, requests):
            return ((index[j], piece) for j, piece in decoder.stream(requests))

        for _, (i, piece) in interleave([lambda p=p: part(*p) for p in parts]):
            yield i, piece

    def generate(self, name: str, instruction: str, settings: GenerationSettings | None = None) -> str:
        return "".join(self.stream(name, instruction, settings)).strip()

    def generate_batch(
        self, name: str, instructions: list[str], settings: GenerationSettings | None = None
    ) -> list[str]:
        """Replies to several instructions; on the fast path they decode as one batch."""
        if not instructions:
            return []
        pairs = [self.request(name, i, settings) for i in instructions]
        texts = pairs[0][0].generate_batch([r for _, r in pairs])
        kind = self.variant(name).guard
        return [safety.guard_text(kind, q, t).strip() for q, t in zip(instructions, texts, strict=True)]

    def nll(self, name: str, instructions: list[str], references: list[str]) -> list[float]:
        """Mean per-token negative log-likelihood of each reference response under the variant.

        Always the float32 reference model (not the fast path): scores stay comparable across machines.
        """
        template = self.template(name)
        base, adapter = self.prepare(name)
        prompts = [template.build(i) for i in instructions]
        with base.use(adapter) as model:  # in a passing thread: see in_own_thread
            return in_own_thread(generation.response_nll, model, base.tokenizer, prompts, references)


def _guarded(
    pieces: Iterator[tuple[int, str]], guards: dict[int, safety.MedicalGuard]
) -> Iterator[tuple[int, str]]:
    """``pieces`` with each guarded index's text through its guard: its opening first (an emergency notice
    shows before the model's first word), then whole sentences, then what it holds at the end."""
    if not guards:
        yield from pieces
        return
    for i, guard in guards.items():
        if opening := guard.opening():
            yield i, opening
    try:
        for i, piece in pieces:
            guard = guards.get(i)
            out = guard.feed(piece) if guard else piece
            if out:
                yield i, out
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()
    for i, guard in guards.items():
        if tail := guard.finish():
            yield i, tail


# ------------------------------------------------------------------------------ decoders by configuration


def _cached(reg: Registry, key: tuple, make) -> Decoder:
    with reg._load_lock:
        if key not in reg._decoders:
            reg._decoders[key] = make()
        return reg._decoders[key]


def _reference(reg: Registry, v: Variant, base: LoadedBase | None = None) -> Decoder:
    base = base or reg.prepare(v.name)[0]  # the base, with this variant's adapter loaded onto it
    return _cached(reg, ("reference", v.base, id(base)), lambda: ReferenceDecoder(base))


def _fast_or_reference(reg: Registry, v: Variant) -> Decoder:
    """The base's batched fast decoder where it applies to this variant; the reference otherwise."""
    base, adapter = reg.prepare(v.name)
    if reg.fast_engine(v.name, base, adapter) is None:
        return _reference(reg, v, base)
    sched = reg.scheduler(base)
    return _cached(reg, ("fast", v.base, id(sched)), lambda: FastDecoder(base, sched))


def _remote(reg: Registry, v: Variant) -> Decoder:
    return _cached(reg, ("remote", v.name, v.endpoint), lambda: RemoteDecoder(v.endpoint))


# (backend, fast mode) -> the decoder factory; a remote variant's fast mode is irrelevant
DECODERS = {
    ("local", "auto"): _fast_or_reference,
    ("local", "off"): _reference,
    ("openai", "auto"): _remote,
}
