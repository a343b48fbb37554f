"""Helpers shared by the tabs: variant choices, settings controls, per-session cancellation."""

from __future__ import annotations

import threading

import gradio as gr

from vichat.errors import ViChatError
from vichat.generation import RANGES, GenerationSettings
from vichat.registry import Registry


def variant_choices(registry: Registry) -> list[tuple[str, str]]:
    """(label, value) pairs; unavailable variants stay listed with the reason, so the user sees why."""
    out = []
    for name in registry.names():
        a = registry.availability(name)
        out.append((name if a.ok else f"{name} (unavailable: {a.reason[:70]})", name))
    return out


def default_variant(registry: Registry, prefer: tuple[str, ...] = ("Gemma-Chat", "Gemma-Base")) -> str:
    available = registry.available_names()
    for name in prefer:
        if name in available:
            return name
    return available[0] if available else registry.names()[0]


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
        return GenerationSettings(
            max_new_tokens=_num(max_new_tokens, int),
            temperature=_num(temperature, float),
            top_k=_num(top_k, int),
            repetition_penalty=_num(repetition_penalty, float),
            seed=None if seed in (None, "") else _num(seed, int),
        )
    except ViChatError as e:
        raise gr.Error(str(e)) from None


def _num(value, kind):
    if isinstance(value, float) and kind is int and value.is_integer():
        return int(value)
    return value


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
