"""The Train tab (beyond the paper): a short demo LoRA run from the UI, a live loss curve, then its card.

The run is the training CLI itself, ``python -m train.lora --config PRESET --max_steps N --output_dir DIR``, in
a subprocess that ``ui.train_jobs`` starts, stops and polls (one run at a time per app; the child gets a
scrubbed environment). This module is the layout and what its events call. The tab opens on a preset that
runs where the app runs: the small Gemma recipe on a CPU, the paper's BLOOMZ recipe on CUDA. Early stopping on
the validation loss is a tick box and a patience (``--early_stopping_patience``). When the run finishes, its
adapter is registered as a new variant (Chat, Compare and Judge pickers), and the tab shows what the run left
in its folder: the report (Table II), the quality figures of ``quality.json`` when there is one, and the
adapter's model card (``adapter/README.md``, written by ``train.card``). The live curve and the CLI's
``loss.png`` are the same reader and figure, ``train.report``'s.

Every setting is checked before the subprocess starts (vichat.checks for the numbers, then the CLI's own
parser, ``train.config.validate``), so a bad value is a message, not a crashed run. Jobs belong to the browser
session that started them: in public mode a session sees only its own run's log, curve and card, and training
needs the owner's secret at all.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import gradio as gr
import yaml

from train.report import loss_figure
from train.report import read_loss_log as read_loss
from ui.common import refreshed_choices, refusal, refusals, session_of, ui_number
from ui.public import Guard
from ui.train_jobs import (
    LOG_FILE,
    LOSS_FILE,
    TrainJob,
    TrainJobs,
    adapter_variant,
    log_tail,
    register_trained,
    scrubbed_env,
)
from vichat import checks
from vichat.errors import ViChatError
from vichat.paths import REPO_ROOT
from vichat.registry import Registry

# What other modules (app.py, tests) take from here; the job control itself lives in ui.train_jobs.
__all__ = [
    "LOG_FILE", "LOSS_FILE", "TrainHandlers", "TrainJob", "TrainJobs", "adapter_variant", "build_train_tab",
    "default_preset", "log_tail", "preset_files", "read_loss", "register_trained", "run_results",
    "scrubbed_env", "train_command",
]  # fmt: skip

PRESETS_DIR = REPO_ROOT / "train" / "configs"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_STEPS = 200
MAX_PATIENCE = 100
TICK_S = 2.0
# The preset the tab opens on: one that runs where the app runs (the first of these that is offered).
CPU_PRESETS = ("gemma-chat.yaml", "gemma-doctor.yaml")
CUDA_PRESETS = ("bloomz-chat.yaml", "gptj-chat.yaml", "bloomz-doctor.yaml", "gptj-doctor.yaml")


def preset_files(extra: list[Path] | None = None) -> dict[str, Path]:
    """Training presets by display name: train/configs/*.yaml, then any given on the app's command line."""
    paths = sorted(PRESETS_DIR.glob("*.yaml")) + [Path(p) for p in extra or []]
    return {(p.name if p.parent == PRESETS_DIR else str(p)): p for p in paths}


def default_preset(presets: dict[str, Path], cuda: bool | None = None) -> str | None:
    """The preset to open on: on CUDA the paper's (BLOOMZ-Chat), on a CPU the small Gemma one."""
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    for name in CUDA_PRESETS if cuda else CPU_PRESETS:
        if name in presets:
            return name
    return next(iter(presets), None)


def _preset_data(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def preset_variant(path: Path) -> str:
    return str(_preset_data(path).get("variant_name") or path.stem)


def preset_patience(path: Path) -> int | None:
    """The preset's own ``early_stopping_patience`` (None when it does not turn early stopping on)."""
    value = _preset_data(path).get("early_stopping_patience")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


# What the extra-arguments box may set: sizes and rates, never paths, hub pushes or plugins (a public app).
EXTRA_KEYS = frozenset(
    [
        "max_length",
        "max_train_samples",
        "validation_fraction",
        "learning_rate",
        "lr_scheduler_type",
        "warmup_steps",
        "weight_decay",
        "num_train_epochs",
        "total_batch_size",
        "per_device_train_batch_size",
        "lora_r",
        "lora_alpha",
        "lora_dropout",
        "seed",
        "eval_steps",
        "logging_steps",
        "train_on_inputs",
        "early_stopping_threshold",
    ]
)


# Bounds for the numbers the box may set (vichat.checks.number), so a bad one is refused before a run starts.
EXTRA_BOUNDS: dict[str, dict] = {
    "max_length": {"minimum": 16, "maximum": 131072, "integer": True},
    "max_train_samples": {"minimum": 1, "maximum": 10**9, "integer": True},
    "validation_fraction": {"minimum": 0, "maximum": 0.5},
    "learning_rate": {"above": 0, "maximum": 10},
    "warmup_steps": {"minimum": 0, "maximum": 10**9},
    "weight_decay": {"minimum": 0, "maximum": 10},
    "num_train_epochs": {"above": 0, "maximum": 10**6},
    "total_batch_size": {"minimum": 1, "maximum": 65536, "integer": True},
    "per_device_train_batch_size": {"minimum": 1, "maximum": 65536, "integer": True},
    "lora_r": {"minimum": 1, "maximum": 4096, "integer": True},
    "lora_alpha": {"minimum": 1, "maximum": 65536, "integer": True},
    "lora_dropout": {"minimum": 0, "below": 1},
    "seed": {"minimum": 0, "maximum": 2**32 - 1, "integer": True},
    "eval_steps": {"above": 0, "maximum": 10**9},
    "logging_steps": {"above": 0, "maximum": 10**9},
    "early_stopping_threshold": {"minimum": 0, "maximum": 100},
}
CHOICE_VALUES = {
    "lr_scheduler_type": ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
                          "constant_with_warmup", "inverse_sqrt"),
    "train_on_inputs": ("true", "false", "True", "False"),
}  # fmt: skip


def extra_arguments(text: str) -> list[str]:
    """``--key value`` pairs from the extra-arguments box, each key one of EXTRA_KEYS, each value checked."""
    if text is not None and not isinstance(text, str):
        raise ViChatError("extra arguments must be text, e.g. --max_length 128")
    try:
        tokens = shlex.split(text or "")
    except ValueError as e:
        raise ViChatError(f"extra arguments: {e}") from None
    if len(tokens) % 2 or any(not t.startswith("--") for t in tokens[::2]):
        raise ViChatError("extra arguments come as --key value pairs, e.g. --max_length 128")
    pairs = list(zip(tokens[::2], tokens[1::2], strict=True))
    bad = [key for key, value in pairs if key[2:] not in EXTRA_KEYS or value.startswith("--")]
    if bad:
        raise ViChatError(
            f"extra arguments may set only {', '.join(sorted(EXTRA_KEYS))} (each with a value); got {' '.join(bad)}"
        )
    for key, value in pairs:
        name = key[2:]
        if name in EXTRA_BOUNDS:
            checks.number(name, value, **EXTRA_BOUNDS[name])
        elif name in CHOICE_VALUES and value not in CHOICE_VALUES[name]:
            raise ViChatError(f"{name} must be one of {', '.join(CHOICE_VALUES[name])} (got {value!r})")
    return tokens


def cli_problem(cmd: list[str]):
    """The settings ``cmd`` would train with, or the training CLI's own refusal, before a run starts.

    ``train.config.validate`` parses exactly as ``python -m train.lora`` does (preset keys, every number, batch
    sizes, early stopping's needs) and loads no model.
    """
    from train.config import validate

    try:
        return validate(cmd[3:])  # after: python -m train.lora
    except SystemExit as e:  # an argparse usage error that got through
        raise ViChatError(
            f"the training settings were refused (exit {e.code}); check the extra arguments"
        ) from None


def train_command(
    preset: Path, max_steps: int, out_dir: Path, variant: str, extra: str = "", patience: int | None = None
) -> list[str]:
    """The CLI call for a demo run: the preset, a step cap, a fresh output folder, a loss point every step."""
    stopping = ["--early_stopping_patience", str(patience)] if patience else []
    return [
        sys.executable, "-m", "train.lora", "--config", str(preset),
        "--max_steps", str(max_steps), "--output_dir", str(out_dir), "--variant_name", variant,
        "--logging_steps", "1", *stopping, *extra_arguments(extra),
    ]  # fmt: skip


def stopping_reach(training, steps: int) -> str:
    """A warning when ``steps`` leave early stopping too few evaluations to ever stop the run ("" if fine)."""
    patience = getattr(training, "early_stopping_patience", None)
    every = training.eval_steps
    if not patience or str(getattr(training.eval_strategy, "value", training.eval_strategy)) != "steps":
        return ""
    if every is None or every < 1 or steps >= every * (patience + 1):
        return ""
    return (
        f" Note: the validation loss is measured every {every:g} steps, so {steps} steps give "
        f"{int(steps // every)} evaluation(s): too few for a patience of {patience} to stop the run early "
        f"(more steps, or a smaller --eval_steps in the extra arguments)."
    )


# ------------------------------------------------------------------------------------------ results


def _folder_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _headings_down(lines: list[str]) -> list[str]:
    """Markdown headings one level down (the tab's sections sit under its own), code blocks untouched."""
    out, fenced = [], False
    for line in lines:
        if line.lstrip().startswith("```"):
            fenced = not fenced
        out.append("#" + line if line.startswith("#") and not fenced else line)
    return out


def report_text(out_dir: Path) -> str:
    """The run's report.md (Table II), without its picture (the curve above shows the same)."""
    lines = [line for line in _folder_text(out_dir / "report.md").splitlines() if "![" not in line]
    return "\n".join(_headings_down(lines))


def card_text(out_dir: Path) -> str:
    """The adapter's model card for the tab: its hub metadata as a YAML block, its headings one level down."""
    text = _folder_text(out_dir / "adapter" / "README.md")
    if not text.strip():
        return ""
    matter, body = "", text
    if text.startswith("---\n") and "\n---\n" in text[4:]:
        matter, body = text[4:].split("\n---\n", 1)
    lines = _headings_down(body.splitlines())
    head = f"Hub metadata (the card's front matter):\n\n```yaml\n{matter.strip()}\n```\n\n" if matter else ""
    return head + "\n".join(lines).strip()


def quality_text(out_dir: Path, variant: str) -> str:
    """The quality figures of ``quality.json`` (adapter folder first, then the run's), as the card shows them."""
    from train.card import quality_lines
    from vichat.adapter_checks import read_json_object

    adapter = out_dir / "adapter"
    found = next((f for f in (adapter / "quality.json", out_dir / "quality.json") if f.is_file()), None)
    if found is None:
        return (
            "### Quality\n\nNo `quality.json` in this run yet: the model card's Evaluation section below says how "
            "to measure the adapter against its base (`python -m train.quality`); the figures show here then."
        )
    try:
        quality = read_json_object(found, found.parent)
    except ViChatError as e:
        return f"### Quality\n\n{e}"
    facts = {"quality": quality, "folder": adapter, "variants": [variant], "meta": {"variant": variant}}
    return "### Quality\n\n" + "\n".join(quality_lines(facts))


def run_results(out_dir: Path, variant: str) -> tuple[str, str, str]:
    """(report, quality, card) of a finished run, read from its output folder ("" where a file is missing)."""
    if not (out_dir / "adapter").is_dir():
        return report_text(out_dir), "", ""
    return report_text(out_dir), quality_text(out_dir, variant), card_text(out_dir)


# ------------------------------------------------------------------------------------------ handlers


class TrainHandlers:
    """What the Train tab's events call (plain methods, so tests call them without a browser)."""

    def __init__(
        self,
        registry: Registry,
        runs_dir: Path,
        presets: dict[str, Path],
        pickers: int = 0,
        guard: Guard | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.registry, self.runs_dir, self.presets, self.pickers = registry, runs_dir, presets, pickers
        self.guard = guard or Guard()
        self.jobs = TrainJobs(registry, env)
        if self.guard.public:  # a visitor's finished run goes with their session; a local app keeps the
            self.guard.on_close(self.jobs.close_session)  # latest, so a reloaded page shows its card again

    def start(
        self,
        preset_name,
        max_steps,
        variant,
        extra_args,
        secret=None,
        request: gr.Request = None,
        early_stop=False,
        patience=3,
    ):
        """(status, timer, report, quality, card, results): the run started, or a gr.Error saying what to change."""
        with refusals():
            self.guard.policy.check_train(secret)
        variant = (variant if isinstance(variant, str) else "").strip()
        if not isinstance(preset_name, str) or preset_name not in self.presets:
            raise gr.Error(
                f"choose a preset: one of {', '.join(self.presets) or '(none: see train/configs)'}"
            )
        if not NAME.match(variant):
            raise gr.Error("the variant name takes letters, digits, '.', '_' and '-' (up to 64)")
        if variant in self.registry.variants:
            raise gr.Error(f"a variant named {variant!r} exists already: choose another name")
        steps = ui_number("max steps", max_steps, minimum=1, maximum=MAX_STEPS, integer=True)
        wait = None
        if early_stop:
            wait = ui_number("patience", patience, minimum=1, maximum=MAX_PATIENCE, integer=True)
        elif preset_patience(self.presets[preset_name]):
            raise gr.Error(
                f"{preset_name} turns early stopping on itself (early_stopping_patience: "
                f"{preset_patience(self.presets[preset_name])}): keep the box ticked, or edit the preset"
            )
        out_dir = self.runs_dir / variant
        if out_dir.exists():
            raise gr.Error(f"{out_dir} exists from an earlier run: choose another name")
        try:
            cmd = train_command(self.presets[preset_name], steps, out_dir, variant, extra_args, wait)
            _, _, training = cli_problem(cmd)
            self.jobs.start(cmd, out_dir, variant, preset_name, steps, session_of(request))
        except ViChatError as e:
            raise refusal(e) from None
        except OSError as e:
            raise gr.Error(f"cannot start the run in {out_dir}: {e.strerror or e}") from None
        note = stopping_reach(training, steps)
        hidden = gr.Column(visible=False)
        return f"Starting {variant}: loading the base…{note}", gr.Timer(active=True), "", "", "", hidden

    def tick(self, seen, request: gr.Request = None):
        """(status, curve, log, report, quality, card, results, timer, seen, *pickers) for this session's job."""
        poll = self.jobs.poll(session_of(request), see_all=not self.guard.public)
        same = [gr.skip() for _ in range(self.pickers)]
        if poll is None:
            return (*[gr.skip()] * 7, gr.Timer(active=False), seen, *same)
        job = poll.job
        stamp = (str(job.loss_path), *_stamp(job.loss_path))
        title = f"{job.variant}: loss ({'live, ' if poll.running else ''}from loss.jsonl)"
        curve = gr.skip() if stamp == seen else loss_figure(poll.rows, title)
        if poll.running:
            return (poll.status, curve, poll.tail, *[gr.skip()] * 4, gr.Timer(active=True), stamp, *same)
        report, quality, card = run_results(job.out_dir, job.variant)
        shown = gr.Column(visible=bool(report or quality or card))
        refresh = [refreshed_choices(self.registry) for _ in range(self.pickers)]
        return (poll.status, curve, poll.tail, report, quality, card, shown, gr.Timer(active=False), stamp,
                *refresh)  # fmt: skip

    def stop(self, request: gr.Request = None) -> str:
        return self.jobs.stop(session_of(request))


OFF_MESSAGE = (
    "**Training is off on this public app.** A run takes the whole CPU for minutes; run the app on your own "
    "machine (`python app.py`) to train, or, as this Space's owner, set the `VICHAT_TRAIN_SECRET` secret."
)


def build_train_tab(
    registry: Registry,
    runs_dir: Path,
    presets: dict[str, Path],
    pickers: list[gr.components.Component],
    guard: Guard | None = None,
) -> None:
    """The Train tab; ``pickers`` are the other tabs' variant pickers, refreshed when a run registers one."""
    guard = guard or Guard()
    if not guard.policy.train_allowed:
        gr.Markdown(OFF_MESSAGE, elem_id="train-off")
        return
    handlers = TrainHandlers(registry, runs_dir, presets, len(pickers), guard)
    first = default_preset(presets)
    gr.Markdown(
        "Beyond the paper: a short LoRA run of a training preset, the same as "
        "`python -m train.lora --config PRESET --max_steps N`, in a separate process. When it finishes, its "
        "adapter becomes a new variant in Chat, Compare and Judge, and its report and model card show below. "
        "One run at a time."
    )
    with gr.Row():
        preset = gr.Dropdown(list(presets), value=first, label="Preset", scale=3, elem_id="train-preset")
        steps = gr.Slider(1, MAX_STEPS, value=5, step=1, label="max steps (a demo: keep it small)", scale=2)
        name = gr.Textbox(
            f"{preset_variant(presets[first])}-demo" if first else "",
            label="new variant name",
            scale=2,
            elem_id="train-name",
        )
    extra = gr.Textbox(
        "",
        label="extra arguments (optional, e.g. --max_length 128 --max_train_samples 64 --eval_steps 2)",
        elem_id="train-extra",
    )
    own = preset_patience(presets[first]) if first else None
    with gr.Row(equal_height=True):
        early = gr.Checkbox(
            value=own is not None,
            label="Stop early when the validation loss stops falling (keeps the best evaluation's weights)",
            scale=3,
            elem_id="train-early",
        )
        patience = gr.Number(
            own or 3,
            label="patience (evaluations without a lower validation loss)",
            minimum=1,
            maximum=MAX_PATIENCE,
            precision=0,
            scale=2,
            elem_id="train-patience",
        )
    secret = gr.Textbox(
        "",
        type="password",
        label="the owner's training secret (this public app trains only with it)",
        visible=guard.policy.train_needs_secret,
        elem_id="train-secret",
    )
    with gr.Row():
        start = gr.Button("Start training", variant="primary", elem_id="train-start")
        stop = gr.Button("Stop", elem_id="train-stop")
    status = gr.Markdown(elem_id="train-status")
    plot = gr.Plot(loss_figure([]), label="Loss", elem_id="train-loss")
    with gr.Accordion("Log", open=False):
        log_box = gr.Textbox(show_label=False, lines=10, max_lines=15, interactive=False, elem_id="train-log")
    with gr.Column(visible=False, elem_id="train-results") as results:
        report = gr.Markdown(elem_id="train-report")
        quality = gr.Markdown(elem_id="train-quality")
        with gr.Accordion("Model card (adapter/README.md, written by train.card)", open=True):
            card = gr.Markdown(elem_id="train-card")
    timer = gr.Timer(TICK_S, active=True)  # the first tick finds a run in progress (or goes idle)
    seen = gr.State(None)  # the loss file this page last drew, so an unchanged curve is not re-sent

    start.click(
        handlers.start,
        [preset, steps, name, extra, secret, early, patience],
        [status, timer, report, quality, card, results],
        concurrency_limit=1,
        api_visibility="private",
    )
    stop.click(handlers.stop, None, status, queue=False, api_visibility="private")
    timer.tick(
        handlers.tick,
        seen,
        [status, plot, log_box, report, quality, card, results, timer, seen, *pickers],
        queue=False,
        api_visibility="private",
    )

    def on_preset(evt: gr.SelectData):  # a pick (not a blur of the box): the name typed since stays
        chosen = evt.value
        if chosen not in presets:
            return gr.skip(), gr.skip(), gr.skip()
        own = preset_patience(presets[chosen])
        return f"{preset_variant(presets[chosen])}-demo", own is not None, own or gr.skip()

    preset.select(on_preset, None, [name, early, patience], queue=False, api_visibility="private")


def _stamp(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return (0, 0)
    return (st.st_size, st.st_mtime_ns)
