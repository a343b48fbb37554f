"""The Chat tab: talk to any variant, replies streamed token by token, Stop, Clear, settings, examples."""

from __future__ import annotations

import inspect

import gradio as gr

from vichat.errors import ViChatError
from vichat.generation import GenerationStats
from vichat.prompts import history_instruction
from vichat.registry import Registry
from vichat.ui.common import (
    Cancellations,
    check,
    default_variant,
    describe_variant,
    make_settings,
    prompt_problem,
    require_ready,
    settings_controls,
    settings_problems,
    unavailable_reason,
    variant_choices,
)

EXAMPLES_CHAT = [
    "Hãy giới thiệu ngắn gọn về vịnh Hạ Long.",
    "Viết một bài thơ lục bát bốn câu về mùa thu Hà Nội.",
    "Làm thế nào để quản lý thời gian hiệu quả khi vừa học vừa làm?",
]
EXAMPLES_DOCTOR = [
    "Chào bác sĩ, tôi 30 tuổi, bị ho khan và đau họng ba ngày nay, không sốt. Tôi nên làm gì?",
    "Con tôi 2 tuổi sốt 38,5 độ từ tối qua, vẫn chơi và bú được. Khi nào tôi cần đưa cháu đi khám?",
]


def history_rule() -> str:
    """The multi-turn rule of vichat.prompts.history_instruction, in one sentence."""
    limit = inspect.signature(history_instruction).parameters["max_chars"].default
    return (
        "Multi-turn: the paper's template takes one instruction, so earlier turns are folded into it "
        '(under "Cuộc trò chuyện trước đó:", newest kept, oldest dropped beyond '
        f'{limit:,} characters) and your new message comes last after "Câu hỏi hiện tại:".'
    )


def pairs(history: list[dict]) -> list[tuple[str, str]]:
    """(user, assistant) turns from Gradio's messages-format history."""
    out, user = [], None
    for m in history:
        if m["role"] == "user":
            user = _text(m["content"])
        elif m["role"] == "assistant" and user is not None:
            out.append((user, _text(m["content"])))
            user = None
    return out


def _text(content) -> str:
    """Message text; Gradio 6 may hand content back as a list of {"type": "text", "text": ...} parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(_text(part) for part in content)
    if isinstance(content, dict):
        return str(content.get("text", ""))
    return str(content)


def format_stats(stats: GenerationStats) -> str:
    if not stats.new_tokens:
        return ""
    return (
        f"{stats.new_tokens} tokens · first token after {stats.first_token_s or 0:.2f} s · "
        f"{stats.tokens_per_s:.1f} tokens/s · stopped by {stats.stopped_by}"
    )


def build_chat_tab(registry: Registry, cancellations: Cancellations) -> gr.Dropdown:
    """The Chat tab; returns its variant picker (refreshed when a new variant is registered)."""
    start = default_variant(registry)
    with gr.Row():
        variant = gr.Dropdown(variant_choices(registry), value=start, label="Variant", scale=3)
        info = gr.Markdown(describe_variant(registry, start), elem_id="chat-variant-info")
    chatbot = gr.Chatbot(label="ViChat", height=420, elem_id="chat-box")
    gr.Markdown(history_rule(), elem_id="chat-rule")
    with gr.Row():
        message = gr.Textbox(
            label="Message",
            placeholder="Nhập câu hỏi bằng tiếng Việt...",
            show_label=False,
            scale=6,
            elem_id="chat-input",
        )
        send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
        stop = gr.Button("Stop", scale=1, elem_id="chat-stop")
        clear = gr.Button("Clear", scale=1)
    stats_md = gr.Markdown(elem_id="chat-stats")
    settings = settings_controls()
    with gr.Accordion("The prompt the model saw (template + folded history)", open=False):
        prompt_box = gr.Textbox(show_label=False, lines=6, interactive=False, elem_id="chat-prompt")
    gr.Examples(EXAMPLES_CHAT + EXAMPLES_DOCTOR, inputs=message, label="Examples (Chat, then Doctor)")

    def validate(text, history, name, *values):
        return [
            check(prompt_problem(text)),
            check(None),
            check(unavailable_reason(registry, name)),
            *(check(m) for m in settings_problems(*values)),
        ]

    def respond(text, history, name, max_new_tokens, temperature, top_k, penalty, seed, request: gr.Request):
        history = list(history or [])
        settings_obj = make_settings(max_new_tokens, temperature, top_k, penalty, seed)
        require_ready(registry, name)
        try:
            instruction = history_instruction(pairs(history), text or "")
            prompt = registry.template(name).build(instruction)
        except ViChatError as e:
            raise gr.Error(str(e)) from None
        cancel = cancellations.new(f"{request.session_hash}:chat")
        history += [{"role": "user", "content": text.strip()}, {"role": "assistant", "content": ""}]
        stats = GenerationStats()
        yield history, "", "generating...", prompt
        try:
            for piece in registry.stream(name, instruction, settings_obj, cancel=cancel, stats=stats):
                history[-1]["content"] += piece
                yield history, "", f"{stats.new_tokens or ''} ...", prompt
        except ViChatError as e:
            raise gr.Error(str(e)) from None
        yield history, "", format_stats(stats), prompt

    def stop_fn(request: gr.Request):
        cancellations.cancel(f"{request.session_hash}:chat")

    inputs = [message, chatbot, variant, *settings]
    outputs = [chatbot, message, stats_md, prompt_box]
    common = {"validator": validate, "concurrency_id": "generate"}
    ev1 = send.click(respond, inputs, outputs, api_name="chat", **common)
    ev2 = message.submit(respond, inputs, outputs, api_visibility="undocumented", **common)
    stop.click(stop_fn, None, None, cancels=[ev1, ev2], queue=False)
    clear.click(lambda: ([], "", "", ""), None, [chatbot, message, stats_md, prompt_box], queue=False)
    variant.change(lambda name: describe_variant(registry, name), variant, info, queue=False)
    return variant
