"""Helpers shared by the tabs: variant choices, settings controls, input checks, per-session cancellation.

Every numeric setting a handler takes goes through vichat.checks (the CLIs' checker), so NaN, infinities,
strings, negatives and out-of-range values get the same message in the app as on the command line, as a
``gr.Error``, never a traceback. A handler turns the user's mistakes (ViChatError) into that message with
``with refusals():``; the settings controls and their values follow GenerationSettings' fields.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import fields
from typing import TypeVar

import gradio as gr

from vichat import checks
from vichat.errors import SettingsError, ViChatError
from vichat.generation import RANGES, GenerationSettings
from vichat.prompts import check_instruction
from vichat.registry import Registry

T = TypeVar("T")
DEFAULT_PAIRS = (("Gemma-Base", "Gemma-Chat"), ("Bloomz", "Bloomz-Chat"), ("GPTJ", "GPTJ-Chat"))


# ------------------------------------------------------------------------------------------- variants


def variant_choices(registry: Registry, reason_chars: int = 70) -> list[tuple[str, str]]:
    """(label, value) pairs; unavailable variants stay listed with the reason, so the user sees why."""
    out = []
    for name in registry.names():
        a = registry.availability(name)
        why = f": {shorten(a.reason, reason_chars)}" if reason_chars else ""
        out.append((name if a.ok else f"{name} (unavailable{why})", name))
    return out


def shorten(text: str, limit: int) -> str:
    """``text`` cut at a word boundary to at most ``limit`` characters, with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    return text[: limit - 1].rsplit(" ", 1)[0].rstrip(" ,.:;(") + "…"


def refreshed_choices(registry: Registry, reason_chars: int = 70) -> dict:
    """An update that gives a variant picker the registry's current variants (after a training run)."""
    return gr.update(choices=variant_choices(registry, reason_chars))


def default_variant(registry: Registry, prefer: tuple[str, ...] = ("Gemma-Chat", "Gemma-Base")) -> str:
    available = registry.available_names()
    for name in prefer:
        if name in available:
            return name
    return available[0] if available else registry.names()[0]


def default_pair(registry: Registry) -> tuple[str, str]:
    """A base and its tuned sibling, both runnable here if possible (else the first listed pair)."""
    available = set(registry.available_names())
    candidates = [p for p in DEFAULT_PAIRS if p[0] in registry.variants and p[1] in registry.variants]
    for name in registry.names():  # then any untuned variant with a tuned sibling
        v = registry.variant(name)
        if not v.is_tuned:
            candidates += [(name, s) for s in registry.siblings(name) if registry.variant(s).is_tuned]
    for pair in candidates:
        if set(pair) <= available:
            return pair
    if candidates:
        return candidates[0]
    names = registry.names()
    return names[0], names[min(1, len(names) - 1)]


def describe_variant(registry: Registry, name: str) -> str:
    """One line: what the variant is, its template, and whether it runs here (and why not)."""
    v, why = outcome(registry.variant, name)
    if why is not None:
        return why
    a = registry.availability(name)
    status = "ready" if a.ok else f"**unavailable here**: {a.reason}"
    return f"{v.description or v.base} · template `{v.template}` · {status}"


def unavailable_reason(registry: Registry, name: str | None) -> str | None:
    """Why ``name`` cannot run here (unknown or unavailable), or None when it can."""
    if not name:
        return "choose a variant"
    a, why = outcome(registry.availability, name)
    if why is not None:
        return why
    return None if a.ok else f"{name} is unavailable here: {a.reason}"


def require_ready(registry: Registry, name: str | None) -> str:
    reason = unavailable_reason(registry, name)
    if reason:
        raise gr.Error(reason)
    return name


# ------------------------------------------------------------------------------------------- settings

# What the pages show of GenerationSettings: the label of each field's control. Which fields and in what
# order come from the dataclass (a field not named here, top_p, keeps its default); settings_controls,
# make_settings, settings_or_error and settings_problems all take the values in that order.
LABELS = {
    "max_new_tokens": "max new tokens",
    "temperature": "temperature (0 = greedy)",
    "top_k": "top-k (0 = off)",
    "repetition_penalty": "repetition penalty",
    "seed": "seed (empty = random)",
}
SETTINGS_FIELDS = tuple(f.name for f in fields(GenerationSettings) if f.name in LABELS)
INTEGRAL = tuple(f.name for f in fields(GenerationSettings) if f.type in ("int", int))
SLIDER_STEP = 0.05  # for the settings that are not whole numbers
SEED_MAX = 2**32 - 1


def settings_controls() -> list[gr.components.Component]:
    """One control per shown setting, at the paper's default: a slider over its range; the seed a number box."""
    defaults = GenerationSettings()
    with gr.Accordion("Generation settings (the paper's defaults)", open=False):
        return [_control(name, getattr(defaults, name)) for name in SETTINGS_FIELDS]


def _control(name: str, default) -> gr.components.Component:
    if name not in RANGES:  # the seed: any whole number, empty for a random one
        return gr.Number(value=default, precision=0, label=LABELS[name])
    step = 1 if name in INTEGRAL else SLIDER_STEP
    return gr.Slider(*RANGES[name], value=default, step=step, label=LABELS[name])


def make_settings(*values) -> GenerationSettings:
    """Validated settings from the UI's values (settings_controls' order); a bad value becomes a message."""
    with refusals():
        return settings_or_error(*values)


def checked_setting(name: str, value):
    """One generation setting checked by vichat.checks against the range GenerationSettings accepts."""
    if name == "seed":
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        try:
            return checks.number("seed", value, minimum=0, maximum=SEED_MAX, integer=True)
        except SettingsError as e:
            raise SettingsError(f"{e}; leave it empty for a random seed") from None
    low, high = RANGES[name]
    return checks.number(name, value, minimum=low, maximum=high, integer=name in INTEGRAL)


def settings_or_error(*values, **hidden) -> GenerationSettings:
    """GenerationSettings from the UI's values (settings_controls' order) and any ``hidden`` field by name
    (``top_p=``); raises SettingsError naming the bad one."""
    named = dict(zip(SETTINGS_FIELDS, values, strict=True)) | hidden
    return GenerationSettings(**{name: checked_setting(name, v) for name, v in named.items()})


def ui_number(name: str, value, **bounds):
    """vichat.checks.number for a handler: a bad value becomes a gr.Error naming the field."""
    with refusals():
        return checks.number(name, value, **bounds)


def session_of(request) -> str:
    """The browser session behind a request ("-" when a handler is called without one, as in tests)."""
    return getattr(request, "session_hash", None) or "-"


def refusal(error: ViChatError):
    """A ViChatError as the gr.Error the page shows (its message is already written for the user)."""
    return gr.Error(str(error))


@contextlib.contextmanager
def refusals() -> Iterator[None]:
    """``with refusals():`` around a handler's steps: a ViChatError raised inside (a user's mistake) reaches
    the page as its :func:`refusal`, never as a traceback. Works around ``yield`` in a streaming handler."""
    try:
        yield
    except ViChatError as e:
        raise refusal(e) from None


def outcome(step: Callable[..., T], *args) -> tuple[T | None, str | None]:
    """``(step(*args), None)``, or ``(None, message)`` when it raises a ViChatError (a user's mistake)."""
    try:
        return step(*args), None
    except ViChatError as e:
        return None, str(e)


def problem(step: Callable[..., object], *args) -> str | None:
    """The message of the ViChatError that ``step(*args)`` raises, or None when it passes."""
    return outcome(step, *args)[1]


# ------------------------------------------------------------------------------------------ validation


def check(condition_message: str | None) -> dict:
    """A gr.validate for one input: valid when the message is None."""
    return gr.validate(condition_message is None, condition_message or "")


def prompt_problem(text) -> str | None:
    return problem(check_instruction, text if text is not None else "")


def settings_problems(*values) -> list[str | None]:
    """One message (or None) per settings control, in settings_controls' order."""
    return [problem(checked_setting, name, v) for name, v in zip(SETTINGS_FIELDS, values, strict=True)]


# ---------------------------------------------------------------------------------------- cancellation


class Cancellations:
    """One cancel event per browser session and purpose, set by Stop buttons and when the tab closes."""

    def __init__(self) -> None:
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def new(self, key: str) -> threading.Event:
        with self._lock:
            event = self._events[key] = threading.Event()
            return event

    def cancel(self, key_prefix: str) -> None:
        with self._lock:
            for key, event in self._events.items():
                if key.startswith(key_prefix):
                    event.set()

    def close_session(self, session: str) -> None:
        """Cancel everything a closed browser tab started, and forget its events."""
        with self._lock:
            for key in [k for k in self._events if k.startswith(f"{session}:")]:
                self._events.pop(key).set()

    def __len__(self) -> int:
        return len(self._events)


UPDATE_EVERY_ENV = "VICHAT_STREAM_EVERY_S"


def update_every_s() -> float:
    """Streamed text reaches the page at most this often (seconds; ``VICHAT_STREAM_EVERY_S``, default 0.05,
    0 for every token): each update re-sends the component, so one per token costs the server more than the
    decoding on a small CPU when many people are streaming at once."""
    value = os.environ.get(UPDATE_EVERY_ENV, "").strip()
    return checks.number(UPDATE_EVERY_ENV, value, minimum=0, maximum=5) if value else 0.05


def coalesced(
    items: Iterator[T], every_s: float | None = None, clock: Callable[[], float] = time.monotonic
) -> Iterator[list[T]]:
    """``items`` in lists, one list per ``every_s`` at most (the first item at once, the last never held back;
    ``every_s`` None: :func:`update_every_s`)."""
    every_s = update_every_s() if every_s is None else every_s
    pending: list[T] = []
    last = None
    for item in items:
        pending.append(item)
        now = clock()
        if last is None or now - last >= every_s:
            yield pending
            pending, last = [], now
    if pending:
        yield pending


def loading_notes(registry: Registry, names, cancel=None, poll_s: float = 0.5):
    """While a base that ``names`` need is still loading (the app preloads the default one at start), yield
    what it is doing ("converting the bundled model, once (12 s so far, about 28 s left)") every ``poll_s``;
    return once every base is ready (or failed: the request itself then says why)."""
    import time

    bases = {registry.variant(n).base for n in names if registry.variant(n).backend == "local"}
    while cancel is None or not cancel.is_set():
        busy = [(b, registry.load_status(b)) for b in sorted(bases)]
        busy = [(b, s) for b, s in busy if s.state == "loading"]
        if not busy:
            return
        yield "; ".join(f"{b}: {s.describe()}" for b, s in busy)
        time.sleep(poll_s)
