"""The app in a real browser: headless Chromium against `python app.py` on 127.0.0.1.

The app serves the real Gemma default plus tiny BLOOM variants (see conftest): Chat uses Gemma (a real
Vietnamese reply); Compare, Judge and Train use the tiny variants so the suite stays in minutes on a CPU.
"""

import pytest

from vichat.paths import REPO_ROOT

pytestmark = [pytest.mark.browser, pytest.mark.slow]
SCREENSHOTS = REPO_ROOT / "runs" / "screenshots"
TINY, TINY_CHAT = "Tiny-Bloom", "Tiny-Bloom-Chat"


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def choose(page, label: str, option: str) -> None:
    """Pick ``option`` in the Gradio dropdown labelled ``label``."""
    box = page.get_by_label(label, exact=True)
    box.click()
    options = box.get_attribute("aria-controls")  # this dropdown's own list (others may still be open)
    page.locator(f"li[role=option][id^='{options}-'][aria-label='{option}']").filter(visible=True).click()


def wait_text(page, selector: str, pattern: str, timeout_s: float = 120) -> str:
    page.wait_for_function(
        "([sel, pat]) => { const e = document.querySelector(sel); return e && new RegExp(pat).test(e.innerText); }",
        arg=[selector, pattern],
        timeout=timeout_s * 1000,
    )
    return page.inner_text(selector)


def test_chat_streams_a_vietnamese_reply(page):
    assert "ready" in page.inner_text("#chat-variant-info")  # the chosen variant explained on load
    assert "Cuộc trò chuyện trước đó" in page.inner_text("#chat-rule")
    question = "Hà Nội có những món ăn nào nổi tiếng?"
    page.fill("#chat-input textarea", question)
    page.click("#chat-send")
    wait_text(page, "#chat-stats", "tokens/s", 180)
    conversation = page.inner_text("#chat-box [role=log]")
    assert question in conversation
    assert len(conversation.replace(question, "").strip()) > 10  # the streamed reply
    shot(page, "chat")


def test_the_doctor_answer_opens_with_the_emergency_notice(page):
    choose(page, "Variant", "Gemma-Doctor")
    wait_text(page, "#chat-variant-info", "ready", 120)
    question = "Bố tôi 60 tuổi, cứ leo cầu thang là tức ngực, lan ra tay trái. Có nên đợi đến sáng mai không?"
    page.fill("#chat-input textarea", question)
    page.click("#chat-send")
    wait_text(page, "#chat-stats", "tokens/s", 180)
    reply = page.inner_text("#chat-box [role=log]").split(question, 1)[1].strip()
    first = reply.split("\n", 1)[0]
    assert first.startswith("⚠") and "gọi ngay 115" in first  # the guard's notice, before the model's words
    assert "đến sáng" not in reply  # the model's own "wait until morning", if it wrote one, is gone
    shot(page, "chat-doctor")


def test_empty_prompt_shows_a_message_not_a_traceback(page):
    page.click("#chat-send")
    page.wait_for_selector(
        "text=the prompt is empty", timeout=120_000
    )  # behind a queued generation on a loaded machine
    assert "Traceback" not in page.content()


def test_chat_folds_earlier_turns_by_the_stated_rule(page):
    choose(page, "Variant", TINY_CHAT)
    wait_text(page, "#chat-variant-info", "tiny-bloom", 30)
    page.get_by_text("The prompt the model saw").click()
    for text in ("Thủ đô của Việt Nam là gì?", "Còn thành phố lớn nhất?"):
        page.fill("#chat-input textarea", text)
        page.click("#chat-send")
        page.wait_for_function(
            "t => document.querySelector('#chat-prompt textarea').value.includes(t)", arg=text, timeout=30_000
        )
        wait_text(page, "#chat-stats", "tokens/s")
    prompt = page.input_value("#chat-prompt textarea")
    assert prompt.startswith("Hãy viết một phản hồi thích hợp cho chỉ dẫn dưới đây.")
    assert "Cuộc trò chuyện trước đó:\nNgười dùng: Thủ đô của Việt Nam là gì?" in prompt
    assert "Câu hỏi hiện tại: Còn thành phố lớn nhất?\n### Response:" in prompt


def test_compare_shows_two_answers(page):
    open_tab(page, "Compare")
    choose(page, "Variant A", TINY)
    choose(page, "Variant B", TINY_CHAT)
    page.get_by_text("Generation settings (the paper's defaults)").filter(visible=True).click()
    page.get_by_label("seed (empty = random)").filter(visible=True).fill("7")  # tiny random models: fixed
    page.fill("#compare-input textarea", "Hãy giới thiệu ngắn gọn về vịnh Hạ Long.")
    page.click("#compare-run")
    status = wait_text(page, "#compare-status", "done|stopped")
    assert status == "done · seed 7"
    a, b = page.input_value("#compare-answer-a textarea"), page.input_value("#compare-answer-b textarea")
    assert a.strip() and b.strip() and a != b  # same seed and settings, different weights
    assert "tokens/s" in page.inner_text("#compare-stats-a") and "tokens/s" in page.inner_text(
        "#compare-stats-b"
    )
    shot(page, "compare")
    page.click("#compare-swap")
    page.wait_for_function(
        "v => document.querySelector('[aria-label=\"Variant A\"]').value === v", arg=TINY_CHAT, timeout=10_000
    )


def test_a_malformed_upload_shows_the_bad_line_numbers(page, tmp_path):
    upload = tmp_path / "bad.jsonl"
    upload.write_text(
        '{"prompt": "Xin chào", "response": "Chào bạn! Tôi có thể giúp gì?"}\n'
        "{not json}\n"
        '{"prompt": "Thiếu câu trả lời"}\n'
        '{"prompt": "Một cộng một bằng mấy?", "response": "Bằng hai.", "source": "upload"}\n'
        '["an", "array"]\n',
        encoding="utf-8",
    )
    open_tab(page, "Datasets")
    page.wait_for_selector("#datasets-table")
    from ui.datasets import dataset_files
    from vichat.data import read_jsonl

    first = next(iter(dataset_files(REPO_ROOT / "runs").values()))  # our sample data, shown on load
    n = len(read_jsonl(first).records)
    assert f"{n} of {n} records" in page.inner_text("#datasets-page")
    page.set_input_files("#datasets-upload input[type=file]", str(upload))
    errors = wait_text(page, "#datasets-errors", "bad line", 60)
    assert "3 bad lines" in errors
    assert "line 2: malformed JSON" in errors
    assert 'line 3: missing field "response"' in errors
    assert "line 5: expected a JSON object" in errors
    assert "2 of 2 records" in wait_text(page, "#datasets-page", "2 of 2 records")
    table = page.inner_text("#datasets-table")
    assert "Xin chào" in table and "Một cộng một bằng mấy?" in table
    assert "bad.jsonl: 2 samples" in page.inner_text("#datasets-stats")
    shot(page, "datasets")


def test_judge_without_a_key_shows_the_offline_scores(page):
    open_tab(page, "Judge")
    page.locator("#judge-variants [title=Clear]").click()
    for name in (TINY, TINY_CHAT):
        choose(page, "Variants (each is scored against the reference answers)", name)
    page.keyboard.press("Escape")
    assert page.locator("#judge-variants .token").all_inner_texts() == [TINY, TINY_CHAT]
    questions = page.get_by_label("number input for questions (the first N; CPU answers are slow)")
    questions.fill("3")
    questions.press("Enter")
    assert page.input_value("#judge-key input, #judge-key textarea") == ""
    page.click("#judge-run")
    # anchored: while the chain still runs, Gradio prefixes the status with "processing | 0.3s"
    status = wait_text(page, "#judge-status", r"^\s*(No API key: offline scores|\d+ calls)", 300)
    assert status.strip().startswith("No API key: offline scores")
    table = page.inner_text("#judge-table")
    assert "chrF Tiny-Bloom" in table and "chrF Tiny-Bloom-Chat" in table and "Total" in table
    page.wait_for_selector("#judge-bars", state="visible")
    shot(page, "judge")


def test_train_tab_trains_a_tiny_adapter_and_registers_it(page, app_files):
    open_tab(page, "Train")
    choose(page, "Preset", str(app_files["preset"]))
    page.wait_for_function(
        "() => document.querySelector('#train-name textarea').value === 'Tiny-Trained-demo'", timeout=10_000
    )
    page.fill("#train-name textarea", "Tiny-Trained-browser")
    page.click("#train-start")
    status = wait_text(page, "#train-status", "Finished|failed|Stopped", 300)
    assert "Finished: Tiny-Trained-browser" in status, page.input_value("#train-log textarea")
    shot(page, "train")
    open_tab(page, "Chat")
    choose(page, "Variant", "Tiny-Trained-browser")  # the new variant is offered in Chat
    wait_text(page, "#chat-variant-info", "trained in the app", 30)
