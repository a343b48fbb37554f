"""The Compare tab: one prompt, two variants side by side, same seed and settings, and the blind arena.

The registry serves every variant of a base from one copy of its weights and holds that base for a whole
generation, so the two answers are generated in turn (A, then B) in one event: never two streams open at
once, which could deadlock two users comparing the same pair in opposite orders.

Blind mode (the default) puts the two variants on random sides (eval.arena.battle_sides) and labels the
answers "A" and "B" only; once both answers are done, four vote buttons become active, one vote is recorded
(ui/arena.py) and the names are revealed. Open mode shows the names, and its votes are logged as open
(``blind: false``), counted apart on the leaderboard.
"""

from __future__ import annotations

import random
from pathlib import Path

import gradio as gr

from eval.arena import battle_sides
from ui.arena import (
    BUTTONS,
    Arena,
    Battle,
    buttons_update,
    leaderboard_section,
    new_battle,
    prompt_to_vote,
    reveal,
    vote_buttons,
    votes_log,
)
from ui.chat import EXAMPLES_CHAT, EXAMPLES_DOCTOR, format_stats
from ui.common import (
    Cancellations,
    check,
    coalesced,
    default_pair,
    describe_variant,
    loading_notes,
    make_settings,
    prompt_problem,
    refusals,
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
    "Both answers use the same seed and settings. On the fast CPU path (the Gemma variants) they decode in "
    "**one batch and stream side by side**; variants on the reference path (BLOOMZ, GPT-J) share their base's "
    "weights one generation at a time, so there A streams, then B."
)
ARENA_HOW = (
    "**Blind** (the arena): the two variants go on random sides, labelled only A and B. When both answers "
    "are done, vote (*A is better*, *B is better*, *Tie*, *Both bad*); the names show after your vote, "
    "which goes to the leaderboard below (`python -m eval.arena` reads the same log). Untick Blind to see "
    "the names while you compare: such votes are kept as open votes."
)
# what compare yields, in order (the status last); and what a vote returns
OUTPUTS = (
    "answer_a",
    "answer_b",
    "stats_a",
    "stats_b",
    "battle",
    *(f"vote_{c}" for c, _ in BUTTONS),
    "note",
    "status",
)
VOTE_OUTPUTS = ("battle", *(f"vote_{c}" for c, _ in BUTTONS), "note", "answer_a", "answer_b", "board")
BLIND_NOTE = "Blind: the two variants were put on random sides; the names show after your vote."


def pair_problem(a: str | None, b: str | None) -> str | None:
    if a and a == b:
        return "pick two different variants (the same variant with the same seed gives the same answer)"
    return None


def answer_box(side: str) -> gr.Textbox:
    """An answer; labelled by its side only until a comparison (open) or a vote (blind) names it."""
    return gr.Textbox(
        label=side,
        lines=12,
        max_lines=24,
        interactive=False,
        buttons=["copy"],
        elem_id=f"compare-answer-{side.lower()}",
    )


class CompareHandlers:
    """What the Compare tab's events call (plain methods, so tests call them without a browser)."""

    def __init__(
        self,
        registry: Registry,
        cancellations: Cancellations,
        guard: Guard | None = None,
        votes: Path | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """``votes``: the arena's votes log (fixed by the app; default runs/arena/votes.jsonl of the repo);
        ``rng``: what draws random sides and random pairs (tests pass a seeded one)."""
        self.registry, self.cancellations, self.guard = registry, cancellations, guard or Guard()
        self.arena = Arena(votes if votes is not None else votes_log(None), self.guard)
        self.rng = rng or random.SystemRandom()
        self.compare = gpu(self.compare, GPU_SECONDS["compare"])  # ZeroGPU: a GPU for both answers

    def validate(
        self, text, a, b, max_new_tokens, temperature, top_k, penalty, seed, blind=False, random_pair=False
    ):
        if random_pair:  # the pickers are not used
            picks = [None, None, self.random_problem()]
        else:
            picks = [
                unavailable_reason(self.registry, a),
                unavailable_reason(self.registry, b) or pair_problem(a, b),
                None,
            ]
        return [
            check(prompt_problem(text)),
            check(picks[0]),
            check(picks[1]),
            *(check(m) for m in settings_problems(max_new_tokens, temperature, top_k, penalty, seed)),
            check(None),
            check(picks[2]),
        ]

    def random_problem(self) -> str | None:
        available = self.registry.available_names()
        if len(available) < 2:
            return (
                f"a random pair needs two variants that run here; available: {', '.join(available) or 'none'}"
            )
        return None

    def pick_pair(self) -> tuple[str, str]:
        """Two different variants that run here, drawn at random."""
        problem = self.random_problem()
        if problem:
            raise gr.Error(problem)
        first, second = self.rng.sample(self.registry.available_names(), 2)
        return first, second

    def compare(
        self,
        text,
        a,
        b,
        max_new_tokens,
        temperature,
        top_k,
        penalty,
        seed,
        request: gr.Request,
        blind=False,
        random_pair=False,
    ):
        """Stream both answers; yields the values of OUTPUTS. ``blind``: random sides, names hidden until
        the vote; ``random_pair``: two variants drawn at random instead of the picked ones."""
        registry = self.registry
        blind = bool(blind)
        settings_obj = make_settings(max_new_tokens, temperature, top_k, penalty, seed)
        if settings_obj.seed is None:  # one seed for both sides, shown so the pair can be rerun
            settings_obj = settings_obj.with_(seed=random.randrange(2**31))
        if random_pair:
            a, b = self.pick_pair()
        require_ready(registry, a)
        require_ready(registry, b)
        if pair_problem(a, b):
            raise gr.Error(pair_problem(a, b))
        with refusals():
            instruction = check_instruction(text if isinstance(text, str) else "")
            self.guard.limiter.take(session_of(request), cost=2)
        if blind:
            a, b = battle_sides(a, b, self.rng)
        battle = new_battle(instruction, a, b, blind, settings_obj)
        # one event per side: a stream sets its own event when it meets a stop marker; Stop sets both
        cancels = [self.cancellations.new(f"{session_of(request)}:compare:{side}") for side in "ab"]
        texts, stats = ["", ""], [GenerationStats(), GenerationStats()]
        seed_note = f"seed {settings_obj.seed}"
        who = "A and B" if blind else f"A ({a}) and B ({b})"
        note = BLIND_NOTE if blind else ""

        def view(status: str, battle: Battle, note: str):
            return (
                gr.update(value=texts[0], label=battle.label("A")),
                gr.update(value=texts[1], label=battle.label("B")),
                format_stats(stats[0]),
                format_stats(stats[1]),
                battle,
                *buttons_update(battle.votable),
                note,
                status,
            )

        for loading in loading_notes(registry, [a, b], cancels[0]):  # never "generating…" while it loads
            yield view(f"loading the models before answering: {loading}", battle, note)
        yield view(f"{who} generating… {seed_note}", battle, note)
        try:  # both sides at once: on one fast base they decode in the same batch
            pieces = registry.stream_together(
                [(a, instruction), (b, instruction)], settings_obj, cancels=cancels, stats=stats
            )
            for batch in coalesced(pieces):
                for i, piece in batch:
                    texts[i] += piece
                counts = " / ".join(str(s.new_tokens) for s in stats)
                yield view(f"{who} generating… {counts} tokens · {seed_note}", battle, note)
        except ViChatError as e:
            raise gr.Error(str(e)) from None
        stopped = any(s.stopped_by == "cancelled" for s in stats)
        battle = battle.finished((texts[0], texts[1]), stopped)
        yield view(f"{'stopped' if stopped else 'done'} · {seed_note}", battle, prompt_to_vote(battle))

    def vote(self, battle, choice: str, include_open=False, request: gr.Request | None = None):
        """Record the vote on the finished battle; returns the values of VOTE_OUTPUTS (names revealed)."""
        battle = self.arena.vote(battle, choice, session_of(request))
        return (
            battle,
            *buttons_update(False),
            reveal(battle),
            gr.update(label=battle.label("A")),
            gr.update(label=battle.label("B")),
            self.arena.board(include_open),
        )

    def voter(self, choice: str):
        """The event handler of one vote button."""

        def cast(battle, include_open, request: gr.Request):
            return self.vote(battle, choice, include_open, request)

        cast.__name__ = cast.__qualname__ = f"vote_{choice}"
        return cast

    def stop(self, request: gr.Request):
        self.cancellations.cancel(f"{session_of(request)}:compare")


def build_compare_tab(
    registry: Registry, cancellations: Cancellations, guard: Guard | None = None, runs: Path | None = None
) -> list[gr.Dropdown]:
    """The Compare tab; returns its two variant pickers (refreshed when a new variant is registered).

    ``runs``: the app's runs folder; the arena's votes go to ``<runs>/arena/votes.jsonl``.
    """
    handlers = CompareHandlers(registry, cancellations, guard, votes_log(runs))
    first, second = default_pair(registry)
    with gr.Row():
        blind = gr.Checkbox(True, label="Blind (names hidden until you vote)", elem_id="compare-blind")
        random_pair = gr.Checkbox(
            False, label="Random pair (any two variants that run here)", elem_id="compare-random"
        )
    with gr.Row(equal_height=True):
        pick_a = gr.Dropdown(variant_choices(registry), value=first, label="Variant A", scale=4)
        swap = gr.Button("⇄ Swap", scale=1, elem_id="compare-swap")
        pick_b = gr.Dropdown(variant_choices(registry), value=second, label="Variant B", scale=4)
    with gr.Row():
        info_a = gr.Markdown(describe_variant(registry, first))
        info_b = gr.Markdown(describe_variant(registry, second))
    gr.Markdown(HOW)
    gr.Markdown(ARENA_HOW, elem_id="compare-arena-how")
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
            answer_a = answer_box("A")
            stats_a = gr.Markdown(elem_id="compare-stats-a")
        with gr.Column():
            answer_b = answer_box("B")
            stats_b = gr.Markdown(elem_id="compare-stats-b")
    note = gr.Markdown(elem_id="arena-note")
    buttons = vote_buttons()
    battle = gr.State(None)  # the last comparison (server side): what a vote is cast on
    board, include_open, refresh = leaderboard_section(handlers.arena)
    settings = settings_controls()
    gr.Examples(EXAMPLES_CHAT + EXAMPLES_DOCTOR, inputs=prompt, label="Examples")

    inputs = [prompt, pick_a, pick_b, *settings, blind, random_pair]
    outputs = [answer_a, answer_b, stats_a, stats_b, battle, *buttons, note, status]
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
    random_pair.change(
        lambda r: [gr.update(interactive=not r) for _ in range(3)],
        random_pair,
        [pick_a, pick_b, swap],
        queue=False,
    )
    for (choice, _), button in zip(BUTTONS, buttons, strict=True):  # one vote per battle, then the reveal
        button.click(
            handlers.voter(choice),
            [battle, include_open],
            [battle, *buttons, note, answer_a, answer_b, board],
            api_name=f"vote_{choice}",
            api_visibility="undocumented",
            concurrency_limit=None,
        )
    include_open.change(handlers.arena.board, include_open, board, queue=False)
    refresh.click(handlers.arena.board, include_open, board, queue=False)
    return [pick_a, pick_b]
