"""The app in a real browser: headless Chromium against `python app.py` on 127.0.0.1."""

import pytest

from vichat.paths import REPO_ROOT

pytestmark = [pytest.mark.browser, pytest.mark.slow]
SCREENSHOTS = REPO_ROOT / "runs" / "screenshots"


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_chat_streams_a_vietnamese_reply(page):
    question = "Hà Nội có những món ăn nào nổi tiếng?"
    page.fill("#chat-input textarea", question)
    page.click("#chat-send")
    page.wait_for_function(
        "() => { const s = document.querySelector('#chat-stats'); return s && /tokens\\/s/.test(s.innerText); }",
        timeout=120_000,
    )
    conversation = page.inner_text("#chat-box [role=log]")
    assert question in conversation
    assert len(conversation.replace(question, "").strip()) > 10  # the streamed reply
    assert "tokens/s" in page.inner_text("#chat-stats")
    shot(page, "chat")


def test_empty_prompt_shows_a_message_not_a_traceback(page):
    page.click("#chat-send")
    page.wait_for_selector("text=the prompt is empty", timeout=30_000)
    assert "Traceback" not in page.content()
