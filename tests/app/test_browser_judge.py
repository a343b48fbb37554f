"""The Judge tab's diagnostics in a real browser: the app (conftest's ``app_url``) judges a tiny variant's answers
with the stand-in judge on 127.0.0.1 (started here: the app is local, so any http endpoint may be typed in),
then shows the diagnostics table and, per question, both answers and each order's reasons.
"""

import pytest

from testkit.openai_server import Behaviour, FakeOpenAIServer
from tests.app.test_browser import TINY_CHAT, choose, open_tab, shot, wait_text

pytestmark = [pytest.mark.browser, pytest.mark.slow]
KEY = "sk-browser-judge-" + "K3Y" * 6
QUESTION = "Question (id · category)"
JUDGE = "stand-in-judge"  # its own verdicts file: test_browser's offline run (gpt-4, no key) finds none here


@pytest.fixture(scope="module")
def judge_server():
    with FakeOpenAIServer(Behaviour(bias=1.0)) as server:  # Assistant 1 gets a point: the orders differ
        yield server


def wait_value(page, selector: str, pattern: str, timeout_s: float = 60) -> str:
    """The value of the textarea or input at ``selector`` once it matches ``pattern``."""
    page.wait_for_function(
        "([sel, pat]) => { const e = document.querySelector(sel); return e && new RegExp(pat).test(e.value); }",
        arg=[selector, pattern],
        timeout=timeout_s * 1000,
    )
    return page.input_value(selector)


def choose_starting(page, label: str, prefix: str) -> None:
    """Pick the option of the dropdown labelled ``label`` whose text starts with ``prefix``."""
    box = page.get_by_label(label, exact=True)
    box.click()
    options = box.get_attribute("aria-controls")
    page.locator(f"li[role=option][id^='{options}-'][aria-label^='{prefix}']").filter(visible=True).click()


def test_the_judge_run_shows_its_diagnostics_and_both_orders_reasons(page, judge_server):
    open_tab(page, "Judge")
    page.locator("#judge-variants [title=Clear]").click()
    choose(page, "Variants (each is scored against the reference answers)", TINY_CHAT)
    page.keyboard.press("Escape")
    questions = page.get_by_label("number input for questions (the first N; CPU answers are slow)")
    questions.fill("2")
    questions.press("Enter")
    page.fill("#judge-endpoint input, #judge-endpoint textarea", judge_server.url)
    page.fill("#judge-key input, #judge-key textarea", KEY)
    page.get_by_label("judge model", exact=True).fill(JUDGE)
    page.get_by_label("price IN,OUT in USD per 1M tokens (empty: list price)", exact=True).fill("1,2")
    assert not page.locator("#judge-diagnostics").is_visible()  # nothing to diagnose before a run
    calls = judge_server.calls
    page.click("#judge-run")
    status = wait_text(page, "#judge-status", r"^\s*(No API key: offline scores|\d+ calls)", 300)
    assert status.strip().startswith("4 calls"), status  # 2 questions x 2 orders
    assert judge_server.calls - calls == 4

    page.wait_for_selector("#judge-diagnostics", state="visible")
    table = page.inner_text("#judge-diagnostics-table")
    label = f"reference vs {TINY_CHAT}"
    assert label in table and "2/2" in table and "flip rate" in table and "position bias" in table
    assert "$0.0" in table  # the price box priced a judge with no list price
    assert "Flip rate: the share of those" in page.inner_text("#judge-diagnostics-notes")
    assert page.input_value("#judge-comparison input") == label
    wait_text(page, "#judge-question-text", "general-001")
    forward = wait_value(page, "#judge-reasons-forward textarea", "^Assistant 1 scores")
    swapped = wait_value(page, "#judge-reasons-swapped textarea", "^Assistant 1 scores")
    assert forward.endswith("for the reasons given.") and swapped.endswith("for the reasons given.")
    reasons = page.inner_text("#judge-reasons-forward"), page.inner_text("#judge-reasons-swapped")
    assert "forward (reference shown first): the judge's reasons" in reasons[0]
    assert f"swapped ({TINY_CHAT} shown first): the judge's reasons" in reasons[1]
    assert "reference's answer (" in page.inner_text("#judge-answer-first")
    assert f"{TINY_CHAT}'s answer (" in page.inner_text("#judge-answer-second")
    assert page.input_value("#judge-answer-first textarea").strip()
    assert page.input_value("#judge-answer-second textarea").strip()
    scores = page.inner_text("#judge-question-scores")
    assert "forward" in scores and "swapped" in scores and "mean of the orders judged" in scores
    page.get_by_text("As `python -m eval.diagnostics --show ID` prints it").click()
    cli = wait_value(page, "#judge-question-cli textarea", f"^## general-001 \\(Generic\\): {label}")
    assert forward in cli and swapped in cli
    shot(page, "judge-diagnostics")

    choose_starting(page, QUESTION, "general-002 · Generic")  # another question: the viewer follows
    wait_text(page, "#judge-question-text", "general-002")
    wait_value(page, "#judge-question-cli textarea", "^## general-002 ")
    assert page.input_value("#judge-reasons-forward textarea").startswith("Assistant 1 scores")
    assert page.input_value("#judge-reasons-swapped textarea").startswith("Assistant 1 scores")
    assert "Traceback" not in page.content() and KEY not in page.content()
    shot(page, "judge-diagnostics-question")
