"""The Chat tab: talk to any variant, replies streamed token by token, Stop, Clear, settings, examples."""

from __future__ import annotations

import gradio as gr

from vichat.errors import ViChatError
from vichat.generation import GenerationStats
from vichat.prompts import history_instruction
from vichat.registry import Registry
from vichat.ui.common import Cancellations, default_variant, make_settings, settings_controls, variant_choices

EXAMPLES_CHAT = [
    "Hãy giới thiệu ngắn gọn về vịnh Hạ Long.",
    "Viết một bài thơ lục bát bốn câu về mùa thu Hà Nội.",
    "Làm thế nào để quản lý thời gian hiệu quả khi vừa học vừa làm?",
]
EXAMPLES_DOCTOR = [
    "Chào bác sĩ, tôi 30 tuổi, bị ho khan và đau họng ba ngày nay, không sốt. Tôi nên làm gì?",
    "Con tôi 2 tuổi sốt 38,5 độ từ tối qua, vẫn chơi và bú được. Khi nào tôi cần đưa cháu đi khám?",
]


def pairs(history: list[dict]) -> list[tuple[str, str]]:
    """(user, assistant) turns from Gradio's messages-format history."""
    out, user = [], None
    for m in history:
        if m["role"] == "user":
            user = m["content"] if isinstance(m["content"], str) else str(m["content"])
        elif m["role"] == "assistant" and user is not None:
            out.append((user, m["content"] if isinstance(m["content"], str) else str(m["content"])))
            user = None
    return out


def format_stats(stats: GenerationStats) -> str:
    if not stats.new_tokens:
        return ""
    return (
        f"{stats.new_tokens} tokens · first token after {stats.first_token_s or 0:.2f} s · "
        f"{stats.tokens_per_s:.1f} tokens/s · stopped by {stats.stopped_by}"
    )


def build_chat_tab(registry: Registry, cancellations: Cancellations) -> None:
    with gr.Row():
        variant = gr.Dropdown(
            variant_choices(registry), value=default_variant(registry), label="Variant", scale=3
        )
        info = gr.Markdown(elem_id="chat-variant-info")
    chatbot = gr.Chatbot(label="ViChat", height=420, elem_id="chat-box")
    with gr.Row():
        message = gr.Textbox(
            placeholder="Nhập câu hỏi bằng tiếng Việt...", show_label=False, scale=6, elem_id="chat-input"
        )
        send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
        stop = gr.Button("Stop", scale=1, elem_id="chat-stop")
        clear = gr.Button("Clear", scale=1)
    stats_md = gr.Markdown(elem_id="chat-stats")
    settings = settings_controls()
    gr.Examples(EXAMPLES_CHAT + EXAMPLES_DOCTOR, inputs=message, label="Examples (Chat, then Doctor)")

    def describe(name: str) -> str:
        v = registry.variant(name)
        a = registry.availability(name)
        status = "ready" if a.ok else f"**unavailable**: {a.reason}"
        return f"{v.description} · template `{v.template}` · {status}"

    def respond(text, history, name, max_new_tokens, temperature, top_k, penalty, seed, request: gr.Request):
        history = list(history or [])
        try:
            settings_obj = make_settings(max_new_tokens, temperature, top_k, penalty, seed)
            instruction = history_instruction(pairs(history), text or "")
            registry.variant(name)
        except ViChatError as e:
            raise gr.Error(str(e)) from None
        key = f"{request.session_hash}:chat"
        cancel = cancellations.new(key)
        history += [{"role": "user", "content": text.strip()}, {"role": "assistant", "content": ""}]
        stats = GenerationStats()
        yield history, "", "generating..."
        try:
            for piece in registry.stream(name, instruction, settings_obj, cancel=cancel, stats=stats):
                history[-1]["content"] += piece
                yield history, "", f"{stats.new_tokens or ''} ..."
        except ViChatError as e:
            raise gr.Error(str(e)) from None
        yield history, "", format_stats(stats)

    def stop_fn(request: gr.Request):
        cancellations.cancel(f"{request.session_hash}:chat")

    inputs = [message, chatbot, variant, *settings]
    outputs = [chatbot, message, stats_md]
    ev1 = send.click(respond, inputs, outputs, concurrency_id="generate")
    ev2 = message.submit(respond, inputs, outputs, concurrency_id="generate")
    stop.click(stop_fn, None, None, cancels=[ev1, ev2], queue=False)
    clear.click(lambda: ([], "", ""), None, [chatbot, message, stats_md], queue=False)
    variant.change(describe, variant, info, queue=False)
