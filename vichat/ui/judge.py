"""The Judge tab: answer an eval set with chosen variants, then judge them against the reference (GPT-4 in the
paper) or, without an API key, score them offline (chrF, optionally NLL) against the reference answers.

Every step is the eval package's: eval.answers.generate_answers, eval.judge.plan / run_judgments,
eval.offline.compute_nll, eval.report.build_report / write_report. Results land in the same files the CLIs
write (``<runs>/eval``), so a CLI run and an app run share answers, verdicts and their caches.

The API key lives only in this run's memory: the field is a password box, it is never returned to the page,
written, or logged, and the events that take it are left out of Gradio's run history.
"""

from __future__ import annotations

import os
from pathlib import Path

import gradio as gr
import pandas as pd

from eval import cost
from eval import judge as judging
from eval.answers import REFERENCE, answers_path, generate_answers, paper_settings
from eval.client import BASE_URL_ENV, DEFAULT_BASE_URL, ChatClient, ClientConfig
from eval.offline import TOTAL, compute_nll, has_nll
from eval.report import ReportData, build_report, main_table, write_report
from eval.sets import BUILTIN, EvalSet, load_eval_set
from eval.verdicts import collect, judgments_path
from vichat.errors import ViChatError
from vichat.registry import Registry
from vichat.ui.common import default_pair, unavailable_reason, variant_choices

SEED = 0  # eval.answers' default: answers made here and by the CLI are the same files
JUDGE_CONCURRENCY = 4
NO_KEY = "No API key: offline scores only (chrF against the reference answers; NLL if ticked)."


def first_questions(set_name: str, n: int) -> EvalSet:
    """The first ``n`` questions of a set, under the set's own name (so its answer files are shared)."""
    try:
        full = load_eval_set(set_name)
    except ViChatError as e:
        raise gr.Error(str(e)) from None
    if not isinstance(n, int | float) or not 1 <= n <= len(full):
        raise gr.Error(f"questions must be between 1 and {len(full)}, got {n!r}")
    return EvalSet(full.name, full.path, full.head(int(n)))


def chosen(registry: Registry, variants: list[str] | None) -> list[str]:
    variants = [v for v in variants or [] if v != REFERENCE]
    if not variants:
        raise gr.Error("tick at least one variant")
    for name in variants:
        reason = unavailable_reason(registry, name)
        if reason:
            raise gr.Error(reason)
    return variants


def table_frame(rows: list[list[str]]) -> pd.DataFrame:
    return pd.DataFrame(rows[1:], columns=rows[0])


def offline_rows(data: ReportData) -> list[list[str]]:
    """category, n, chrF per variant, NLL per variant (the report's offline figures, one table)."""
    counts = data.eval_set.counts()
    cols = [(f"chrF {v}", data.chrf[v], 2) for v in data.chrf] + [
        (f"NLL {v}", data.nll[v], 3) for v in data.nll
    ]
    rows = [["category", "n", *(c[0] for c in cols)]]
    for category in [*data.eval_set.categories, TOTAL]:
        n = str(counts.get(category, len(data.eval_set)))
        rows.append(
            [category, n, *("-" if s[category] is None else f"{s[category]:.{d}f}" for _, s, d in cols)]
        )
    return rows


def chrf_bars(data: ReportData):
    """Grouped bars of chrF per category and variant (a matplotlib Figure; nothing global to close)."""
    from matplotlib.figure import Figure

    rows = [*data.eval_set.categories, TOTAL]
    fig = Figure(figsize=(10, 3.6), dpi=100)
    ax = fig.subplots()
    width = 0.8 / max(1, len(data.chrf))
    for i, (variant, scores) in enumerate(data.chrf.items()):
        xs = [j - 0.4 + width * (i + 0.5) for j in range(len(rows))]
        ax.bar(xs, [scores[r] or 0 for r in rows], width, label=variant)
    ax.set_xticks(range(len(rows)), rows, rotation=20, ha="right")
    ax.set_ylabel("chrF vs the reference answers")
    ax.set_title(
        f"{data.eval_set.name} set, first {len(data.eval_set)} questions: chrF (offline, higher is better)"
    )
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


class JudgeRunner:
    """The tab's steps over one output folder: answer, estimate, judge, score offline."""

    def __init__(self, registry: Registry, out_dir: Path) -> None:
        self.registry, self.out_dir = registry, Path(out_dir)

    def answer(self, variants, set_name, n, nll, progress=gr.Progress(track_tqdm=True)) -> str:
        """Answers (and, if asked, reference NLLs) for the first n questions; cached ones are reused."""
        eval_set, variants = first_questions(set_name, n), chosen(self.registry, variants)
        added = []
        try:
            for i, v in enumerate(variants):
                progress(i / len(variants), desc=f"answers: {v}")
                k = generate_answers(
                    eval_set, v, self.registry, self.out_dir, paper_settings(SEED), batch_size=1
                )
                added.append(f"{v}: {k} new")
                if nll and has_nll(v):
                    progress(i / len(variants), desc=f"NLL: {v}")
                    compute_nll(eval_set, v, self.registry, self.out_dir, batch_size=4)
        except ViChatError as e:
            raise gr.Error(str(e)) from None
        return f"Answers for the first {len(eval_set)} {eval_set.name} questions ready ({', '.join(added)})."

    def estimate(self, variants, set_name, n, judge_model, single_order, price_text) -> str:
        """What judging would cost; unanswered questions count with the reference answer's length."""
        try:
            eval_set, variants = first_questions(set_name, n), chosen(self.registry, variants)
            price = cost.price_for(judge_model or "gpt-4", (price_text or "").strip() or None)
            plan = judging.plan(
                eval_set, self._comparisons(variants), str(self.out_dir), judge_model or "gpt-4",
                single_order=bool(single_order), price=price, stand_in=True,
            )  # fmt: skip
        except (ViChatError, gr.Error) as e:
            return f"estimate unavailable: {getattr(e, 'message', e)}"
        cached = sum(plan.cache.get(t.key) is not None for t in plan.tasks)
        return f"Estimate: {plan.estimate().describe(plan.judge_model)} ({cached} verdicts cached)."

    def score(
        self, variants, set_name, n, base_url, judge_model, key, single_order, price_text,
        progress=gr.Progress(track_tqdm=True),
    ):  # fmt: skip
        """Judge with the key when there is one, else the offline scores; (table, chart, bars, files, status)."""
        eval_set, variants = first_questions(set_name, n), chosen(self.registry, variants)
        judge_model = (judge_model or "gpt-4").strip()
        try:
            if (key or "").strip():
                status = self._judge(
                    eval_set, variants, base_url, judge_model, key.strip(), single_order, price_text, progress
                )
            else:
                status = NO_KEY
            data = build_report(eval_set, variants, self.out_dir, judge_model, REFERENCE, bool(single_order))
            written = write_report(
                data, self.out_dir / "report" / f"app-{eval_set.name}-first{len(eval_set)}"
            )
        except ViChatError as e:
            raise gr.Error(str(e)) from None
        files = [str(p) for p in written.values()] + self._data_files(eval_set, variants, judge_model)
        if data.summaries:
            chart = str(written["chart"]) if "chart" in written else None
            table = table_frame(main_table(data))
            return table, gr.update(value=chart, visible=True), gr.update(visible=False), files, status
        return (
            table_frame(offline_rows(data)),
            gr.update(visible=False),
            gr.update(value=chrf_bars(data), visible=True),
            files,
            status,
        )

    def _judge(
        self, eval_set, variants, base_url, judge_model, key, single_order, price_text, progress
    ) -> str:
        price = cost.price_for(judge_model, (price_text or "").strip() or None)
        plan = judging.plan(
            eval_set, self._comparisons(variants), str(self.out_dir), judge_model,
            single_order=bool(single_order), price=price,
        )  # fmt: skip
        config = ClientConfig(base_url=(base_url or "").strip() or None, api_key=key)
        progress(0, desc=f"judging with {judge_model}")
        result = judging.run_judgments(
            plan.todo, plan.cache, ChatClient(config), judge_model, plan.prompt, concurrency=JUDGE_CONCURRENCY
        )
        lines = [
            f"{result.called} calls, {cost.spent(result.prompt_tokens, result.completion_tokens, price)}"
        ]
        lines += [f"failed: {t.question_id} {t.order}: {m}" for t, m in result.failed[:5]]
        collected = collect(plan.tasks, plan.cache)
        lines += judging.summary_lines(eval_set, collected, head_to_head=False)
        return "  \n".join(lines)

    def _comparisons(self, variants: list[str]) -> list[tuple[str, str]]:
        comparisons, _ = judging.comparisons_for(",".join(variants), None, REFERENCE)
        return comparisons

    def _data_files(self, eval_set: EvalSet, variants: list[str], judge_model: str) -> list[str]:
        paths = [answers_path(self.out_dir, eval_set.name, v) for v in variants]
        paths.append(judgments_path(self.out_dir, eval_set.name, judge_model))
        return [str(p) for p in paths if p.is_file()]


def build_judge_tab(registry: Registry, out_dir: Path) -> gr.Dropdown:
    """The Judge tab; returns its variant picker (refreshed when a new variant is registered)."""
    runner = JudgeRunner(registry, out_dir)
    available = set(registry.available_names())
    start = [v for v in default_pair(registry) if v in available]
    sizes = {name: len(load_eval_set(name)) for name in BUILTIN}
    gr.Markdown(
        "Answer an eval set with the chosen variants (the paper's decoding, seed 0), then score each against "
        "the reference answers: pairwise by a judge model with a key (the paper: GPT-4, reference = "
        "Assistant 1), or offline without one. Same files as `python -m eval.answers / judge / report`."
    )
    with gr.Row():
        variants = gr.Dropdown(
            variant_choices(registry),
            value=start,
            multiselect=True,
            label="Variants (each is scored against the reference answers)",
            scale=3,
            elem_id="judge-variants",
        )
        with gr.Column(scale=2):
            set_name = gr.Radio(list(sizes), value="general", label="Eval set")
            n = gr.Slider(
                1, sizes["general"], value=5, step=1, label="questions (the first N; CPU answers are slow)"
            )
            nll = gr.Checkbox(False, label="offline: also the NLL of the references (slow)")
    with gr.Accordion("Judge model (leave the key empty for offline scores)", open=True):
        with gr.Row():
            base_url = gr.Textbox(
                os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL, label="endpoint base URL", scale=3
            )
            judge_model = gr.Textbox("gpt-4", label="judge model", scale=2)
            key = gr.Textbox(
                type="password",
                label="API key",
                placeholder="used for this run only; never stored or shown",
                scale=3,
                elem_id="judge-key",
            )
        with gr.Row():
            single_order = gr.Checkbox(
                False, label="one order only (the paper's way; default: both, averaged)"
            )
            price = gr.Textbox("", label="price IN,OUT in USD per 1M tokens (empty: list price)")
    estimate = gr.Markdown(elem_id="judge-estimate")
    with gr.Row():
        estimate_btn = gr.Button("Estimate cost")
        run = gr.Button("Run", variant="primary", elem_id="judge-run")
    status = gr.Markdown(elem_id="judge-status")
    table = gr.Dataframe(
        pd.DataFrame(columns=["category", "n"]),
        label="Per category (the paper's layout)",
        interactive=False,
        elem_id="judge-table",
    )
    chart = gr.Image(label="Scores vs the reference (= 100)", visible=False, elem_id="judge-chart")
    bars = gr.Plot(label="chrF by category", visible=False, elem_id="judge-bars")
    files = gr.File(label="Downloads: report, table, chart, answers, verdicts", file_count="multiple")

    plan_inputs = [variants, set_name, n, judge_model, single_order, price]
    private = {"api_visibility": "undocumented"}  # undocumented: left out of run history (the key)
    estimate_btn.click(runner.estimate, plan_inputs, estimate, concurrency_limit=4)
    for control in (variants, set_name, n, single_order):
        control.input(runner.estimate, plan_inputs, estimate, concurrency_limit=4, show_progress="hidden")
    set_name.change(lambda s: gr.update(maximum=sizes[s]), set_name, n, queue=False)
    run.click(
        runner.answer, [variants, set_name, n, nll], status, concurrency_id="generate", **private
    ).success(
        runner.score,
        [variants, set_name, n, base_url, judge_model, key, single_order, price],
        [table, chart, bars, files, status],
        concurrency_limit=2,
        **private,
    )
    return variants
