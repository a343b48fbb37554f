"""The Datasets tab: browse our sample data, built mixtures and an uploaded JSONL.

Reading, checking, token counting and statistics are vichat.data's (what ``python -m vichat.data validate``
and ``stats`` print); this tab only pages, searches and filters the records it gets back.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import pandas as pd

from vichat.data import (
    WHITESPACE_TOKENIZER,
    HFCounter,
    ReadResult,
    TokenCounter,
    compute_stats,
    format_stats,
    load_token_counter,
    read_jsonl,
    read_upload,
    stats_from_token_counts,
)
from vichat.errors import ViChatError
from vichat.paths import ASSETS, REPO_ROOT
from vichat.registry import Registry

UPLOADED = "uploaded file"
ALL = "(all)"
FACET_FIELDS = ("source", "category", "topic")
MAX_FACET_VALUES = 50
ERRORS_SHOWN = 50
CELL_CHARS = 400
HEADERS = ["record", "prompt", "response", "labels", "tokens"]
BASE_TOKENIZER = "tokenizer of "


# ------------------------------------------------------------------------------------------ sources


def dataset_files(runs_dir: Path) -> dict[str, Path]:
    """Our sample data (assets/data) and every built mixture under ``runs_dir/data``, by display name."""
    found = sorted((ASSETS / "data").glob("*.jsonl")) + sorted((runs_dir / "data").rglob("*.jsonl"))
    return {_display(p): p for p in found}


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


@dataclass
class Loaded:
    """One file's records and bad lines, with token counts per counter (computed once)."""

    result: ReadResult
    counts: dict[str, list[int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sample_tokens(self, counter: TokenCounter) -> tuple[list[int], list[int]]:
        """(prompt tokens, response tokens) per record."""
        with self.lock:
            if counter.name not in self.counts:
                records = self.result.records
                prompts = counter.count([r["prompt"] for r in records])
                responses = counter.count([r["response"] for r in records])
                self.counts[counter.name] = prompts + responses
            both = self.counts[counter.name]
        n = len(self.result.records)
        return both[:n], both[n:]


class DatasetCache:
    """The last few files read, keyed by path, size and modification time (a changed file is re-read)."""

    def __init__(self, size: int = 3) -> None:  # a paper-scale mixture is ~10^5 records: keep few
        self.size = size
        self._items: OrderedDict[tuple, Loaded] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: Path, label: str | None = None, upload: bool = False) -> Loaded:
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns, label)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        result = read_upload(str(path), label) if upload else read_jsonl(path)
        loaded = Loaded(result)
        with self._lock:
            self._items[key] = loaded
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return loaded


# ----------------------------------------------------------------------------------------- browsing


def labels(record: dict) -> str:
    return ", ".join(f"{f}: {record[f]}" for f in FACET_FIELDS if isinstance(record.get(f), str))


def facet_choices(records: list[dict]) -> list[str]:
    """``field: value`` for the source/category/topic values present (few enough to pick from)."""
    out = [ALL]
    for name in FACET_FIELDS:
        values = sorted({r[name] for r in records if isinstance(r.get(name), str)})
        if 0 < len(values) <= MAX_FACET_VALUES:
            out += [f"{name}: {v}" for v in values]
    return out


def select(
    records: list[dict], tokens: list[int], search: str, facet: str, low: float | None, high: float | None
) -> list[int]:
    """Indices of the records matching the text search, the label and the token-length range."""
    needle = (search or "").strip().lower()
    name, _, value = (facet or ALL).partition(": ")
    out = []
    for i, r in enumerate(records):
        if needle and needle not in r["prompt"].lower() and needle not in r["response"].lower():
            continue
        if facet and facet != ALL and r.get(name) != value:
            continue
        if (low is not None and tokens[i] < low) or (high is not None and tokens[i] > high):
            continue
        out.append(i)
    return out


def _cell(text: str) -> str:
    return text if len(text) <= CELL_CHARS else text[:CELL_CHARS] + "…"


def page_table(records: list[dict], tokens: list[int], chosen: list[int], page: int, size: int) -> list[list]:
    rows = chosen[(page - 1) * size : page * size]
    return [
        [i + 1, _cell(records[i]["prompt"]), _cell(records[i]["response"]), labels(records[i]), tokens[i]]
        for i in rows
    ]


def histogram(tokens: list[int], title: str = "", bins: int = 30):
    """Samples by token length (a matplotlib Figure, not pyplot: nothing global to close)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 2.8), dpi=100)
    ax = fig.subplots()
    if tokens:
        ax.hist(tokens, bins=max(1, min(bins, len(set(tokens)))), color="#f97316", edgecolor="white")
    ax.set_xlabel(f"tokens per sample (prompt + response){title}")
    ax.set_ylabel("samples")
    ax.grid(axis="y", alpha=0.3)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    return fig


def errors_markdown(result: ReadResult) -> str:
    if result.ok:
        return ""
    n = len(result.errors)
    lines = [
        f"**{result.path}: {n} bad line{'s' if n > 1 else ''}**, skipped; the "
        f"{len(result.records):,} good records are shown.",
        "",
    ]
    lines += [f"- line {e.line}: {e.reason}" for e in result.errors[:ERRORS_SHOWN]]
    if n > ERRORS_SHOWN:
        lines.append(f"- … and {n - ERRORS_SHOWN} more (python -m vichat.data validate FILE lists them all)")
    return "\n".join(lines)


def _bound(value) -> float | None:
    if value is None or value == "":
        return None
    value = float(value)
    if value < 0 or not math.isfinite(value):
        raise gr.Error("token-length bounds must be numbers >= 0")
    return value


# ----------------------------------------------------------------------------------------------- tab


class DatasetBrowser:
    """What the tab shows for a dataset, a filter and a page; one per app (files and counters cached)."""

    def __init__(self, registry: Registry, runs_dir: Path) -> None:
        self.registry, self.runs_dir = registry, runs_dir
        self.cache = DatasetCache()
        self.counters: dict[str, TokenCounter] = {}
        self.files = dataset_files(runs_dir)

    def rescan(self) -> list[str]:
        self.files = dataset_files(self.runs_dir)
        return [*self.files, UPLOADED]

    def counter(self, name: str) -> TokenCounter:
        name = (name or WHITESPACE_TOKENIZER).strip()
        if name not in self.counters:
            key = name.removeprefix(BASE_TOKENIZER)
            if name.startswith(BASE_TOKENIZER) and key in self.registry.bases:
                tokenizer = self.registry.loaded_base(key).tokenizer
                self.counters[name] = HFCounter(name=key, tokenizer=tokenizer)
            else:
                self.counters[name] = load_token_counter(name)
        return self.counters[name]

    def load(self, name: str, uploaded: str | None) -> Loaded:
        if name == UPLOADED:
            if not uploaded:
                raise gr.Error("upload a .jsonl file first")
            return self.cache.get(Path(uploaded), Path(uploaded).name, upload=True)
        path = self.files.get(name)
        if path is None or not path.is_file():
            raise gr.Error(f"{name}: no such dataset (rescan to refresh the list)")
        return self.cache.get(path)

    def show(self, name, uploaded, text, label, lo, hi, tok, per_page, number) -> tuple:
        """(table page, page number, where, bad lines, statistics, histogram, label choices)."""
        try:
            loaded = self.load(name, uploaded)
            counter = self.counter(tok)
            prompt_t, response_t = loaded.sample_tokens(counter)
        except ViChatError as e:
            raise gr.Error(str(e)) from None
        records = loaded.result.records
        tokens = [p + r for p, r in zip(prompt_t, response_t, strict=True)]
        choices = facet_choices(records)
        label = label if label in choices else ALL
        chosen = select(records, tokens, text, label, _bound(lo), _bound(hi) or None)
        per_page = int(per_page or 10)
        pages = max(1, math.ceil(len(chosen) / per_page))
        number = min(max(1, int(number or 1)), pages)
        summary = stats_from_token_counts(
            compute_stats([records[i] for i in chosen]),
            counter.name,
            [prompt_t[i] for i in chosen],
            [response_t[i] for i in chosen],
        )
        title = Path(uploaded).name if name == UPLOADED and uploaded else name
        return (
            pd.DataFrame(page_table(records, tokens, chosen, number, per_page), columns=HEADERS),
            number,
            f"{len(chosen):,} of {len(records):,} records · page {number} of {pages}",
            errors_markdown(loaded.result),
            "```\n" + format_stats(title, summary) + "\n```",
            histogram([tokens[i] for i in chosen], f", {counter.name}"),
            gr.update(choices=choices, value=label),
        )


def build_datasets_tab(registry: Registry, runs_dir: Path) -> None:
    browser = DatasetBrowser(registry, runs_dir)
    first = next(iter(browser.files), UPLOADED)
    start = (
        browser.show(first, None, "", ALL, None, None, WHITESPACE_TOKENIZER, 10, 1)
        if first != UPLOADED
        else (None, 1, "", "", "", histogram([]), gr.update(choices=[ALL], value=ALL))
    )
    with gr.Row():
        source = gr.Dropdown([*browser.files, UPLOADED], value=first, label="Dataset", scale=3)
        rescan = gr.Button("↻ Rescan runs/data", scale=1)
        upload = gr.File(
            label="Upload a JSONL file (prompt/response per line; up to 50 MB)",
            file_types=[".jsonl"],
            type="filepath",
            scale=3,
            elem_id="datasets-upload",
        )
    errors = gr.Markdown(start[3], elem_id="datasets-errors")
    with gr.Row():
        search = gr.Textbox(label="Search prompt and response (Enter)", scale=3, elem_id="datasets-search")
        facet = gr.Dropdown(start[6]["choices"], value=ALL, label="Source / category", scale=2)
        low = gr.Number(0, label="min tokens (Enter)", minimum=0, precision=0, scale=1)
        high = gr.Number(0, label="max tokens (Enter; 0 = no limit)", minimum=0, precision=0, scale=1)
        tokenizer = gr.Dropdown(
            [WHITESPACE_TOKENIZER, *(BASE_TOKENIZER + k for k in registry.bases)],
            value=WHITESPACE_TOKENIZER,
            allow_custom_value=True,
            label="Count tokens with",
            info="whitespace words, a base's tokenizer (loads the model), or a tokenizer folder / hub id",
            scale=2,
        )
    table = gr.Dataframe(
        start[0],
        headers=HEADERS,
        datatype=["number", "str", "str", "str", "number"],
        interactive=False,
        wrap=True,
        max_height=520,
        column_widths=["7%", "37%", "42%", "8%", "6%"],
        elem_id="datasets-table",
    )
    with gr.Row():
        prev = gr.Button("◀ Previous", size="sm", scale=1)
        page = gr.Number(value=1, precision=0, minimum=1, label="page (Enter)", scale=1)
        nxt = gr.Button("Next ▶", size="sm", scale=1)
        size = gr.Dropdown([10, 20, 50], value=10, label="rows per page", scale=1)
        where = gr.Markdown(start[2], elem_id="datasets-page")
    stats = gr.Markdown(start[4], elem_id="datasets-stats")
    hist = gr.Plot(start[5], label="Samples by token length", elem_id="datasets-hist")

    filters = [source, upload, search, facet, low, high, tokenizer, size]
    outputs = [table, page, where, errors, stats, hist, facet]
    opts = {"concurrency_limit": 4, "show_progress": "minimal"}

    def first_page(*values):
        return browser.show(*values, 1)

    def step(delta: int):
        return lambda *values: browser.show(*values[:-1], int(values[-1] or 1) + delta)

    for trigger in (source.input, facet.input, tokenizer.input, size.input, search.submit):
        trigger(first_page, filters, outputs, **opts)
    for trigger in (low.submit, high.submit):
        trigger(first_page, filters, outputs, **opts)
    page.submit(browser.show, [*filters, page], outputs, **opts)
    prev.click(step(-1), [*filters, page], outputs, **opts)
    nxt.click(step(+1), [*filters, page], outputs, **opts)
    upload.upload(
        lambda *values: (UPLOADED, *first_page(UPLOADED, *values[1:])), filters, [source, *outputs], **opts
    )
    rescan.click(lambda: gr.update(choices=browser.rescan()), None, source, queue=False)
