"""The Chat tab's retry, edit, download and import in a real browser (headless Chromium, the app on 127.0.0.1).

The tiny BLOOM chat variant answers in a fraction of a second; every wait is on a state of the page (a new
seed in the stats line, a message count, a label), never on a moment.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.app.test_browser import choose, shot, wait_text

pytestmark = [pytest.mark.browser, pytest.mark.slow]
TINY_CHAT = "Tiny-Bloom-Chat"
Q1, Q2 = "Thủ đô của Việt Nam là gì?", "Còn thành phố lớn nhất?"
DONE = r"^\d+ tokens · .* tokens/s .* seed \d+$"  # anchored: while busy, Gradio puts a timer first


def stats(page) -> str:
    return page.inner_text("#chat-stats").strip()


def seed_of(text: str) -> int:
    return int(re.search(r"seed (\d+)$", text).group(1))


def wait_new_stats(page, old: str, timeout_s: float = 120) -> str:
    """The stats line of the next finished answer (it ends with its seed, so two answers never read alike)."""
    page.wait_for_function(
        "([old, pat]) => { const t = document.querySelector('#chat-stats').innerText.trim();"
        " return t !== old && new RegExp(pat).test(t); }",
        arg=[old, DONE],
        timeout=timeout_s * 1000,
    )
    return stats(page)


def count(page, who: str) -> int:
    return page.locator(f"#chat-box [data-testid={who}]").count()


def wait_counts(page, users: int, bots: int) -> None:
    page.wait_for_function(
        "([u, b]) => document.querySelectorAll('#chat-box [data-testid=user]').length === u &&"
        " document.querySelectorAll('#chat-box [data-testid=bot]').length === b",
        arg=[users, bots],
        timeout=60_000,
    )


def start(page) -> None:
    choose(page, "Variant", TINY_CHAT)
    wait_text(page, "#chat-variant-info", "tiny-bloom", 30)


def send(page, text: str) -> str:
    old = stats(page)
    page.fill("#chat-input textarea", text)
    page.click("#chat-send")
    return wait_new_stats(page, old)


def test_retry_samples_the_last_answer_again(page):
    start(page)
    first = send(page, Q1)
    page.locator("#chat-box button[aria-label=Retry]").click()
    second = wait_new_stats(page, first)
    assert seed_of(second) != seed_of(first)  # the seed field is empty: a fresh seed
    wait_counts(page, 1, 1)  # the answer was replaced, not added
    assert "new seed" in page.inner_text("#chat-note")
    # a fixed seed: retry moves it on by one, in the field too
    page.get_by_text("Generation settings (the paper's defaults)").filter(visible=True).click()
    seed_box = page.get_by_label("seed (empty = random)").filter(visible=True)
    seed_box.fill("7")
    page.locator("#chat-box button[aria-label=Retry]").click()
    third = wait_new_stats(page, second)
    assert third.endswith("seed 8") and seed_box.input_value() == "8"
    assert "seed 7 → 8" in page.inner_text("#chat-note")
    wait_counts(page, 1, 1)
    shot(page, "chat-retry")


def test_editing_a_message_drops_what_followed_and_answers_it(page):
    start(page)
    send(page, Q1)
    before = send(page, Q2)
    wait_counts(page, 2, 2)
    page.locator("#chat-box [data-testid=user]").first.hover()
    page.locator("#chat-box button[aria-label=Edit]").first.click()
    edited = "Hà Nội có gì đẹp?"
    page.fill("#chat-box textarea.edit-textarea", edited)
    page.locator("#chat-box button[aria-label=Submit]").click()
    wait_new_stats(page, before)
    wait_counts(page, 1, 1)
    assert page.inner_text("#chat-box [data-testid=user]").strip() == edited
    assert "Edited" in page.inner_text("#chat-note")
    page.get_by_text("The prompt the model saw").click()
    prompt = page.input_value("#chat-prompt textarea")
    assert edited in prompt and Q2 not in prompt and "Cuộc trò chuyện trước đó" not in prompt
    shot(page, "chat-edit")


def test_a_downloaded_conversation_comes_back_through_import(page, tmp_path):
    start(page)
    send(page, Q1)
    send(page, Q2)
    wait_text(page, "#chat-download-jsonl", "4 messages", 60)  # the download holds the whole conversation
    answers = page.locator("#chat-box [data-testid=bot]").all_inner_texts()
    with page.expect_download() as download:
        page.click("#chat-download-jsonl")
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    assert saved.name == "vichat-conversation.jsonl"
    lines = [json.loads(line) for line in saved.read_text(encoding="utf-8").splitlines()]
    assert [(r["role"], r.get("variant")) for r in lines] == [
        ("user", None), ("assistant", TINY_CHAT), ("user", None), ("assistant", TINY_CHAT)
    ]  # fmt: skip
    assert lines[0]["content"] == Q1 and lines[2]["content"] == Q2 and isinstance(lines[3]["seed"], int)
    with page.expect_download() as markdown:
        page.click("#chat-download-md")
    assert markdown.value.suggested_filename == "vichat-conversation.md"

    page.click("#chat-clear")
    wait_counts(page, 0, 0)
    wait_text(page, "#chat-download-jsonl", r"^\s*⬇ Conversation \(JSONL\)\s*$", 30)
    with page.expect_file_chooser() as chooser:
        page.click("#chat-import")
    chooser.value.set_files(str(saved))
    wait_text(page, "#chat-note", "Imported vichat-conversation.jsonl: 2 exchanges", 60)
    wait_counts(page, 2, 2)
    assert page.locator("#chat-box [data-testid=user]").all_inner_texts() == [Q1, Q2]
    assert page.locator("#chat-box [data-testid=bot]").all_inner_texts() == answers
    shot(page, "chat-import")
    # and it continues: the imported turns fold into the next prompt
    send(page, "Và con sông nào dài nhất?")
    page.get_by_text("The prompt the model saw").click()
    assert f"Người dùng: {Q1}" in page.input_value("#chat-prompt textarea")

    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"role": "user", "content": "a"}\n{"role": "system", "content": "b"}\nnot json\n', "utf-8"
    )
    with page.expect_file_chooser() as chooser:
        page.click("#chat-import")
    chooser.value.set_files(str(bad))
    note = wait_text(page, "#chat-note", "not imported", 60)
    assert "line 2: role must be" in note and "line 3: " in note
    wait_counts(page, 3, 3)  # the conversation shown is unchanged
    shot(page, "chat-import-refused")


def test_a_thumb_on_an_answer_is_logged_in_the_apps_runs_folder(page, running_app):
    start(page)
    send(page, Q1)
    answer = page.inner_text("#chat-box [data-testid=bot]").strip()
    page.locator("#chat-box button[aria-label=Like]").click()
    wait_text(page, "#chat-note", "recorded for this answer", 30)
    log = running_app.runs / "chat" / "feedback.jsonl"
    assert log.is_file(), f"no {log}: app.py must pass its --runs folder to build_chat_tab"
    record = json.loads(log.read_text(encoding="utf-8").splitlines()[-1])
    assert record["liked"] is True and record["variant"] == TINY_CHAT and record["prompt"] == Q1
    def letters(text: str) -> str:  # the tiny model's bytes: the page drops control and format characters
        return "".join(ch for ch in text if ch.isalnum())

    assert letters(record["answer"]) == letters(answer) and isinstance(record["seed"], int)
    shot(page, "chat-feedback")
