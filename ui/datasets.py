"""The Datasets tab: browse our sample data, built mixtures and an uploaded JSONL.

Reading, checking, token counting and statistics are vichat.data's (what ``python -m vichat.data validate``
and ``stats`` print); this tab only pages, searches and filters the records it gets back.

Uploads are bounded (bytes and lines, by the app's policy) before they are read, and deleted when the
browser session ends. The tokenizer field takes whitespace or a base's tokenizer; a local app also takes a
tokenizer folder or a hub id, and any other path gets one message whether it exists or not (no probing).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import pandas as pd

from ui.common import refusals, session_of, ui_number
from ui.public import BASE_TOKENIZER, MB, Guard, check_upload_size
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
from vichat.loading import base_availability
from vichat.paths import ASSETS, REPO_ROOT
from vichat.registry import Registry

UPLOADED = "uploaded file"
ALL = "(all)"
FACET_FIELDS = ("source", "category", "topic")
MAX_FACET_VALUES = 50
ERRORS_SHOWN = 50
CELL_CHARS = 400
HEADERS = ["record", "prompt", "response", "labels", "tokens"]
PAGE_SIZES = (10, 20, 50)


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
    if result.ok and not result.records:
        return (
            f"**{result.path}: no records**: the file is empty or holds only blank lines; a dataset has one "
            '{"prompt": ..., "response": ...} object per line.'
        )
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


def _bound(name: str, value) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return ui_number(name, value, minimum=0)


# ----------------------------------------------------------------------------------------------- tab


class DatasetBrowser:
    """What the tab shows for a dataset, a filter and a page; one per app (files and counters cached)."""

    def __init__(self, registry: Registry, runs_dir: Path, guard: Guard | None = None) -> None:
        self.registry, self.runs_dir, self.guard = registry, runs_dir, guard or Guard()
        self.cache = DatasetCache()
        self.counters: dict[str, TokenCounter] = {}
        self._counters_lock = threading.Lock()
        self.files = dataset_files(runs_dir)

    def rescan(self) -> list[str]:
        self.files = dataset_files(self.runs_dir)
        return [*self.files, UPLOADED]

    def counter(self, name: str) -> TokenCounter:
        """The token counter for the field's value, after the policy's check (no path probing)."""
        name = self.guard.policy.check_tokenizer(name if isinstance(name, str) else None, self.registry)
        with self._counters_lock:
            if name in self.counters:
                return self.counters[name]
        key = name.removeprefix(BASE_TOKENIZER)
        if name.startswith(BASE_TOKENIZER):
            availability = base_availability(self.registry.bases[key])
            if not availability.ok:
                raise ViChatError(f"the tokenizer of {key} is unavailable here: {availability.reason}")
            counter: TokenCounter = HFCounter(name=key, tokenizer=self.registry.loaded_base(key).tokenizer)
        else:
            counter = load_token_counter(name)
        with self._counters_lock:
            return self.counters.setdefault(name, counter)

    def load(self, name: str, uploaded: str | None, session: str = "-") -> Loaded:
        if name == UPLOADED:
            if not uploaded or not isinstance(uploaded, str):
                raise gr.Error("upload a .jsonl file first")
            path = Path(uploaded)
            self.guard.uploads.track(session, path)
            if not path.is_file():
                raise gr.Error(
                    f"{path.name}: the upload is gone (deleted after its session): upload it again"
                )
            check_upload_size(path, self.guard.policy)
            return self.cache.get(path, path.name, upload=True)
        path = self.files.get(name) if isinstance(name, str) else None
        if path is None or not path.is_file():
            raise gr.Error(f"{name}: no such dataset (rescan to refresh the list)")
        return self.cache.get(path)

    def show(self, name, uploaded, text, label, lo, hi, tok, per_page, number, request: gr.Request = None):
        """(table page, page number, where, bad lines, statistics, histogram, label choices)."""
        low, high = _bound("min tokens", lo), _bound("max tokens", hi) or None
        per_page = ui_number("rows per page", per_page or PAGE_SIZES[0], minimum=1, maximum=max(PAGE_SIZES),
                             integer=True)  # fmt: skip
        number = ui_number("page", number or 1, minimum=1, integer=True)
        try:
            with refusals():
                loaded = self.load(name, uploaded, session_of(request))
                counter = self.counter(tok)
                prompt_t, response_t = loaded.sample_tokens(counter)
        except OSError as e:  # the file vanished or cannot be read between the listing and now
            raise gr.Error(f"{name}: cannot read it ({e.strerror or e}): rescan or upload it again") from None
        records = loaded.result.records
        tokens = [p + r for p, r in zip(prompt_t, response_t, strict=True)]
        choices = facet_choices(records)
        label = label if label in choices else ALL
        chosen = select(records, tokens, text if isinstance(text, str) else "", label, low, high)
        pages = max(1, math.ceil(len(chosen) / per_page))
        number = min(number, pages)
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

    def first_page(self, name, uploaded, text, label, lo, hi, tok, per_page, request: gr.Request = None):
        return self.show(name, uploaded, text, label, lo, hi, tok, per_page, 1, request)

    def previous(
        self, name, uploaded, text, label, lo, hi, tok, per_page, number, request: gr.Request = None
    ):
        number = ui_number("page", number or 1, minimum=1, integer=True)
        return self.show(name, uploaded, text, label, lo, hi, tok, per_page, max(1, number - 1), request)

    def next(self, name, uploaded, text, label, lo, hi, tok, per_page, number, request: gr.Request = None):
        number = ui_number("page", number or 1, minimum=1, integer=True)
        return self.show(name, uploaded, text, label, lo, hi, tok, per_page, number + 1, request)

    def on_upload(self, name, uploaded, text, label, lo, hi, tok, per_page, request: gr.Request = None):
        """A new upload: switch the source to it and show its first page."""
        return (UPLOADED, *self.first_page(UPLOADED, uploaded, text, label, lo, hi, tok, per_page, request))


def build_datasets_tab(registry: Registry, runs_dir: Path, guard: Guard | None = None) -> None:
    browser = DatasetBrowser(registry, runs_dir, guard)
    policy = browser.guard.policy
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
            label=f"Upload a JSONL file (prompt/response per line; up to {policy.max_upload_bytes / MB:g} MB)",
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
            policy.tokenizer_choices(registry),
            value=WHITESPACE_TOKENIZER,
            allow_custom_value=not policy.public,
            label="Count tokens with",
            info="whitespace words or a base's tokenizer (loads the model)"
            + ("" if policy.public else ", or a tokenizer folder / hub id"),
            scale=2,
            elem_id="datasets-tokenizer",
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
        size = gr.Dropdown(list(PAGE_SIZES), value=PAGE_SIZES[0], label="rows per page", scale=1)
        where = gr.Markdown(start[2], elem_id="datasets-page")
    stats = gr.Markdown(start[4], elem_id="datasets-stats")
    hist = gr.Plot(start[5], label="Samples by token length", elem_id="datasets-hist")

    filters = [source, upload, search, facet, low, high, tokenizer, size]
    outputs = [table, page, where, errors, stats, hist, facet]
    opts = {"concurrency_limit": 4, "show_progress": "minimal"}

    for trigger in (source.input, facet.input, tokenizer.input, size.input, search.submit):
        trigger(browser.first_page, filters, outputs, **opts)
    for trigger in (low.submit, high.submit):
        trigger(browser.first_page, filters, outputs, **opts)
    page.submit(browser.show, [*filters, page], outputs, **opts)
    prev.click(browser.previous, [*filters, page], outputs, **opts)
    nxt.click(browser.next, [*filters, page], outputs, **opts)
    upload.upload(browser.on_upload, filters, [source, *outputs], **opts)
    rescan.click(lambda: gr.update(choices=browser.rescan()), None, source, queue=False)
