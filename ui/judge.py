"""The Judge tab: answer an eval set with chosen variants, then judge them against the reference (GPT-4 in the
paper) or, without an API key, score them offline (chrF, optionally NLL) against the reference answers.

Every step is the eval package's: eval.answers.generate_answers, eval.judge.plan / run_judgments,
eval.offline.compute_nll, eval.report.build_report / write_report, and eval.diagnostics for how far to trust
the judge (summary_table: flip rate, position bias, length correlations, the cost used beside the estimate;
show_question and the Diagnostics rows for the per-question viewer), the functions ``python -m
eval.diagnostics`` prints. Results land in the same files the CLIs write (``<runs>/eval``), so a CLI run and
an app run share answers, verdicts and their caches.

The API key lives only in this run's memory: the field is a password box, it is never returned to the page,
written, or logged, and the events that take it are left out of Gradio's run history.

Before any answer is generated or any judge call is paid for, a run checks what would make it fail later: the
numbers (through vichat.checks), the eval set (built-in sets only: a path would let a visitor read files), the
endpoint (in public mode one of a fixed list: a free URL is a blind SSRF), and that the output folder is
writable and inside the folders the app may serve (else the downloads fail after the calls are spent).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import gradio as gr
import pandas as pd

from eval import cost
from eval import judge as judging
from eval.answers import REFERENCE, answers_path, generate_answers, paper_settings
from eval.answers import lock_for as answers_lock
from eval.client import BASE_URL_ENV, DEFAULT_BASE_URL, ChatClient, ClientConfig
from eval.diagnostics import (
    LENGTH_UNIT,
    MISSING,
    UNPARSABLE,
    Diagnostics,
    OrderVerdict,
    QuestionRow,
    flip_of,
    markdown_section,
    show_question,
    summary_table,
)
from eval.offline import TOTAL, compute_nll, has_nll
from eval.report import ReportData, build_report, main_table, write_report
from eval.sets import BUILTIN, EvalSet, load_eval_set
from eval.verdicts import collect, judgments_path
from ui.common import default_pair, refusals, session_of, ui_number, unavailable_reason, variant_choices
from ui.public import Guard, check_servable
from vichat.errors import SettingsError, ViChatError
from vichat.registry import Registry

SEED = 0  # eval.answers' default: answers made here and by the CLI are the same files
JUDGE_CONCURRENCY = 4
NO_KEY = "No API key: offline scores only (chrF against the reference answers; NLL if ticked)."
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+/-]{0,99}$")


def first_questions(set_name: str, n: int) -> EvalSet:
    """The first ``n`` questions of a set, under the set's own name (so its answer files are shared)."""
    if set_name not in BUILTIN:  # never a path: the field must not read files a visitor names
        raise gr.Error(f"the eval set must be one of {', '.join(BUILTIN)}, got {str(set_name)[:60]!r}")
    with refusals():
        full = load_eval_set(set_name)
    n = ui_number("questions", n, minimum=1, maximum=len(full), integer=True)
    return EvalSet(full.name, full.path, full.head(n))


def judge_model_name(text) -> str:
    name = (text if isinstance(text, str) else "").strip() or "gpt-4"
    if not MODEL_NAME.match(name):
        raise gr.Error(
            f"the judge model must be a model name like gpt-4 (letters, digits, . _ : + / -), got {name[:60]!r}"
        )
    return name


def judge_price(judge_model: str, text) -> tuple[float, float] | None:
    """eval.cost.price_for with the price box's "IN,OUT" (empty: the judge model's list price, else None)."""
    text = (text if isinstance(text, str) else "").strip()
    try:
        return cost.price_for(judge_model, text or None)
    except ViChatError as e:
        raise SettingsError(f"the price box: {e}") from None


def chosen(registry: Registry, variants: list[str] | None) -> list[str]:
    if isinstance(variants, str):
        variants = [variants]
    if not isinstance(variants, list | tuple) or not all(isinstance(v, str) for v in variants):
        raise gr.Error("tick at least one variant")
    variants = [v for v in variants if v != REFERENCE]
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


# ------------------------------------------------------------------------------------------ diagnostics

NO_RUN = "no judge diagnostics yet: run the judge with a key (both orders) first"
FLIP_MARKS = {1.0: " · flips with the order", 0.5: " · half flip"}
SUMMARY_WIDTHS = ["17%", "8%", "13%", "10%", "13%", "13%", "14%", "12%"]  # summary_table's columns


def diagnostics_notes(diagnostics: list[Diagnostics]) -> str:
    """What the table's columns mean and each comparison's notes: eval.diagnostics.markdown_section (the text
    of the report and of the CLI) without its heading and its table, which the tab shows as a Dataframe."""
    lines = markdown_section(diagnostics)[1:]
    return "\n".join(line for line in lines if not line.startswith("|")).strip()


def comparison_of(diagnostics: list[Diagnostics] | None, label) -> Diagnostics:
    if not diagnostics:
        raise gr.Error(NO_RUN)
    found = next((d for d in diagnostics if d.label == label), None)
    if found is None:
        raise gr.Error(
            f"no comparison {str(label)[:80]!r} in this run: choose one of "
            f"{', '.join(d.label for d in diagnostics)}"
        )
    return found


def question_choices(d: Diagnostics) -> list[tuple[str, str]]:
    """(label, question id) for each question of the comparison with a verdict: id, category, flip."""
    return [
        (f"{row.question_id} · {row.category}{FLIP_MARKS.get(flip_of(row), '')}", row.question_id)
        for row in d.rows
    ]


def diagnostics_view(diagnostics: list[Diagnostics]):
    """After a run: (kept diagnostics, section, summary table, notes, comparison picker, question picker)."""
    if not diagnostics:
        empty = gr.update(choices=[], value=None)
        return [], gr.update(visible=False), table_frame(summary_table([])), "", empty, empty
    labels = [d.label for d in diagnostics]
    questions = question_choices(diagnostics[0])
    return (
        list(diagnostics),
        gr.update(visible=True),
        table_frame(summary_table(diagnostics)),
        diagnostics_notes(diagnostics),
        gr.update(choices=labels, value=labels[0]),
        gr.update(choices=questions, value=questions[0][1]),
    )


def pick_comparison(diagnostics: list[Diagnostics] | None, label):
    """The question picker for another comparison, its first question chosen."""
    questions = question_choices(comparison_of(diagnostics, label))
    return gr.update(choices=questions, value=questions[0][1] if questions else None)


def _score(value: float) -> str:
    return f"{value:g}"


def scores_frame(row: QuestionRow) -> pd.DataFrame:
    """Each order's scores as (first, second) of the comparison, whichever was shown first, and their mean."""
    rows = []
    for v in (row.forward, row.swapped):
        sides = v.for_sides()
        rows.append(
            [v.order, v.assistant_1, *(("-", "-") if sides is None else map(_score, sides)), v.status]
        )
    averaged, flip = row.averaged, flip_of(row)
    rows.append(
        [
            "mean of the orders judged",
            "",
            *(("-", "-") if averaged is None else map(_score, averaged)),
            "flip needs both orders" if flip is None else f"flip {flip:g}",
        ]
    )
    return pd.DataFrame(rows, columns=["order", "shown first", row.first, row.second, "verdict"])


def reasons_label(v: OrderVerdict) -> str:
    said = {UNPARSABLE: "unreadable: the judge's raw answer", MISSING: "not judged"}.get(
        v.status, "the judge's reasons"
    )
    return f"{v.order} ({v.assistant_1} shown first): {said}"


def view_question(diagnostics: list[Diagnostics] | None, label, question_id):
    """One question of one comparison: (question, first answer, second answer, scores, the judge's reasons in
    each order, and the text ``python -m eval.diagnostics --show ID`` prints). Blank before any verdict."""
    if not diagnostics and not question_id:  # a run without verdicts: nothing to show, nothing wrong
        blank = gr.update(value="")
        return "", blank, blank, pd.DataFrame(), blank, blank, ""
    d = comparison_of(diagnostics, label)
    row = d.row(question_id) if isinstance(question_id, str) else None
    if row is None:
        raise gr.Error(
            f"no verdict for question {str(question_id)[:60]!r} in {d.label}: pick one from the list"
        )
    with refusals():
        text = show_question(diagnostics, row.question_id)

    def answer(name: str, value: str):
        return gr.update(label=f"{name}'s answer ({len(value)} {LENGTH_UNIT})", value=value)

    return (
        f"**{row.question_id}** ({row.category}) · {d.label}\n\n{row.question}",
        answer(row.first, row.first_answer),
        answer(row.second, row.second_answer),
        scores_frame(row),
        gr.update(label=reasons_label(row.forward), value=row.forward.explanation),
        gr.update(label=reasons_label(row.swapped), value=row.swapped.explanation),
        text,
    )


class JudgeRunner:
    """The tab's steps over one output folder: answer, estimate, judge, score offline."""

    def __init__(
        self, registry: Registry, out_dir: Path, guard: Guard | None = None, served: list[str] | None = None
    ) -> None:
        self.registry, self.out_dir, self.guard = registry, Path(out_dir), guard or Guard()
        self.served = list(served or [])

    def check_output(self) -> None:
        """The output folder is writable and servable, before any work (else downloads fail at the end)."""
        with refusals():
            check_servable(self.out_dir, self.served)

    def answer(
        self, variants, set_name, n, nll, request: gr.Request = None, progress=gr.Progress(track_tqdm=True)
    ) -> str:
        """Answers (and, if asked, reference NLLs) for the first n questions; cached ones are reused."""
        eval_set, variants = first_questions(set_name, n), chosen(self.registry, variants)
        self.check_output()
        added = []
        with refusals():
            self.guard.limiter.take(session_of(request), cost=len(eval_set) * len(variants))
            with answers_lock(self.out_dir, eval_set.name, "the app's Judge tab"):
                for i, v in enumerate(variants):
                    progress(i / len(variants), desc=f"answers: {v}")
                    k = generate_answers(
                        eval_set, v, self.registry, self.out_dir, paper_settings(SEED), batch_size=1
                    )
                    added.append(f"{v}: {k} new")
                    if nll and has_nll(v):
                        progress(i / len(variants), desc=f"NLL: {v}")
                        compute_nll(eval_set, v, self.registry, self.out_dir, batch_size=4)
        return f"Answers for the first {len(eval_set)} {eval_set.name} questions ready ({', '.join(added)})."

    def check_run(self, variants, set_name, n, base_url, judge_model, key, single_order, price_text) -> str:
        """The Run button's first step: everything that could fail later, checked before any work."""
        eval_set, variants, judge_model, key, endpoint, _ = self._checked(
            variants, set_name, n, base_url, judge_model, key, price_text
        )
        then = (
            f"judging with {judge_model} at {endpoint or ClientConfig().endpoint}" if key else "chrF scores"
        )
        return (
            f"Checked: {len(variants)} variant(s), first {len(eval_set)} {eval_set.name} questions; "
            f"answering now, then {then}."
        )

    def _checked(self, variants, set_name, n, base_url, judge_model, key, price_text):
        """(eval set, variants, judge model, key, endpoint, price), each checked; a gr.Error otherwise.

        The price counts without a key too: the diagnostics price the verdicts already cached."""
        eval_set, variants = first_questions(set_name, n), chosen(self.registry, variants)
        judge_model = judge_model_name(judge_model)
        key = key.strip() if isinstance(key, str) else ""
        endpoint = None
        with refusals():
            price = judge_price(judge_model, price_text)
            if key:
                endpoint = self.guard.policy.judge_endpoint(base_url if isinstance(base_url, str) else None)
        self.check_output()
        return eval_set, variants, judge_model, key, endpoint, price

    def estimate(self, variants, set_name, n, judge_model, single_order, price_text, base_url=None) -> str:
        """What judging would cost at the endpoint; unanswered questions count with the reference's length."""
        try:
            eval_set, variants = first_questions(set_name, n), chosen(self.registry, variants)
            judge_model = judge_model_name(judge_model)
            price = judge_price(judge_model, price_text)
            endpoint = self.guard.policy.judge_endpoint(base_url if isinstance(base_url, str) else None)
            plan = judging.plan(
                eval_set, self._comparisons(variants), str(self.out_dir), judge_model,
                single_order=bool(single_order), price=price, stand_in=True, endpoint=endpoint,
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
        return self._scores(
            *self._report(
                variants, set_name, n, base_url, judge_model, key, single_order, price_text, progress
            )
        )

    def score_and_diagnose(
        self, variants, set_name, n, base_url, judge_model, key, single_order, price_text,
        progress=gr.Progress(track_tqdm=True),
    ):  # fmt: skip
        """The Run button's last step: :meth:`score`'s five outputs, then :func:`diagnostics_view`'s six."""
        data, written, files, status = self._report(
            variants, set_name, n, base_url, judge_model, key, single_order, price_text, progress
        )
        return (*self._scores(data, written, files, status), *diagnostics_view(data.diagnostics))

    def _report(self, variants, set_name, n, base_url, judge_model, key, single_order, price_text, progress):
        """Judge (with a key) and build and write the report: (data, written files, downloads, status)."""
        eval_set, variants, judge_model, key, endpoint, price = self._checked(
            variants, set_name, n, base_url, judge_model, key, price_text
        )  # before any paid call: settings, endpoint, and an output folder the downloads can come from
        with refusals():
            if key:
                status = self._judge(
                    eval_set, variants, endpoint, judge_model, key, single_order, price, progress
                )
            else:
                status = NO_KEY
            data = build_report(
                eval_set, variants, self.out_dir, judge_model, REFERENCE, bool(single_order),
                endpoint=endpoint if key else None, price=price,
            )  # fmt: skip
            written = write_report(
                data, self.out_dir / "report" / f"app-{eval_set.name}-first{len(eval_set)}"
            )
        files = [str(p) for p in written.values()] + self._data_files(eval_set, variants, judge_model)
        return data, written, files, status

    def _scores(self, data: ReportData, written: dict[str, Path], files: list[str], status: str):
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

    def _judge(self, eval_set, variants, endpoint, judge_model, key, single_order, price, progress) -> str:
        plan = judging.plan(
            eval_set, self._comparisons(variants), str(self.out_dir), judge_model,
            single_order=bool(single_order), price=price, endpoint=endpoint,
        )  # fmt: skip
        config = ClientConfig(base_url=endpoint, api_key=key)
        progress(0, desc=f"judging with {judge_model}")
        with judging.lock_for(self.out_dir, eval_set.name, "the app's Judge tab"):
            result = judging.run_judgments(
                plan.todo, plan.cache, ChatClient(config), judge_model, plan.prompt,
                concurrency=JUDGE_CONCURRENCY,
            )  # fmt: skip
        lines = [
            f"{result.called} calls, {cost.spent(result.prompt_tokens, result.completion_tokens, price)}"
        ]
        lines += [f"failed: {t.question_id} {t.order}: {m}" for t, m in result.failed[:5]]
        if result.unparsable:
            lines.append(
                f"{len(result.unparsable)} verdict(s) unreadable: not cached, asked again on the next run"
            )
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


def build_judge_tab(
    registry: Registry, out_dir: Path, guard: Guard | None = None, served: list[str] | None = None
) -> gr.Dropdown:
    """The Judge tab; returns its variant picker (refreshed when a new variant is registered)."""
    runner = JudgeRunner(registry, out_dir, guard, served)
    policy = runner.guard.policy
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
            if policy.public:  # a fixed list: a free URL would make the server POST anywhere
                base_url = gr.Dropdown(
                    list(policy.judge_endpoints),
                    value=policy.judge_endpoints[0],
                    allow_custom_value=False,
                    label="endpoint base URL (fixed on this public app)",
                    scale=3,
                    elem_id="judge-endpoint",
                )
            else:
                base_url = gr.Textbox(
                    os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL,
                    label="endpoint base URL",
                    scale=3,
                    elem_id="judge-endpoint",
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
    files = gr.File(
        label="Downloads: report, table, chart, per-question diagnostics, answers, verdicts",
        file_count="multiple",
    )
    kept = gr.State([])  # this session's last run's eval.diagnostics.Diagnostics, for the question viewer
    with gr.Column(visible=False, elem_id="judge-diagnostics") as section:
        gr.Markdown(
            "### Judge diagnostics\nHow far to trust the judge: how often its preference flips when the two "
            "answers swap places, what being shown first is worth, how much its scores follow the answers' "
            "length, and what the calls cost beside the estimate (the table `python -m eval.diagnostics` "
            "prints)."
        )
        diagnostics_table = gr.Dataframe(
            table_frame(summary_table([])),
            label="Per comparison",
            interactive=False,
            wrap=True,
            column_widths=SUMMARY_WIDTHS,  # eight columns: all in view, the cost included
            elem_id="judge-diagnostics-table",
        )
        notes = gr.Markdown(elem_id="judge-diagnostics-notes")
        gr.Markdown("#### Per question: both answers, both orders' scores and the judge's reasons")
        with gr.Row():
            comparison = gr.Dropdown([], value=None, label="Comparison", scale=1, elem_id="judge-comparison")
            question = gr.Dropdown(
                [], value=None, label="Question (id · category)", scale=2, elem_id="judge-question"
            )
        question_text = gr.Markdown(elem_id="judge-question-text")
        with gr.Row():
            first_answer = gr.Textbox(
                label="first answer", lines=6, max_lines=24, interactive=False, buttons=["copy"],
                elem_id="judge-answer-first",
            )  # fmt: skip
            second_answer = gr.Textbox(
                label="second answer", lines=6, max_lines=24, interactive=False, buttons=["copy"],
                elem_id="judge-answer-second",
            )  # fmt: skip
        question_scores = gr.Dataframe(
            pd.DataFrame(),
            label="Scores as the comparison's (first, second), whichever was shown first",
            interactive=False,
            elem_id="judge-question-scores",
        )
        with gr.Row():
            forward_reasons = gr.Textbox(
                label="forward: the judge's reasons", lines=4, max_lines=24, interactive=False,
                elem_id="judge-reasons-forward",
            )  # fmt: skip
            swapped_reasons = gr.Textbox(
                label="swapped: the judge's reasons", lines=4, max_lines=24, interactive=False,
                elem_id="judge-reasons-swapped",
            )  # fmt: skip
        with gr.Accordion("As `python -m eval.diagnostics --show ID` prints it", open=False):
            shown = gr.Textbox(
                show_label=False, lines=10, max_lines=40, interactive=False, buttons=["copy"],
                elem_id="judge-question-cli",
            )  # fmt: skip

    plan_inputs = [variants, set_name, n, judge_model, single_order, price, base_url]
    private = {"api_visibility": "undocumented"}  # undocumented: left out of run history (the key)
    estimate_btn.click(runner.estimate, plan_inputs, estimate, concurrency_limit=4)
    for control in (variants, set_name, n, single_order, base_url):
        control.input(runner.estimate, plan_inputs, estimate, concurrency_limit=4, show_progress="hidden")
    set_name.change(lambda s: gr.update(maximum=sizes[s]), set_name, n, queue=False)
    run_inputs = [variants, set_name, n, base_url, judge_model, key, single_order, price]
    viewer = [question_text, first_answer, second_answer, question_scores]
    viewer += [forward_reasons, swapped_reasons, shown]
    run.click(runner.check_run, run_inputs, status, queue=False, **private).success(
        runner.answer,
        [variants, set_name, n, nll],
        status,
        concurrency_id="generate",
        concurrency_limit=registry.max_batch,
        **private,
    ).success(
        runner.score_and_diagnose,
        run_inputs,
        [table, chart, bars, files, status, kept, section, diagnostics_table, notes, comparison, question],
        concurrency_limit=2,
        **private,
    ).success(view_question, [kept, comparison, question], viewer, queue=False, api_visibility="private")
    comparison.input(
        pick_comparison, [kept, comparison], question, queue=False, api_visibility="private"
    ).success(view_question, [kept, comparison, question], viewer, queue=False, api_visibility="private")
    question.input(view_question, [kept, comparison, question], viewer, queue=False, api_visibility="private")
    return variants
