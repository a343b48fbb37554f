"""The Chat tab: talk to any variant, replies streamed token by token, Stop, Clear, settings, examples."""

from __future__ import annotations

import inspect

import gradio as gr

from ui.common import (
    Cancellations,
    check,
    default_variant,
    describe_variant,
    make_settings,
    prompt_problem,
    refusal,
    require_ready,
    session_of,
    settings_controls,
    settings_problems,
    unavailable_reason,
    variant_choices,
)
from ui.public import Guard
from ui.spaces import GPU_SECONDS, gpu
from vichat.errors import ViChatError
from vichat.generation import GenerationStats
from vichat.prompts import history_instruction
from vichat.registry import Registry

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
        if not isinstance(m, dict):
            continue
        if m.get("role") == "user":
            user = _text(m.get("content", ""))
        elif m.get("role") == "assistant" and user is not None:
            out.append((user, _text(m.get("content", ""))))
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


class ChatHandlers:
    """What the Chat tab's events call (plain methods, so tests call them without a browser)."""

    def __init__(self, registry: Registry, cancellations: Cancellations, guard: Guard | None = None) -> None:
        self.registry, self.cancellations, self.guard = registry, cancellations, guard or Guard()
        self.respond = gpu(self.respond, GPU_SECONDS["chat"])  # ZeroGPU: a GPU while it generates

    def validate(self, text, history, name, *values):
        return [
            check(prompt_problem(text)),
            check(history_problem(history)),
            check(unavailable_reason(self.registry, name)),
            *(check(m) for m in settings_problems(*values)),
        ]

    def respond(
        self, text, history, name, max_new_tokens, temperature, top_k, penalty, seed, request: gr.Request
    ):
        problem = history_problem(history)
        if problem:
            raise gr.Error(problem)
        history = list(history or [])
        settings_obj = make_settings(max_new_tokens, temperature, top_k, penalty, seed)
        require_ready(self.registry, name)
        try:
            instruction = history_instruction(pairs(history), text if isinstance(text, str) else "")
            prompt = self.registry.template(name).build(instruction)
            self.guard.limiter.take(session_of(request))
        except ViChatError as e:
            raise refusal(e) from None
        cancel = self.cancellations.new(f"{session_of(request)}:chat")
        history += [{"role": "user", "content": text.strip()}, {"role": "assistant", "content": ""}]
        stats = GenerationStats()
        yield history, "", "generating...", prompt
        try:
            for piece in self.registry.stream(name, instruction, settings_obj, cancel=cancel, stats=stats):
                history[-1]["content"] += piece
                yield history, "", f"{stats.new_tokens or ''} ...", prompt
        except ViChatError as e:
            raise refusal(e) from None
        yield history, "", format_stats(stats), prompt

    def stop(self, request: gr.Request):
        self.cancellations.cancel(f"{session_of(request)}:chat")


def history_problem(history) -> str | None:
    """Why a history handed over (by the page or an API caller) is unusable, or None."""
    if history is None:
        return None
    if not isinstance(history, list) or not all(
        isinstance(m, dict) and m.get("role") in ("user", "assistant", "system") and "content" in m
        for m in history
    ):
        return "the chat history must be a list of {role, content} messages: press Clear and start again"
    return None


def build_chat_tab(
    registry: Registry, cancellations: Cancellations, guard: Guard | None = None
) -> gr.Dropdown:
    """The Chat tab; returns its variant picker (refreshed when a new variant is registered)."""
    handlers = ChatHandlers(registry, cancellations, guard)
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

    inputs = [message, chatbot, variant, *settings]
    outputs = [chatbot, message, stats_md, prompt_box]
    common = {
        "validator": handlers.validate,
        "concurrency_id": "generate",
        "concurrency_limit": registry.max_batch,
    }
    ev1 = send.click(handlers.respond, inputs, outputs, api_name="chat", **common)
    ev2 = message.submit(handlers.respond, inputs, outputs, api_visibility="undocumented", **common)
    stop.click(handlers.stop, None, None, cancels=[ev1, ev2], queue=False)
    clear.click(lambda: ([], "", "", ""), None, [chatbot, message, stats_md, prompt_box], queue=False)
    variant.change(lambda name: describe_variant(registry, name), variant, info, queue=False)
    return variant
