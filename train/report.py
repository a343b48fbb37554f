"""The training report laid out like the paper's Table II, and the loss curve (written atomically)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from vichat.files import atomic_writer  # noqa: E402


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


def loss_plot(rows: list[dict], path: Path, title: str) -> Path:
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    val = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss")
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        with atomic_writer(path, "wb") as stream:  # a reader (the app) never sees half a PNG
            fig.savefig(stream, format="png", dpi=110)
    finally:
        plt.close(fig)
    return path
