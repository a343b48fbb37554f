"""The Chat tab's retry, undo, edit, thumbs, export and import, called as handlers on the tiny models.

Every answer the handlers produce is checked against the registry itself: the seed recorded with an answer
must reproduce it, so a wrong seed (or settings) in the record cannot pass.
"""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import pytest

from ui.chat import SEED_MAX, ChatHandlers, Exports, conversation_markdown, hashed
from ui.common import Cancellations
from ui.public import Guard, Policy
from vichat.generation import GenerationSettings

SAMPLE = (8, 0.7, 20, 1.2)  # max new tokens, temperature, top-k, penalty: sampling, so the seed matters
Q1, Q2 = "Thủ đô của Việt Nam là gì?", "Còn thành phố lớn nhất?"


def req(session: str = "s") -> gr.Request:
    return gr.Request(session_hash=session)


@pytest.fixture()
def chat(tiny_registry, tmp_path) -> ChatHandlers:
    return ChatHandlers(
        tiny_registry, Cancellations(), runs=tmp_path / "runs", exports=Exports(tmp_path / "exports")
    )


def last(steps):
    out = None
    for out in steps:  # noqa: B007 (the last step is the result)
        pass
    return out


def say(chat, text, history=(), turns=(), seed=None, variant="bloom-chat", session="s"):
    """One Send: (history, turns, stats) after the answer."""
    history, _, stats, _, turns = last(
        chat.respond(text, list(history), variant, *SAMPLE, seed, req(session), list(turns))
    )
    return history, turns, stats


def reproduces(registry, answer: str, made_by: dict, instruction: str) -> bool:
    settings = GenerationSettings(**made_by["settings"], seed=made_by["seed"])
    return registry.generate(made_by["variant"], instruction, settings) == answer.strip()


def retry_event(history) -> gr.RetryData:
    index = max(i for i, m in enumerate(history) if m["role"] == "user")
    return gr.RetryData(None, {"index": index, "value": history[index]["content"]})


# ---------------------------------------------------------------------------------------- provenance


def test_each_answer_records_the_variant_settings_and_a_seed_that_reproduces_it(chat, tiny_registry):
    history, turns, stats = say(chat, Q1)
    assert [m["role"] for m in history] == ["user", "assistant"] and turns[0] is None
    made_by = turns[1]
    assert made_by["variant"] == "bloom-chat" and isinstance(
        made_by["seed"], int
    )  # drawn: the field was empty
    assert made_by["settings"] == {"max_new_tokens": 8, "temperature": 0.7, "top_k": 20, "top_p": 1.0,
                                   "repetition_penalty": 1.2}  # fmt: skip
    assert stats.endswith(f"· seed {made_by['seed']}") and "tokens/s" in stats
    assert reproduces(tiny_registry, history[1]["content"], made_by, Q1)
    history, turns, _ = say(chat, Q2, history, turns, seed=5)
    assert len(turns) == 4 and turns[3]["seed"] == 5 and turns[3]["instruction"].startswith("Cuộc trò chuyện")


def test_the_validator_takes_the_turns_state_too(chat):
    checks = chat.validate(Q1, [], "bloom-chat", *SAMPLE, None, [])
    assert len(checks) == 9 and all(c["is_valid"] for c in checks)
    assert not chat.validate("", [], "bloom-chat", *SAMPLE, None, [])[0]["is_valid"]


# --------------------------------------------------------------------------------------------- retry


def test_retry_with_an_empty_seed_draws_a_new_one_and_replaces_the_last_answer(chat, tiny_registry):
    history, turns, _ = say(chat, Q1)
    history, turns, _ = say(chat, Q2, history, turns)
    seeds, first = {turns[3]["seed"]}, history[1]["content"]
    for _ in range(2):
        steps = list(chat.retry(history, "bloom-chat", *SAMPLE, None, turns, req(), retry_event(history)))
        history, stats, prompt, turns, seed_update, note = steps[-1]
        assert [m["content"] for m in history[:3]] == [Q1, first, Q2] and len(history) == 4
        assert seed_update == gr.skip() and "new seed" in note
        assert "Câu hỏi hiện tại: Còn thành phố lớn nhất?" in prompt  # the earlier turn is still folded in
        assert reproduces(tiny_registry, history[3]["content"], turns[3], turns[3]["instruction"])
        seeds.add(turns[3]["seed"])
    assert len(seeds) == 3 and len(turns) == 4


def test_retry_with_a_fixed_seed_moves_it_on_by_one(chat, tiny_registry):
    history, turns, _ = say(chat, Q1, seed=7)
    history, stats, _, turns, seed_update, note = last(
        chat.retry(history, "bloom-chat", *SAMPLE, 7, turns, req(), retry_event(history))
    )
    assert seed_update == gr.update(value=8) and "seed 7 → 8" in note and turns[1]["seed"] == 8
    assert stats.endswith("· seed 8") and reproduces(tiny_registry, history[1]["content"], turns[1], Q1)
    *_, seed_update, _ = last(
        chat.retry(history, "bloom-chat", *SAMPLE, SEED_MAX, turns, req(), retry_event(history))
    )
    assert seed_update == gr.update(value=0)  # wraps at the top of the range


def test_retry_at_temperature_zero_says_the_answer_will_not_change(chat):
    history, turns, _ = say(chat, Q1)
    greedy = (8, 0.0, 20, 1.2, None)
    *_, note = last(chat.retry(history, "bloom-chat", *greedy, turns, req(), retry_event(history)))
    assert "greedy" in note


def test_retry_and_edit_keep_the_public_rate_limit(tiny_registry, tmp_path):
    guard = Guard(Policy(public=True, generations_per_minute=1))
    chat = ChatHandlers(tiny_registry, Cancellations(), guard, tmp_path, Exports(tmp_path / "x"))
    history, turns, _ = say(chat, Q1, session="v")
    with pytest.raises(gr.Error, match="rate limit"):
        next(chat.retry(history, "bloom-chat", *SAMPLE, None, turns, req("v"), retry_event(history)))
    edited = [{"role": "user", "content": "Sửa lại"}, history[1]]
    evt = gr.EditData(None, {"index": 0, "value": "Sửa lại", "previous_value": Q1})
    steps = chat.edit(edited, "bloom-chat", *SAMPLE, None, turns, req("v"), evt)
    restored = next(steps)  # the page had already changed the message: it goes back as it was
    assert restored[0] == history and restored[3] == turns and "not sent" in restored[4]
    with pytest.raises(gr.Error, match="rate limit"):
        next(steps)


def test_retry_on_something_that_is_not_a_user_message_is_a_message(chat):
    history, turns, _ = say(chat, Q1)
    for index in (1, 5, -1, None, "0"):
        evt = gr.RetryData(None, {"index": index, "value": ""})
        with pytest.raises(gr.Error, match="nothing to retry"):
            next(chat.retry(history, "bloom-chat", *SAMPLE, None, turns, req(), evt))
    with pytest.raises(gr.Error, match="history"):
        next(chat.retry("nope", "bloom-chat", *SAMPLE, None, turns, req(), retry_event(history)))


# ----------------------------------------------------------------------------------------- undo, edit


def test_undo_removes_the_last_exchange_and_gives_the_question_back(chat):
    history, turns, _ = say(chat, Q1)
    history, turns, _ = say(chat, Q2, history, turns)
    evt = gr.UndoData(None, {"index": 2, "value": Q2})
    undone, kept, box, stats, prompt, note = chat.undo(history, turns, evt)
    assert undone == history[:2] and kept == turns[:2] and box == Q2 and "Undone" in note
    with pytest.raises(gr.Error, match="nothing to undo"):
        chat.undo([], [], gr.UndoData(None, {"index": 0, "value": ""}))


def test_editing_a_user_message_drops_what_followed_and_answers_it(chat, tiny_registry):
    history, turns, _ = say(chat, Q1)
    history, turns, _ = say(chat, Q2, history, turns)
    new = "Hà Nội có gì đẹp?"
    edited = [{"role": "user", "content": new}, *history[1:]]  # as the page hands it over
    evt = gr.EditData(None, {"index": 0, "value": new, "previous_value": Q1})
    history2, stats, prompt, turns2, note = last(
        chat.edit(edited, "bloom-chat", *SAMPLE, 3, turns, req(), evt)
    )
    assert [m["role"] for m in history2] == ["user", "assistant"] and history2[0]["content"] == new
    assert len(turns2) == 2 and turns2[1]["seed"] == 3 and "Edited" in note
    assert "Cuộc trò chuyện" not in prompt  # the dropped turns are gone from the prompt too
    assert reproduces(tiny_registry, history2[1]["content"], turns2[1], new)


def test_an_empty_edit_puts_the_message_back(chat):
    history, turns, _ = say(chat, Q1)
    edited = [{"role": "user", "content": "  "}, history[1]]
    evt = gr.EditData(None, {"index": 0, "value": "  ", "previous_value": Q1})
    steps = chat.edit(edited, "bloom-chat", *SAMPLE, None, turns, req(), evt)
    assert next(steps)[0] == history
    with pytest.raises(gr.Error, match="the edited message: the prompt is empty"):
        next(steps)


# ------------------------------------------------------------------------------------------- feedback


def test_thumbs_are_logged_as_jsonl_with_what_produced_the_answer(chat, tmp_path):
    history, turns, _ = say(chat, Q1, session="browser-session-1")
    history, turns, _ = say(chat, Q2, history, turns, seed=11, session="browser-session-1")
    assert not (tmp_path / "runs" / "chat").exists()  # nothing written until someone rates
    note = chat.like(
        history, turns, req("browser-session-1"), gr.LikeData(None, {"index": 3, "value": [], "liked": False})
    )
    assert "thumbs down recorded" in note
    chat.like(
        history, turns, req("browser-session-1"), gr.LikeData(None, {"index": 1, "value": [], "liked": True})
    )
    lines = (tmp_path / "runs" / "chat" / "feedback.jsonl").read_text(encoding="utf-8").splitlines()
    first, second = (json.loads(line) for line in lines)
    assert first["liked"] is False and second["liked"] is True
    assert first["session"] == hashed("browser-session-1") and "browser-session-1" not in lines[0]
    assert (first["variant"], first["seed"], first["settings"]["temperature"]) == ("bloom-chat", 11, 0.7)
    assert first["prompt"] == Q2 and first["history"] == [[Q1, history[1]["content"]]]
    assert first["answer"] == history[3]["content"] and first["instruction"] == turns[3]["instruction"]
    assert second["history"] == [] and second["prompt"] == Q1 and first["time"].endswith("+00:00")


def test_feedback_on_a_question_is_refused_and_public_clicks_are_limited(tiny_registry, tmp_path):
    guard = Guard(Policy(public=True, generations_per_minute=1))
    chat = ChatHandlers(tiny_registry, Cancellations(), guard, tmp_path, Exports(tmp_path / "x"))
    history, turns, _ = say(chat, Q1, session="v")
    with pytest.raises(gr.Error, match="feedback goes on an answer"):
        chat.like(history, turns, req("v"), gr.LikeData(None, {"index": 0, "value": [], "liked": True}))
    like = gr.LikeData(None, {"index": 1, "value": [], "liked": True})
    for _ in range(5):  # five clicks a minute per generation allowed
        chat.like(history, turns, req("v"), like)
    with pytest.raises(gr.Error, match="rate limit: .* feedback clicks"):
        chat.like(history, turns, req("v"), like)
    assert len((tmp_path / "chat" / "feedback.jsonl").read_text(encoding="utf-8").splitlines()) == 5


# ------------------------------------------------------------------------------------ export, import


def test_export_then_import_gives_back_the_same_conversation(chat, tmp_path):
    history, turns, _ = say(chat, Q1)
    history, turns, _ = say(chat, Q2, history, turns, seed=9)
    jsonl, md = chat.downloads(history, turns, req())
    assert (
        jsonl["interactive"] and md["interactive"] and md["label"] == "⬇ Conversation (Markdown · 4 messages)"
    )
    lines = [json.loads(line) for line in Path(jsonl["value"]).read_text(encoding="utf-8").splitlines()]
    assert [r["role"] for r in lines] == ["user", "assistant", "user", "assistant"]
    assert lines[0] == {"role": "user", "content": Q1}
    assert lines[3] == {"role": "assistant", "content": history[3]["content"], "variant": "bloom-chat",
                        "settings": turns[3]["settings"], "seed": 9}  # fmt: skip
    text = Path(md["value"]).read_text(encoding="utf-8")
    assert text.startswith("# ViChat conversation") and "**bloom-chat** · seed 9 · max_new_tokens 8" in text
    assert Q1 in text and history[3]["content"].strip() in text
    back, back_turns, box, _, _, note = chat.import_conversation(jsonl["value"], req("other"))
    assert back == [{"role": m["role"], "content": m["content"]} for m in history] and box == ""
    assert [t and t["seed"] for t in back_turns] == [None, turns[1]["seed"], None, 9]
    assert note.startswith(f"Imported {Path(jsonl['value']).name}: 2 exchanges")
    # and the imported conversation continues: its turns fold into the next prompt
    _, _, _, prompt, _ = last(
        chat.respond("Và con sông nào?", back, "bloom-chat", *SAMPLE, None, req(), back_turns)
    )
    assert f"Người dùng: {Q1}" in prompt and f"Người dùng: {Q2}" in prompt


def test_an_empty_conversation_offers_no_download_and_a_closed_session_leaves_no_files(chat, tmp_path):
    off = [
        gr.update(value=None, interactive=False, label=f"⬇ Conversation ({k})") for k in ("JSONL", "Markdown")
    ]
    assert list(chat.downloads([], [], req())) == off
    history, turns, _ = say(chat, Q1, session="gone")
    jsonl, _ = chat.downloads(history, turns, req("gone"))
    assert Path(jsonl["value"]).is_file()
    chat.guard.close_session("gone")
    assert not Path(jsonl["value"]).parent.exists()


def test_a_last_question_without_an_answer_goes_into_the_message_box(chat, tmp_path):
    path = tmp_path / "open.jsonl"
    rows = [
        {"role": "user", "content": Q1},
        {"role": "assistant", "content": "Hà Nội."},
        {"role": "user", "content": Q2},
    ]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    history, turns, box, _, _, note = chat.import_conversation(str(path), req())
    assert len(history) == 2 and turns == [None, None] and box == Q2 and "message box" in note


BAD_IMPORTS = {
    "malformed": ('{"role": "user", "content": "a"}\n{"role": "assistant", "content": \n', ["line 2: "]),
    "wrong_role": ('{"role": "user", "content": "a"}\n{"role": "system", "content": "b"}\n',
                   ['line 2: role must be "user" or "assistant", got \'system\'']),
    "two_users": ('{"role": "user", "content": "a"}\n{"role": "user", "content": "b"}\n',
                  ['line 2: a second "user" message in a row (after line 1): turns must alternate']),
    "starts_with_answer": ('{"role": "assistant", "content": "a"}\n{"role": "user", "content": "b"}\n',
                           ["1 problem", "line 1: the conversation must start with a user message"]),
    "two_answers": ('{"role": "user", "content": "a"}\n{"role": "assistant", "content": "b"}\n'
                    '{"role": "assistant", "content": "c"}\n', ['line 3: a second "assistant" message in a row']),
    "no_role": ('{"content": "a"}\n', ['line 1: missing field "role"']),
    "number_content": ('{"role": "user", "content": 5}\n', ['line 1: field "content" must be a string']),
    "empty_question": ('{"role": "user", "content": "  "}\n', ["line 1: the user message: the prompt is empty"]),
    "huge_question": (json.dumps({"role": "user", "content": "x" * 20_000}) + "\n", ["line 1: the user message: ",
                                                                                    "16,000"]),
    "bad_seed": ('{"role": "user", "content": "a"}\n{"role": "assistant", "content": "b", "seed": -1}\n',
                 ["line 2: seed must be a whole number"]),
    "not_object": ('["role", "user"]\n{"role": "user", "content": "a"}\n', ["line 1: expected a JSON object"]),
    "empty": ("", ["no messages"]),
    "prompt_response": ('{"prompt": "a", "response": "b"}\n', ['line 1: missing field "role"']),
}  # fmt: skip


@pytest.mark.parametrize("name", list(BAD_IMPORTS))
def test_a_bad_import_lists_its_problems_by_line_and_changes_nothing(chat, tmp_path, name):
    text, expected = BAD_IMPORTS[name]
    path = tmp_path / f"{name}.jsonl"
    path.write_text(text, encoding="utf-8")
    *outputs, note = chat.import_conversation(str(path), req())
    assert outputs == [gr.skip()] * 5  # the conversation on screen stays as it was
    assert note.startswith(f"**{name}.jsonl: not imported**"), note
    for part in expected:
        assert part in note, note
    assert "Traceback" not in note


def test_a_utf16_file_and_a_missing_upload_get_a_message(chat, tmp_path):
    path = tmp_path / "utf16.jsonl"
    path.write_bytes('{"role": "user", "content": "a"}\n'.encode("utf-16"))
    assert "UTF-16" in chat.import_conversation(str(path), req())[-1]
    assert "gone" in chat.import_conversation(str(tmp_path / "nope.jsonl"), req())[-1]
    for value in (None, "", 5):
        assert "choose a .jsonl file" in chat.import_conversation(value, req())[-1]


def test_public_imports_are_bounded_and_only_from_the_upload_folder(tiny_registry, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    uploads = tmp_path / "gradio" / "abc123"
    uploads.mkdir(parents=True)
    rows = "".join(
        json.dumps({"role": r, "content": f"{r} {i}"}) + "\n" for i in range(3) for r in ("user", "assistant")
    )
    inside, outside = uploads / "chat.jsonl", tmp_path / "chat.jsonl"
    for path in (inside, outside):
        path.write_text(rows, encoding="utf-8")
    policy = Policy(public=True, max_upload_bytes=10_000, max_upload_rows=4, generations_per_minute=12)
    chat = ChatHandlers(tiny_registry, Cancellations(), Guard(policy), tmp_path, Exports(tmp_path / "x"))
    assert "only a file uploaded here" in chat.import_conversation(str(outside), req("v"))[-1]
    note = chat.import_conversation(str(inside), req("v"))[-1]
    assert "not imported" in note and "6 lines; uploads here are limited to 4" in note
    small = Policy(public=True, max_upload_bytes=100, generations_per_minute=12)
    chat = ChatHandlers(tiny_registry, Cancellations(), Guard(small), tmp_path, Exports(tmp_path / "x"))
    assert "uploads here are limited to" in chat.import_conversation(str(inside), req("v"))[-1]
    chat.guard.close_session("v")  # the session's upload is deleted with it
    assert not inside.exists() and outside.exists()


def test_the_markdown_export_says_when_an_answer_was_stopped():
    text = conversation_markdown([{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}])
    assert "**You**" in text and "**Assistant**" in text and "_(no answer: stopped)_" in text


def test_the_chat_api_is_unchanged_and_the_new_events_are_private(tiny_registry, tmp_path):
    from app import build_app

    info = build_app(tiny_registry, tmp_path / "runs").get_api_info()
    chat = info["named_endpoints"]["/chat"]
    assert [p["parameter_name"] for p in chat["parameters"]] == [
        "text", "history", "name", "max_new_tokens", "temperature", "top_k", "penalty", "seed"
    ]  # fmt: skip
    assert [r["component"] for r in chat["returns"]] == ["Chatbot", "Textbox", "Markdown", "Textbox"]
    assert not any(name in str(info) for name in ("retry", "undo", "edit", "like", "import_conversation"))
