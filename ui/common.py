"""Helpers shared by the tabs: variant choices, settings controls, input checks, per-session cancellation.

Every numeric setting a handler takes goes through vichat.checks (the CLIs' checker), so NaN, infinities,
strings, negatives and out-of-range values get the same message in the app as on the command line, as a
``gr.Error``, never a traceback.
"""

from __future__ import annotations

import threading

import gradio as gr

from vichat import checks
from vichat.errors import SettingsError, ViChatError
from vichat.generation import RANGES, GenerationSettings
from vichat.prompts import check_instruction
from vichat.registry import Registry

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
    try:
        v = registry.variant(name)
    except ViChatError as e:
        return str(e)
    a = registry.availability(name)
    status = "ready" if a.ok else f"**unavailable here**: {a.reason}"
    return f"{v.description or v.base} · template `{v.template}` · {status}"


def unavailable_reason(registry: Registry, name: str | None) -> str | None:
    """Why ``name`` cannot run here (unknown or unavailable), or None when it can."""
    if not name:
        return "choose a variant"
    try:
        a = registry.availability(name)
    except ViChatError as e:
        return str(e)
    return None if a.ok else f"{name} is unavailable here: {a.reason}"


def require_ready(registry: Registry, name: str | None) -> str:
    reason = unavailable_reason(registry, name)
    if reason:
        raise gr.Error(reason)
    return name


# ------------------------------------------------------------------------------------------- settings


def settings_controls() -> list[gr.components.Component]:
    d = GenerationSettings()
    with gr.Accordion("Generation settings (the paper's defaults)", open=False):
        return [
            gr.Slider(*RANGES["max_new_tokens"], value=d.max_new_tokens, step=1, label="max new tokens"),
            gr.Slider(
                *RANGES["temperature"], value=d.temperature, step=0.05, label="temperature (0 = greedy)"
            ),
            gr.Slider(*RANGES["top_k"], value=d.top_k, step=1, label="top-k (0 = off)"),
            gr.Slider(
                *RANGES["repetition_penalty"],
                value=d.repetition_penalty,
                step=0.05,
                label="repetition penalty",
            ),
            gr.Number(value=None, precision=0, label="seed (empty = random)"),
        ]


def make_settings(max_new_tokens, temperature, top_k, repetition_penalty, seed) -> GenerationSettings:
    """Validated settings from the UI's values; a bad value becomes a message, never a traceback."""
    try:
        return settings_or_error(max_new_tokens, temperature, top_k, repetition_penalty, seed)
    except ViChatError as e:
        raise gr.Error(str(e)) from None


SEED_MAX = 2**32 - 1
INTEGRAL = ("max_new_tokens", "top_k")


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


def settings_or_error(
    max_new_tokens, temperature, top_k, repetition_penalty, seed, top_p=1.0
) -> GenerationSettings:
    """GenerationSettings from the UI's values; raises SettingsError naming the bad one."""
    values = {
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
        "top_k": top_k,
        "top_p": top_p,
        "repetition_penalty": repetition_penalty,
        "seed": seed,
    }
    return GenerationSettings(**{name: checked_setting(name, v) for name, v in values.items()})


def ui_number(name: str, value, **bounds):
    """vichat.checks.number for a handler: a bad value becomes a gr.Error naming the field."""
    try:
        return checks.number(name, value, **bounds)
    except ViChatError as e:
        raise gr.Error(str(e)) from None


def session_of(request) -> str:
    """The browser session behind a request ("-" when a handler is called without one, as in tests)."""
    return getattr(request, "session_hash", None) or "-"


def refusal(error: ViChatError):
    """A ViChatError as the gr.Error the page shows (its message is already written for the user)."""
    return gr.Error(str(error))


# ------------------------------------------------------------------------------------------ validation


def check(condition_message: str | None) -> dict:
    """A gr.validate for one input: valid when the message is None."""
    return gr.validate(condition_message is None, condition_message or "")


def prompt_problem(text) -> str | None:
    try:
        check_instruction(text if text is not None else "")
    except ViChatError as e:
        return str(e)
    return None


def settings_problems(max_new_tokens, temperature, top_k, repetition_penalty, seed) -> list[str | None]:
    """One message (or None) per settings control, in settings_controls' order."""
    values = {
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
        "top_k": top_k,
        "repetition_penalty": repetition_penalty,
        "seed": seed,
    }
    out: list[str | None] = []
    for name, value in values.items():
        try:
            checked_setting(name, value)
            out.append(None)
        except ViChatError as e:
            out.append(str(e))
    return out


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
