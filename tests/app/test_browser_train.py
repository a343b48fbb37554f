"""The Train tab in a real browser: the preset it opens on, a run with early stopping, then its card and quality.

Runs against the same `python app.py` as tests/app/test_browser.py (conftest's ``running_app``: the shipped
presets plus a tiny BLOOM preset, so a run takes seconds on a CPU).
"""

import json

import pytest
import torch

from tests.app.test_browser import choose, open_tab, shot, wait_text

pytestmark = [pytest.mark.browser, pytest.mark.slow]
NAME = "Tiny-Card-browser"


def test_a_finished_run_shows_its_model_card_and_quality(page, app_files, running_app):
    open_tab(page, "Train")
    here = "bloomz-chat.yaml" if torch.cuda.is_available() else "gemma-chat.yaml"
    assert page.input_value("#train-preset input") == here  # a preset that runs where the app runs
    assert (
        page.input_value("#train-name textarea") == ("Bloomz" if "bloomz" in here else "Gemma") + "-Chat-demo"
    )
    assert not page.is_checked("#train-early input[type=checkbox]")  # the shipped presets: off

    choose(page, "Preset", str(app_files["preset"]))
    page.wait_for_function(
        "() => document.querySelector('#train-name textarea').value === 'Tiny-Trained-demo'", timeout=10_000
    )
    page.fill("#train-name textarea", NAME)
    page.fill("#train-extra textarea", "--eval_steps 2")
    page.check("#train-early input[type=checkbox]")
    page.fill("#train-patience input", "2")
    page.click("#train-start")
    status = wait_text(page, "#train-status", "Finished|failed|Stopped", 300)
    assert f"Finished: {NAME}" in status, page.input_value("#train-log textarea")
    assert "Stopped early at step" in status or "Early stopping was on and the run went all" in status

    card = wait_text(page, "#train-card", "Training data", 60)  # the card train.card wrote, rendered
    assert NAME in card and "Licence" in card and "How to use it" in card
    assert "library_name: peft" in card  # its hub metadata, shown as a YAML block
    assert "early stopping (patience 2 evaluations" in page.inner_text("#train-report")
    assert "No quality.json in this run yet" in page.inner_text("#train-quality")
    shot(page, "train-card")

    # quality.json appears later (python -m train.quality): a reloaded page shows its figures
    figures = {"variant": NAME, "base": "Tiny-Bloom", "records": 2, "nll_base": 5.9876, "nll_tuned": 5.4321,
               "answers": 2, "ended_by_itself": 0.5, "vietnamese": 1.0, "both": 0.5}  # fmt: skip
    adapter = running_app.runs / "app-train" / NAME / "adapter"
    (adapter / "quality.json").write_text(json.dumps(figures), encoding="utf-8")
    page.reload()
    page.wait_for_selector("#chat-input", timeout=60_000)
    open_tab(page, "Train")
    quality = wait_text(page, "#train-quality", "nll_tuned", 60)
    assert "5.4321" in quality and "0.5555 nats/token" in quality
    page.locator("#train-quality").scroll_into_view_if_needed()
    shot(page, "train-quality")
