"""The Compare tab: one prompt, two variants side by side, same seed and settings, streamed one after the other.

The registry serves every variant of a base from one copy of its weights and holds that base for a whole
generation, so the two answers are generated in turn (A, then B) in one event: never two streams open at
once, which could deadlock two users comparing the same pair in opposite orders.
"""

from __future__ import annotations

import random

import gradio as gr

from ui.chat import EXAMPLES_CHAT, EXAMPLES_DOCTOR, format_stats
from ui.common import (
    Cancellations,
    check,
    default_pair,
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
from vichat.prompts import check_instruction
from vichat.registry import Registry

HOW = (
    "Both answers use the same seed and settings. They stream **one after the other** (A, then B): "
    "variants of one base share its weights, which serve one generation at a time."
)


def pair_problem(a: str | None, b: str | None) -> str | None:
    if a and a == b:
        return "pick two different variants (the same variant with the same seed gives the same answer)"
    return None


def answer_box(side: str, name: str) -> gr.Textbox:
    return gr.Textbox(
        label=f"{side}: {name}",
        lines=12,
        max_lines=24,
        interactive=False,
        buttons=["copy"],
        elem_id=f"compare-answer-{side.lower()}",
    )


class CompareHandlers:
    """What the Compare tab's events call (plain methods, so tests call them without a browser)."""

    def __init__(self, registry: Registry, cancellations: Cancellations, guard: Guard | None = None) -> None:
        self.registry, self.cancellations, self.guard = registry, cancellations, guard or Guard()
        self.compare = gpu(self.compare, GPU_SECONDS["compare"])  # ZeroGPU: a GPU for both answers

    def validate(self, text, a, b, *values):
        return [
            check(prompt_problem(text)),
            check(unavailable_reason(self.registry, a)),
            check(unavailable_reason(self.registry, b) or pair_problem(a, b)),
            *(check(m) for m in settings_problems(*values)),
        ]

    def compare(self, text, a, b, max_new_tokens, temperature, top_k, penalty, seed, request: gr.Request):
        registry = self.registry
        settings_obj = make_settings(max_new_tokens, temperature, top_k, penalty, seed)
        if settings_obj.seed is None:  # one seed for both sides, shown so the pair can be rerun
            settings_obj = settings_obj.with_(seed=random.randrange(2**31))
        require_ready(registry, a)
        require_ready(registry, b)
        if pair_problem(a, b):
            raise gr.Error(pair_problem(a, b))
        try:
            instruction = check_instruction(text if isinstance(text, str) else "")
            self.guard.limiter.take(session_of(request), cost=2)
        except ViChatError as e:
            raise refusal(e) from None
        # one event per side: a stream sets its own event when it meets a stop marker; Stop sets both
        cancels = [self.cancellations.new(f"{session_of(request)}:compare:{side}") for side in "ab"]
        texts, stats = ["", ""], [GenerationStats(), GenerationStats()]
        seed_note = f"seed {settings_obj.seed}"

        def view(note: str):
            return (
                gr.update(value=texts[0], label=f"A: {a}"),
                gr.update(value=texts[1], label=f"B: {b}"),
                format_stats(stats[0]),
                format_stats(stats[1]),
                note,
            )

        yield view(f"A ({a}) and B ({b}) generating… {seed_note}")
        try:  # both sides at once: on one fast base they decode in the same batch
            for i, piece in registry.stream_together(
                [(a, instruction), (b, instruction)], settings_obj, cancels=cancels, stats=stats
            ):
                texts[i] += piece
                counts = " / ".join(str(s.new_tokens) for s in stats)
                yield view(f"A ({a}) and B ({b}) generating… {counts} tokens · {seed_note}")
        except ViChatError as e:
            raise gr.Error(str(e)) from None
        stopped = any(s.stopped_by == "cancelled" for s in stats)
        yield view(f"{'stopped' if stopped else 'done'} · {seed_note}")

    def stop(self, request: gr.Request):
        self.cancellations.cancel(f"{session_of(request)}:compare")


def build_compare_tab(
    registry: Registry, cancellations: Cancellations, guard: Guard | None = None
) -> list[gr.Dropdown]:
    """The Compare tab; returns its two variant pickers (refreshed when a new variant is registered)."""
    handlers = CompareHandlers(registry, cancellations, guard)
    first, second = default_pair(registry)
    with gr.Row(equal_height=True):
        pick_a = gr.Dropdown(variant_choices(registry), value=first, label="Variant A", scale=4)
        swap = gr.Button("⇄ Swap", scale=1, elem_id="compare-swap")
        pick_b = gr.Dropdown(variant_choices(registry), value=second, label="Variant B", scale=4)
    with gr.Row():
        info_a = gr.Markdown(describe_variant(registry, first))
        info_b = gr.Markdown(describe_variant(registry, second))
    gr.Markdown(HOW)
    with gr.Row():
        prompt = gr.Textbox(
            label="Prompt",
            placeholder="Một câu hỏi cho cả hai...",
            show_label=False,
            scale=6,
            elem_id="compare-input",
        )
        run = gr.Button("Compare", variant="primary", scale=1, elem_id="compare-run")
        stop = gr.Button("Stop", scale=1, elem_id="compare-stop")
    status = gr.Markdown(elem_id="compare-status")
    with gr.Row():
        with gr.Column():
            answer_a = answer_box("A", first)
            stats_a = gr.Markdown(elem_id="compare-stats-a")
        with gr.Column():
            answer_b = answer_box("B", second)
            stats_b = gr.Markdown(elem_id="compare-stats-b")
    settings = settings_controls()
    gr.Examples(EXAMPLES_CHAT + EXAMPLES_DOCTOR, inputs=prompt, label="Examples")

    inputs = [prompt, pick_a, pick_b, *settings]
    outputs = [answer_a, answer_b, stats_a, stats_b, status]
    common = {
        "validator": handlers.validate,
        "concurrency_id": "generate",
        "concurrency_limit": registry.max_batch,
    }
    ev1 = run.click(handlers.compare, inputs, outputs, api_name="compare", **common)
    ev2 = prompt.submit(handlers.compare, inputs, outputs, api_visibility="undocumented", **common)
    stop.click(handlers.stop, None, None, cancels=[ev1, ev2], queue=False)
    swap.click(lambda a, b: (b, a), [pick_a, pick_b], [pick_a, pick_b], queue=False)
    pick_a.change(lambda n: describe_variant(registry, n), pick_a, info_a, queue=False)
    pick_b.change(lambda n: describe_variant(registry, n), pick_b, info_b, queue=False)
    return [pick_a, pick_b]
