"""The blind arena in a real browser: a blind comparison of the tiny variants, one vote, the reveal, the board.

Runs against the same `python app.py` as tests/app/test_browser.py (conftest's ``running_app``, whose runs
folder is a fresh temporary one, so its votes log starts empty).
"""

import json
import re

import pytest

from tests.app.test_browser import TINY, TINY_CHAT, choose, open_tab, shot, wait_text

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def label_of(page, box: str) -> str:
    return page.inner_text(f"#{box} [data-testid=block-info]").strip()


def board_rows(text: str) -> dict[str, list[str]]:
    """The ratings table of the leaderboard as shown: variant -> its cells."""
    rows = {}
    for line in text.split("Head-to-head")[0].splitlines():
        cells = [c.strip() for c in line.split("\t")]
        if len(cells) == 7 and cells[0].isdigit():
            rows[cells[1]] = cells
    return rows


def test_a_blind_battle_hides_the_names_until_the_vote_then_the_board_counts_it(page, running_app):
    log = running_app.runs / "arena" / "votes.jsonl"
    open_tab(page, "Compare")
    assert page.is_checked("#compare-blind input")  # blind is the default
    choose(page, "Variant A", TINY)
    choose(page, "Variant B", TINY_CHAT)
    page.get_by_text("Generation settings (the paper's defaults)").filter(visible=True).click()
    page.get_by_label("seed (empty = random)").filter(visible=True).fill("7")
    page.fill("#compare-input textarea", "Hãy giới thiệu ngắn gọn về vịnh Hạ Long.")
    page.click("#compare-run")
    assert wait_text(page, "#compare-status", "done|stopped") == "done · seed 7"
    page.wait_for_selector("#arena-vote-a:not([disabled])", timeout=30_000)  # active once both are done
    assert (label_of(page, "compare-answer-a"), label_of(page, "compare-answer-b")) == ("A", "B")
    for shown in ("#compare-status", "#arena-note", "#compare-stats-a", "#compare-stats-b"):
        assert "Tiny-Bloom" not in page.inner_text(shown), shown
    assert page.input_value("#compare-answer-a textarea") != page.input_value("#compare-answer-b textarea")
    assert not log.exists()  # nothing recorded before the vote
    shot(page, "arena-before-vote")

    page.click("#arena-vote-a")
    note = wait_text(page, "#arena-note", "A was", 60)
    found = re.search(r"A was (\S+), B was (\S+) \(blind\)", note)
    assert found, note
    a, b = found.groups()
    assert {a, b} == {TINY, TINY_CHAT} and "A is better" in note
    assert (label_of(page, "compare-answer-a"), label_of(page, "compare-answer-b")) == (f"A: {a}", f"B: {b}")
    for choice in ("a", "b", "tie", "bad"):  # one vote per comparison
        assert page.is_disabled(f"#arena-vote-{choice}"), choice

    assert log.exists(), (
        "no votes log in the app's runs folder: app.py must pass `runs` to build_compare_tab (see the report)"
    )
    (record,) = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert (record["a"], record["b"], record["vote"], record["blind"], record["seed"]) == (a, b, "a", True, 7)
    shown = page.input_value("#compare-answer-a textarea")  # a textarea turns \r and \r\n into \n
    assert re.sub(r"\r\n?", "\n", record["answer_a"]) == shown
    assert record["session"] and len(record["session"]) == 16

    page.get_by_text("Leaderboard (arena votes)").click()
    board = wait_text(page, "#arena-board", TINY_CHAT, 30)
    rows = board_rows(page.inner_text("#arena-board table"))
    assert set(rows) == {TINY, TINY_CHAT}, board
    assert rows[a][0] == "1" and rows[a][4:] == ["1", "1/0/0", "0"]  # the winner first, 1 game
    assert rows[b][0] == "2" and rows[b][4:] == ["1", "0/0/1", "0"]
    assert "Counting blind votes only" in board
    page.locator("#arena-leaderboard").scroll_into_view_if_needed()
    shot(page, "arena-after-vote")
