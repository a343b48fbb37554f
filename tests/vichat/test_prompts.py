import pytest

from vichat.errors import PromptError, ViChatError
from vichat.prompts import MAX_PROMPT_CHARS, get_template, held_back, history_instruction, template_names


def test_paper_templates_exact_text():
    chat = get_template("chat").build("Xin chào")
    assert chat == (
        "Hãy viết một phản hồi thích hợp cho chỉ dẫn dưới đây.\n### Instruction:\nXin chào\n### Response:\n"
    )
    doctor = get_template("doctor").build("Tôi bị ho")
    assert doctor.startswith(
        "Nếu bạn là bác sĩ, vui lòng trả lời các câu hỏi y tế dựa trên mô tả của bệnh nhân.\n"
    )
    assert doctor.endswith("### Instruction:\nTôi bị ho\n### Response:\n")
    assert template_names() == ["chat", "doctor"]


def test_cut_response_at_new_instruction():
    t = get_template("chat")
    assert t.cut_response(" Hà Nội.\n### Instruction:\nthêm") == "Hà Nội."
    assert t.cut_response("Không có dấu dừng  ") == "Không có dấu dừng"


@pytest.mark.parametrize("bad", ["", "   \n", None])
def test_empty_prompt_is_a_clear_error(bad):
    with pytest.raises(PromptError, match="empty|text"):
        get_template("chat").build(bad)


def test_huge_prompt_is_a_clear_error():
    with pytest.raises(PromptError, match="characters long"):
        get_template("chat").build("a" * (MAX_PROMPT_CHARS + 1))


def test_unknown_template():
    with pytest.raises(ViChatError, match="known: chat, doctor"):
        get_template("pirate")


def test_held_back_keeps_possible_stop_prefix():
    stops = ("### Instruction:",)
    assert held_back("xin chào\n###", stops) == 3
    assert held_back("xin chào", stops) == 0


def test_history_rule_oldest_dropped_first():
    history = [("câu một", "đáp một"), ("câu hai", "đáp hai")]
    text = history_instruction(history, "câu ba")
    assert text.index("câu một") < text.index("câu hai") < text.index("Câu hỏi hiện tại: câu ba")
    short = history_instruction(history, "câu ba", max_chars=40)
    assert "câu một" not in short and "câu hai" in short
    assert history_instruction([], "chỉ một câu") == "chỉ một câu"
