"""The training report laid out like the paper's Table II, and the one loss log reader and loss plot.

``train.lora`` appends a row to ``loss.jsonl`` at every log (``{"step", "epoch", "loss" | "eval_loss", ...}``);
the same reader and the same figure serve the CLI (``loss.png`` at the end of a run) and the app's Train tab
(the live curve while the run writes the file). The figure is a bare matplotlib ``Figure``, never pyplot's
global state, so the app's server threads can each draw one at the same time.
"""

from __future__ import annotations

import json
from pathlib import Path

from vichat.files import atomic_write_text, atomic_writer


def human(n: int) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


def duration(seconds: float) -> str:
    h, rem = divmod(int(seconds), 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def table_ii(rows: list[dict]) -> str:
    """rows: model, original_params, trainable_params, training_time_s, dataset, hardware."""
    out = [
        "| Model | Original params | Trainable params | Training time | Dataset | Hardware |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['model']} | {human(r['original_params'])} | {human(r['trainable_params'])} | "
            f"{duration(r['training_time_s'])} | {r['dataset']} | {r['hardware']} |"
        )
    return "\n".join(out)


# --------------------------------------------------------------------------- the loss log


def _loss_rows(path: Path) -> tuple[list[dict], bool]:
    """The whole rows of a loss log, and whether every line was one (a kill can cut the last line)."""
    rows, clean = [], True
    text = path.read_text(encoding="utf-8", errors="replace")
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            clean = False
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and not isinstance(row["step"], bool):
            rows.append(row)
        else:
            clean = False
    return rows, clean and (not text or text.endswith("\n"))


def read_loss_log(path: Path) -> list[dict]:
    """The rows of ``loss.jsonl`` by step, train row before validation row; [] when there is no file yet.

    Safe while the run is still writing it: a line cut short (or a kill's torn last line) is skipped. After a
    ``--resume`` the same steps are logged again; the latest row of each (step, kind) is kept.
    """
    try:
        rows, _ = _loss_rows(path)
    except OSError:  # not written yet, or a folder being replaced
        return []
    last: dict[tuple, dict] = {}
    for r in rows:
        last[(r["step"], "eval_loss" in r)] = r
    return sorted(last.values(), key=lambda r: (r["step"], "eval_loss" in r))


def repair_loss_log(path: Path) -> None:
    """Before a resume appends to it: drop a cut-short last line (atomically), so new rows stay whole."""
    if not path.is_file():
        return
    rows, clean = _loss_rows(path)
    if not clean:
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def loss_figure(rows: list[dict], title: str = "", size: tuple[float, float] = (10, 3.4)):
    """Train and validation loss by step, a matplotlib ``Figure`` (no pyplot: thread-safe in a server)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100)
    ax = fig.subplots()
    train = sorted((r["step"], r["loss"]) for r in rows if "loss" in r)
    val = sorted({(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r})
    if train:
        ax.plot(*zip(*train, strict=True), "-", marker=".", label="train loss")
    if val:
        ax.plot(*zip(*val, strict=True), "o--", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title or "Loss (from loss.jsonl)")
    ax.grid(alpha=0.3)
    if train or val:
        ax.legend()
    ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    return fig


def loss_plot(rows: list[dict], path: Path, title: str) -> Path:
    """:func:`loss_figure` saved as a PNG, atomically: a reader (the app) never sees half a picture."""
    fig = loss_figure(rows, title, size=(7, 4))
    with atomic_writer(path, "wb") as stream:
        fig.savefig(stream, format="png", dpi=110)
    return path
