"""The evaluation report: our scores in the layout of the paper's Tables III/IV, beside the paper's own.

    python -m eval.report --set general [--variants Bloomz,Bloomz-Chat] [--judge-model gpt-4] [--price IN,OUT]

Reads the answers (eval.answers) and the cached verdicts (eval.judge); calls nothing. Writes
``<out-dir>/report/<set>.md``, ``<set>.csv`` (the main table) and ``<set>.png`` (grouped bars). Sections:
judge scores per category vs the reference (=100) with the sample-weighted Total (the paper's) and the
ratio-of-sums, the paper's figures, head-to-head win rates for every pair judged with ``--pair``, the
offline chrF / NLL figures (eval.offline), and the judge diagnostics of every comparison (eval.diagnostics:
flip rate, position bias, length correlations, cost used against the estimate), whose per-question rows
(both answers, each order's scores and explanation) go to ``<set>.questions.jsonl``. Verdicts in both
orders are averaged where both exist.

Verdicts are those of one judge endpoint (``--base-url``, else the only endpoint the cache holds verdicts
from, else $OPENAI_BASE_URL or OpenAI), and the report names it. Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from types import MappingProxyType

from eval import cost
from eval.answers import REFERENCE, answers_path, load_answers, read_answers
from eval.client import normalise_endpoint
from eval.diagnostics import Diagnostics, diagnose, markdown_section, question_records
from eval.offline import TOTAL, by_category, chrf_scores, has_nll, read_nll
from eval.scoring import Summary, WinTieLoss, summarize, weighted_total, win_tie_loss
from eval.sets import GENERAL_CATEGORIES, MEDICAL_CATEGORY, EvalSet, load_eval_set
from eval.verdicts import (
    FORWARD,
    SWAPPED,
    JudgePrompt,
    JudgmentCache,
    build_tasks,
    collect,
    default_endpoint,
    judgments_path,
)
from vichat.errors import DataError, ViChatError
from vichat.files import atomic_write_bytes, atomic_write_lines, atomic_write_text, refuse_overwriting_inputs

# The paper's Tables III and IV (score vs ChatGPT = 100), as printed. Its Bloomz Total of 44.26 does not
# follow from its own rows, which give 43.64 (see PAPER_ROWS_TOTAL).
PAPER_GENERAL = MappingProxyType(
    {
        "Bloomz": MappingProxyType(
            dict(zip(GENERAL_CATEGORIES, (49.82, 44.11, 44.29, 50, 38.75, 47.14, 5, 5, 70), strict=True))
            | {TOTAL: 44.26}
        ),
        "Bloomz-Chat": MappingProxyType(
            dict(
                zip(
                    GENERAL_CATEGORIES,
                    (91.25, 87.5, 65.54, 85.07, 75.71, 82.5, 31.5, 8.5, 76.25),
                    strict=True,
                )
            )
            | {TOTAL: 73.55}
        ),
        "GPTJ": MappingProxyType(
            dict(zip(GENERAL_CATEGORIES, (31.89, 33.22, 23, 25.11, 15.22, 15.72, 5, 5, 17.33), strict=True))
            | {TOTAL: 20.8}
        ),
        "GPTJ-Chat": MappingProxyType(
            dict(zip(GENERAL_CATEGORIES, (61.11, 62.22, 33.11, 54.22, 24.11, 41.11, 5, 5, 38), strict=True))
            | {TOTAL: 39.9}
        ),
    }
)
PAPER_MEDICAL = MappingProxyType({"Bloomz-Doctor": 73.92, "GPTJ-Doctor": 59.85})


def paper_rows_total(variant: str) -> float:
    """The Total that the paper's own category rows give (sample-weighted over its 80 questions)."""
    rows = {c: PAPER_GENERAL[variant][c] for c in GENERAL_CATEGORIES}
    return weighted_total(rows, GENERAL_CATEGORIES)


@dataclass
class ReportData:
    eval_set: EvalSet
    variants: list[str]
    judge_model: str
    summaries: dict[str, Summary] = field(default_factory=dict)
    vs_reference: dict[str, WinTieLoss] = field(default_factory=dict)
    head_to_head: list[tuple[str, str, WinTieLoss]] = field(default_factory=list)
    chrf: dict[str, dict[str, float | None]] = field(default_factory=dict)
    nll: dict[str, dict[str, float | None]] = field(default_factory=dict)
    unparsable: int = 0
    notes: list[str] = field(default_factory=list)
    endpoint: str = ""
    diagnostics: list[Diagnostics] = field(default_factory=list)  # one per comparison with verdicts
    price: tuple[float, float] | None = None

    def paper_columns(self) -> dict[str, dict[str, float]]:
        """The paper's figures for the categories this set has."""
        cats = set(self.eval_set.categories)
        if cats == {MEDICAL_CATEGORY}:
            return {f"{v} (paper)": {MEDICAL_CATEGORY: s, TOTAL: s} for v, s in PAPER_MEDICAL.items()}
        if cats <= set(GENERAL_CATEGORIES):
            return {f"{v} (paper)": dict(rows) for v, rows in PAPER_GENERAL.items()}
        return {}


def discover_variants(out_dir: str | Path, eval_set: EvalSet, reference: str) -> list[str]:
    """Every variant with an answer file for this set, except the reference (names as recorded)."""
    folder = answers_path(out_dir, eval_set.name, "x").parent
    found = []
    for path in sorted(folder.glob("*.jsonl")):
        records = read_answers(path)
        name = next(iter(records.values()))["variant"] if records else path.stem
        if name != reference:
            found.append(name)
    return sorted(found)


def choose_endpoint(cache: JudgmentCache, endpoint: str | None) -> str:
    """The judge endpoint whose verdicts to report: ``endpoint`` when given, else the only one the cache
    holds verdicts from, else the default (and a clear error when the cache holds several to choose from)."""
    if endpoint is not None and str(endpoint).strip():
        return normalise_endpoint(endpoint)
    found = cache.endpoints()
    if len(found) == 1:
        return next(iter(found))
    default = default_endpoint()
    if len(found) > 1 and default not in found:
        listed = ", ".join(f"{e} ({n})" for e, n in found.most_common())
        raise ViChatError(
            f"{cache.path} holds verdicts from several judge endpoints: {listed}; "
            "pass --base-url to choose one"
        )
    return default


def build_report(
    eval_set: EvalSet,
    variants: list[str],
    out_dir: str | Path,
    judge_model: str = "gpt-4",
    reference: str = REFERENCE,
    single_order: bool = False,
    endpoint: str | None = None,
    price: tuple[float, float] | None = None,
) -> ReportData:
    """Everything the report shows. ``endpoint``: whose verdicts (see :func:`choose_endpoint`). ``price``:
    (input, output) USD per 1M tokens for the cost in the diagnostics (None: eval.cost's list price).

    The diagnostics use the verdicts of both orders even when ``single_order`` scores the forward ones only.
    """
    data = ReportData(eval_set, variants, judge_model)
    data.price = price if price is not None else cost.price_for(judge_model)
    answers = {}
    for variant in [reference, *variants]:
        try:
            answers[variant] = load_answers(out_dir, eval_set, variant)
        except DataError:  # a broken answers file is an error, not a missing variant
            raise
        except ViChatError as e:
            data.notes.append(str(e))
    prompt = JudgePrompt.load()
    cache = JudgmentCache(judgments_path(out_dir, eval_set.name, judge_model))
    where = data.endpoint = choose_endpoint(cache, endpoint)
    orders = (FORWARD,) if single_order else (FORWARD, SWAPPED)
    have = [v for v in variants if v in answers]

    def diagnosed(first: str, second: str) -> None:
        tasks, _ = build_tasks(
            eval_set, answers, [(first, second)], (FORWARD, SWAPPED), judge_model, prompt.version,
            endpoint=where,
        )  # fmt: skip
        found = diagnose(first, second, tasks, cache, price=data.price, prompt=prompt)
        if found.rows:
            data.diagnostics.append(found)

    if reference in answers:
        tasks, _ = build_tasks(
            eval_set, answers, [(reference, v) for v in have], orders, judge_model, prompt.version,
            endpoint=where,
        )  # fmt: skip
        collected = collect(tasks, cache)
        data.unparsable += len(collected.unparsable)
        for (_, variant), pairs in collected.pairs.items():
            data.summaries[variant] = summarize(pairs, eval_set.categories)
            data.vs_reference[variant] = win_tie_loss(pairs)
        for variant in have:
            diagnosed(reference, variant)
    for a, b in combinations(have, 2):
        best = None
        for first, second in ((a, b), (b, a)):
            tasks, _ = build_tasks(
                eval_set, answers, [(first, second)], orders, judge_model, prompt.version, endpoint=where
            )
            pairs = collect(tasks, cache).pairs.get((first, second), [])
            if pairs and (best is None or len(pairs) > best[2].n):
                best = (first, second, win_tie_loss(pairs))
        if best:
            data.head_to_head.append(best)
            diagnosed(best[0], best[1])
    for variant in have:
        data.chrf[variant] = by_category(eval_set, chrf_scores(eval_set, answers[variant]))
    for variant in variants:
        if has_nll(variant):
            nll = by_category(eval_set, read_nll(out_dir, eval_set.name, variant))
            if nll[TOTAL] is not None:
                data.nll[variant] = nll
    others = sorted(e for e in cache.endpoints() if e != where)
    if others and not data.summaries:
        data.notes.append(
            f"no verdicts from {where}; the cache has verdicts from {', '.join(others)} (pass --base-url)"
        )
    return data


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main_table(data: ReportData) -> list[list[str]]:
    """Header and rows: category, n, one column per variant (ours), then the paper's columns."""
    paper = data.paper_columns()
    counts = data.eval_set.counts()
    ours = [v for v in data.variants if v in data.summaries]
    rows = [["category", "n", *ours, *paper]]
    for category in data.eval_set.categories:
        cells = [_fmt(data.summaries[v].categories.get(category)) for v in ours]
        rows.append(
            [category, str(counts[category]), *cells, *(_fmt(p.get(category)) for p in paper.values())]
        )
    total = [_fmt(data.summaries[v].total) for v in ours]
    rows.append([TOTAL, str(len(data.eval_set)), *total, *(_fmt(p.get(TOTAL)) for p in paper.values())])
    rows.append(
        [
            "Total (ratio of sums)",
            "",
            *(_fmt(data.summaries[v].ratio_of_sums) for v in ours),
            *[""] * len(paper),
        ]
    )
    rows.append(["questions scored", "", *(str(data.summaries[v].scored) for v in ours), *[""] * len(paper)])
    return rows


def _markdown_table(rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join("---" for _ in rows[0]) + "|"]
    return out + ["| " + " | ".join(r) + " |" for r in rows[1:]]


def markdown(data: ReportData, chart: Path | None) -> str:
    es = data.eval_set
    lines = [f"# ViChat evaluation: {es.name} set ({len(es)} questions)", ""]
    lines += [
        f"Judge: {data.judge_model}{f' at {data.endpoint}' if data.endpoint else ''}, pairwise against the "
        "reference answers (= 100); a question scores "
        "model / reference, a category 100 x the mean of its questions, Total the same mean over all "
        "questions (sample-weighted, as in the paper). Ratio of sums: 100 x sum(model) / sum(reference).",
        "",
    ]
    if data.summaries:
        lines += _markdown_table(main_table(data))
    else:
        lines.append("No verdicts yet: run `python -m eval.judge` (the paper's figures are below).")
        if data.paper_columns():
            paper = data.paper_columns()
            rows = [["category", *paper]] + [
                [c, *(_fmt(p.get(c)) for p in paper.values())] for c in [*es.categories, TOTAL]
            ]
            lines += ["", *_markdown_table(rows)]
    if data.paper_columns() and set(es.categories) <= set(GENERAL_CATEGORIES):
        lines += [
            "",
            "Paper totals are as printed. From its own rows they are: "
            + ", ".join(f"{v} {paper_rows_total(v):.2f}" for v in PAPER_GENERAL)
            + " (Bloomz's printed 44.26 does not follow from its rows).",
        ]
    if data.vs_reference:
        lines += ["", "## Against the reference: wins / ties / losses", ""]
        lines += _markdown_table(
            [["variant", "wins", "ties", "losses"]]
            + [[v, str(w.second_wins), str(w.ties), str(w.first_wins)] for v, w in data.vs_reference.items()]
        )
    if data.head_to_head:
        lines += ["", "## Head-to-head", ""]
        rows = [["A", "B", "A wins", "ties", "B wins", "A win rate (ties half)"]]
        for a, b, w in data.head_to_head:
            rate = (w.first_wins + 0.5 * w.ties) / w.n
            rows.append([a, b, str(w.first_wins), str(w.ties), str(w.second_wins), f"{100 * rate:.1f}%"])
        lines += _markdown_table(rows)
    for title, table, digits in (
        ("chrF against the reference answers (offline, higher is better)", data.chrf, 2),
        ("Mean NLL of the reference answers (offline, lower is better)", data.nll, 3),
    ):
        if table:
            rows = [["category", *table]] + [
                [c, *(_fmt(table[v][c], digits) for v in table)] for c in [*es.categories, TOTAL]
            ]
            lines += ["", f"## {title}", "", *_markdown_table(rows)]
    if data.unparsable:
        lines += [
            "",
            f"{data.unparsable} verdicts could not be parsed (kept with raw text in the cache; "
            "`python -m eval.judge ... --retry-unparsable` asks again). They are not scored.",
        ]
    if data.summaries or data.head_to_head or data.diagnostics:
        lines += ["", *markdown_section(data.diagnostics)]
        if data.diagnostics:
            lines += [
                "",
                "Per question (both answers, each order's scores and reasons): `<set>.questions.jsonl`, "
                "or `python -m eval.diagnostics --set <set> --show ID`.",
            ]
    lines += ["", *(f"Note: {n}" for n in data.notes)] if data.notes else []
    if chart is not None:
        lines += ["", f"![scores by category]({chart.name})"]
    return "\n".join(lines) + "\n"


def write_chart(data: ReportData, path: Path) -> Path | None:
    """Grouped bars per category: our variants solid, the paper's figures hatched."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [*data.eval_set.categories, TOTAL]
    series = [
        (
            v,
            [data.summaries[v].categories.get(r) if r != TOTAL else data.summaries[v].total for r in rows],
            False,
        )
        for v in data.variants
        if v in data.summaries
    ]
    series += [(name, [p.get(r) for r in rows], True) for name, p in data.paper_columns().items()]
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(min(16.0, max(9.0, 0.5 * len(rows) * (1 + 0.25 * len(series)))), 5))
    width = 0.8 / len(series)
    palette = plt.get_cmap("tab10")
    bases = list(
        dict.fromkeys(name.removesuffix(" (paper)") for name, _, _ in series)
    )  # ours and paper's share
    for i, (name, values, is_paper) in enumerate(series):
        xs = [j - 0.4 + width * (i + 0.5) for j in range(len(rows))]
        heights = [v if v is not None else 0 for v in values]
        color = palette(bases.index(name.removesuffix(" (paper)")) % 10)
        ax.bar(
            xs, heights, width, label=name, color=color, alpha=0.4 if is_paper else 0.95,
            hatch="//" if is_paper else None, edgecolor="black" if is_paper else color, linewidth=0.4,
        )  # fmt: skip
    ax.axhline(100, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xticks(range(len(rows)), rows, rotation=30, ha="right")
    ax.set_ylabel("score vs reference (= 100)")
    ax.set_title(f"{data.eval_set.name} set, judge {data.judge_model}: ours solid, the paper's hatched")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    image = io.BytesIO()
    try:
        fig.savefig(image, dpi=120, format="png")
    finally:
        plt.close(fig)
    atomic_write_bytes(path, image.getvalue())
    return path


def report_paths(data: ReportData, report_dir: str | Path) -> dict[str, Path]:
    report_dir, name = Path(report_dir), data.eval_set.name
    kinds = (("markdown", "md"), ("csv", "csv"), ("chart", "png"), ("questions", "questions.jsonl"))
    return {kind: report_dir / f"{name}.{ext}" for kind, ext in kinds}


def write_report(data: ReportData, report_dir: str | Path) -> dict[str, Path]:
    """Write the markdown, the csv table, the chart and the per-question diagnostics (JSONL, once there are
    verdicts), each atomically; never over the eval set file."""
    paths = report_paths(data, report_dir)
    if data.eval_set.path is not None:
        refuse_overwriting_inputs(paths.values(), [data.eval_set.path], "--report-dir")
    for path in paths.values():
        if path.is_dir():
            raise ViChatError(f"{path} is a folder: choose another --report-dir")
    chart = write_chart(data, paths["chart"])
    md = paths["markdown"]
    atomic_write_text(md, markdown(data, chart))
    table = paths["csv"]
    rows = (
        main_table(data)
        if data.summaries
        else [["category", "n"]] + [[c, str(n)] for c, n in data.eval_set.counts().items()]
    )
    buffer = io.StringIO(newline="")
    csv.writer(buffer).writerows(rows)
    atomic_write_text(table, buffer.getvalue())
    out = {"markdown": md, "csv": table}
    if chart is not None:
        out["chart"] = chart
    questions = paths["questions"]
    if data.diagnostics or questions.exists():  # no verdicts, no file; an old one is emptied, not left stale
        atomic_write_lines(questions, question_records(data.diagnostics))
        out["questions"] = questions
    return out


@dataclass
class ReportArgs:
    set: str = field(default="general", metadata={"help": "general, medical, or a JSONL path"})
    variants: str | None = field(default=None, metadata={"help": "default: every variant with answers"})
    reference: str = REFERENCE
    judge_model: str = "gpt-4"
    base_url: str | None = field(
        default=None,
        metadata={"help": "the judge endpoint whose verdicts to report (default: the only one cached)"},
    )
    single_order: bool = field(
        default=False, metadata={"help": "use only reference-first verdicts (the paper)"}
    )
    price: str | None = field(default=None, metadata={"help": "IN,OUT USD per 1M tokens for the judge model"})
    out_dir: str = "runs/eval"
    report_dir: str | None = field(default=None, metadata={"help": "default <out-dir>/report"})


def main(argv=None) -> int:
    from eval.cli import names, parse

    (args,) = parse(ReportArgs, argv)
    price = cost.price_for(args.judge_model, args.price)
    eval_set = load_eval_set(args.set)
    variants = names(args.variants) or discover_variants(args.out_dir, eval_set, args.reference)
    data = build_report(
        eval_set, variants, args.out_dir, args.judge_model, args.reference, args.single_order,
        endpoint=args.base_url, price=price,
    )  # fmt: skip
    written = write_report(data, args.report_dir or Path(args.out_dir) / "report")
    print(written["markdown"].read_text(encoding="utf-8"))
    print("wrote " + ", ".join(str(p) for p in written.values()))
    return 0


if __name__ == "__main__":
    from vichat.cli import run

    raise SystemExit(run(main))
