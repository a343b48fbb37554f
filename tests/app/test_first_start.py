"""First start: while the default base is still loading (preloaded at app start), Chat and Compare say what is
happening ("converting the bundled model, once", time so far, time left), never "generating..."."""

from __future__ import annotations

import threading

from ui.common import loading_notes
from vichat.paths import MODELS_YAML
from vichat.registry import Registry


def test_notes_while_loading_then_nothing_once_ready():
    reg = Registry.from_yaml(MODELS_YAML, progress=lambda m: None)
    status = reg.load_status("gemma-270m")
    status.begin("converting the bundled model, once", 40.0)
    notes = loading_notes(reg, ["Gemma-Chat", "Gemma-Base"], poll_s=0.001)
    first = next(notes)
    assert first.startswith("gemma-270m: converting the bundled model, once (") and "s left" in first
    status.state = "ready"
    assert list(notes) == []


def test_no_note_when_ready_or_cancelled():
    reg = Registry.from_yaml(MODELS_YAML, progress=lambda m: None)
    assert list(loading_notes(reg, ["Gemma-Chat"])) == []  # idle: nothing loading, go on
    reg.load_status("gemma-270m").begin("loading the base model gemma-270m")
    cancel = threading.Event()
    cancel.set()
    assert list(loading_notes(reg, ["Gemma-Chat"], cancel)) == []
