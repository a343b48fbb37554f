"""The Train tab (beyond the paper): a short demo LoRA run from the UI, with a live loss curve.

The run is the training CLI itself, ``python -m train.lora --config PRESET --max_steps N --output_dir DIR``, in
a subprocess: the app stays responsive, a crash cannot take it down, and Stop terminates it. One run at a
time per app (a run takes the CPU and its own copy of the base). When it finishes, its adapter is registered
as a new variant, so it appears in the Chat, Compare and Judge pickers.

Every setting is checked before the subprocess starts (vichat.checks for the numbers, then the CLI's own
parser when train.config offers ``validate``), so a bad value is a message, not a crashed run. The subprocess
gets a scrubbed environment: no variable whose name says key, token, secret, password or credential, so API
keys and the hub token of the app's host never reach a training run or its log. Jobs belong to the browser
session that started them: in public mode a session sees only its own run's log and curve, and training
needs the owner's secret at all.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import yaml

from ui.common import refreshed_choices, refusal, session_of, ui_number
from ui.public import Guard
from vichat import checks
from vichat.errors import ViChatError
from vichat.loading import ADAPTER_META, ADAPTER_WEIGHTS
from vichat.paths import REPO_ROOT
from vichat.registry import Registry, Variant

log = logging.getLogger(__name__)

PRESETS_DIR = REPO_ROOT / "train" / "configs"
LOSS_FILE = "loss.jsonl"
LOG_FILE = "train.log"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_STEPS = 200
TICK_S = 2.0
CHILD_ENV = {"PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}


def scrubbed_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for the training child: ``train.env``'s allow-list, no credential, unbuffered output."""
    from train.env import scrubbed_env as allowed

    return {**allowed(environ), **CHILD_ENV}


def preset_files(extra: list[Path] | None = None) -> dict[str, Path]:
    """Training presets by display name: train/configs/*.yaml, then any given on the app's command line."""
    paths = sorted(PRESETS_DIR.glob("*.yaml")) + [Path(p) for p in extra or []]
    return {(p.name if p.parent == PRESETS_DIR else str(p)): p for p in paths}


def preset_variant(path: Path) -> str:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return path.stem
    return str(data.get("variant_name") or path.stem)


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


def cli_problem(cmd: list[str]) -> None:
    """Raise the training CLI's own refusal of ``cmd`` (batch sizes, preset keys...), before a run starts.

    Uses ``train.config.validate`` when that exists (it parses exactly as ``python -m train.lora`` does and
    loads no model); without it the checks above are all there is.
    """
    try:
        from train.config import validate
    except ImportError:
        return
    try:
        validate(cmd[3:])  # after: python -m train.lora
    except SystemExit as e:  # an argparse usage error that got through
        raise ViChatError(
            f"the training settings were refused (exit {e.code}); check the extra arguments"
        ) from None


def train_command(preset: Path, max_steps: int, out_dir: Path, variant: str, extra: str = "") -> list[str]:
    """The CLI call for a demo run: the preset, a step cap, a fresh output folder, a loss point every step."""
    return [
        sys.executable, "-m", "train.lora", "--config", str(preset),
        "--max_steps", str(max_steps), "--output_dir", str(out_dir), "--variant_name", variant,
        "--logging_steps", "1", *extra_arguments(extra),
    ]  # fmt: skip


def read_loss(path: Path) -> list[dict]:
    """The rows of loss.jsonl; a line still being written is skipped."""
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def loss_figure(rows: list[dict], title: str = ""):
    """Train and validation loss by step (a matplotlib Figure, not pyplot: safe in the server's threads)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.4), dpi=100)
    ax = fig.subplots()
    train = sorted((r["step"], r["loss"]) for r in rows if "loss" in r)
    val = sorted({(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r})
    if train:
        ax.plot(*zip(*train, strict=True), "-", marker=".", label="train loss")
    if val:
        ax.plot(*zip(*val, strict=True), "o--", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title or "Loss (live, from loss.jsonl)")
    ax.grid(alpha=0.3)
    if train or val:
        ax.legend()
    ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    return fig


def log_tail(path: Path, lines: int = 15) -> str:
    """The last lines of the run's log, progress-bar redraws collapsed to their latest state."""
    try:
        text = path.read_bytes()[-20_000:].decode("utf-8", errors="replace")
    except OSError:
        return ""
    shown = [line.rsplit("\r", 1)[-1] for line in text.split("\n")]
    return "\n".join([line for line in shown if line.strip()][-lines:])


def adapter_variant(out_dir: Path, fallback_name: str) -> Variant | None:
    """The variant a finished run's adapter folder describes (its vichat.json), or None if incomplete."""
    adapter = out_dir / "adapter"
    meta_file = adapter / ADAPTER_META
    if not (adapter / ADAPTER_WEIGHTS).is_file() or not meta_file.is_file():
        return None
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    return Variant(
        name=meta.get("variant") or fallback_name,
        base=meta["base"],
        template=meta.get("template", "chat"),
        adapter=str(adapter),
        description=f"trained in the app ({out_dir.name})",
    )


def register_trained(registry: Registry, runs_dir: Path) -> list[str]:
    """Register the adapters of earlier app runs (``runs_dir/*/adapter``) that are not in the registry yet."""
    added = []
    for out_dir in sorted(p for p in runs_dir.glob("*") if p.is_dir()):
        try:
            variant = adapter_variant(out_dir, out_dir.name)
            if variant is not None and variant.name not in registry.variants:
                registry.add_variant(variant)
                added.append(variant.name)
        except (ViChatError, ValueError, KeyError) as e:  # a foreign or broken folder: skip it, say so
            log.warning("not registering %s: %s", out_dir, e)
    return added


@dataclass
class TrainJob:
    proc: subprocess.Popen
    out_dir: Path
    variant: str
    preset: str
    max_steps: int
    owner: str
    started: float
    outcome: str | None = None  # set once when the process has ended and its adapter was handled
    stopped: bool = False

    @property
    def log_path(self) -> Path:
        return self.out_dir / LOG_FILE

    @property
    def running(self) -> bool:
        return self.proc.poll() is None


class TrainJobs:
    """Training subprocesses by the browser session that started them: at most one running per app."""

    def __init__(self, registry: Registry, env: dict[str, str] | None = None) -> None:
        self.registry = registry
        self.env = env  # None: the app's environment, scrubbed at each start
        self._jobs: dict[str, TrainJob] = {}
        self._lock = threading.Lock()
        atexit.register(self.stop_all)

    @property
    def job(self) -> TrainJob | None:
        """The latest job of any session (the running one if there is one)."""
        with self._lock:
            jobs = sorted(self._jobs.values(), key=lambda j: (j.running, j.started))
        return jobs[-1] if jobs else None

    def job_for(self, owner: str, see_all: bool = False) -> TrainJob | None:
        """``owner``'s job; with ``see_all`` (a local app) the latest job when the session has none."""
        with self._lock:
            mine = self._jobs.get(owner)
        return mine if mine is not None or not see_all else self.job

    def running(self) -> TrainJob | None:
        with self._lock:
            return next((j for j in self._jobs.values() if j.running), None)

    def start(
        self, cmd: list[str], out_dir: Path, variant: str, preset: str, steps: int, owner: str
    ) -> TrainJob:
        with self._lock:
            busy = next((j for j in self._jobs.values() if j.running), None)
            if busy is not None:
                who = "you started" if busy.owner == owner else "another session started"
                raise ViChatError(
                    f"a training run ({busy.variant}, which {who}) is in progress; one at a time: wait for it"
                    + (" or stop it" if busy.owner == owner else "")
                )
            out_dir.mkdir(parents=True, exist_ok=True)
            with (out_dir / LOG_FILE).open("wb") as log_file:
                proc = subprocess.Popen(
                    cmd,
                    cwd=REPO_ROOT,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=scrubbed_env(self.env),
                    start_new_session=True,  # its own process group: Stop ends it and any workers
                )
            job = self._jobs[owner] = TrainJob(proc, out_dir, variant, preset, steps, owner, time.time())
            return job

    def stop(self, owner: str) -> str:
        with self._lock:
            job = self._jobs.get(owner)
            other = next((j for j in self._jobs.values() if j.running and j.owner != owner), None)
        if job is None or not job.running:
            if other is not None:
                return "only the browser session that started this run can stop it"
            return "no training run in progress"
        job.stopped = True
        _terminate(job.proc)
        return f"stopped {job.variant}"

    def close_session(self, owner: str) -> None:
        """Forget a closed session's finished job (a running one goes on: its adapter is still registered)."""
        with self._lock:
            job = self._jobs.get(owner)
            if job is not None and not job.running:
                self._jobs.pop(owner)

    def stop_all(self) -> None:
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            if job.running:
                _terminate(job.proc)

    def finish(self, job: TrainJob) -> str:
        """Once, after the process ended: register the adapter as a variant; the outcome in words."""
        with self._lock:
            if job.outcome is None:
                job.outcome = self._outcome(job)
            return job.outcome

    def _outcome(self, job: TrainJob) -> str:
        rc = job.proc.returncode
        if job.stopped:
            return f"Stopped {job.variant} at your request; nothing registered."
        if rc != 0:
            return f"Training {job.variant} failed (exit code {rc}); see the log below."
        try:
            variant = adapter_variant(job.out_dir, job.variant)
            if variant is None:
                return f"Training ended but {job.out_dir / 'adapter'} is incomplete; nothing registered."
            self.registry.add_variant(variant)
        except (ViChatError, ValueError, KeyError) as e:
            return f"Training finished, but the adapter could not be registered: {e}"
        return (
            f"Finished: **{variant.name}** (base {variant.base}, template {variant.template}) is registered: "
            f"pick it in Chat, Compare or Judge. Adapter: `{variant.adapter}`."
        )


def _terminate(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except (ProcessLookupError, PermissionError):
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


def report_text(out_dir: Path) -> str:
    path = out_dir / "report.md"
    if not path.is_file():
        return ""
    return "\n".join(line for line in path.read_text(encoding="utf-8").splitlines() if "![" not in line)


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
        self.guard.on_close(self.jobs.close_session)

    def start(self, preset_name, max_steps, variant, extra_args, secret=None, request: gr.Request = None):
        """(status, timer, report): the run started, or a gr.Error saying what to change."""
        try:
            self.guard.policy.check_train(secret)
        except ViChatError as e:
            raise refusal(e) from None
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
        out_dir = self.runs_dir / variant
        if out_dir.exists():
            raise gr.Error(f"{out_dir} exists from an earlier run: choose another name")
        try:
            cmd = train_command(self.presets[preset_name], steps, out_dir, variant, extra_args)
            cli_problem(cmd)
            self.jobs.start(cmd, out_dir, variant, preset_name, steps, session_of(request))
        except ViChatError as e:
            raise refusal(e) from None
        except OSError as e:
            raise gr.Error(f"cannot start the run in {out_dir}: {e.strerror or e}") from None
        return f"Starting {variant}: loading the base…", gr.Timer(active=True), ""

    def tick(self, seen, request: gr.Request = None):
        """(status, curve, log, report, timer, seen, *pickers) for this session's job."""
        job = self.jobs.job_for(session_of(request), see_all=not self.guard.public)
        same = [gr.skip() for _ in range(self.pickers)]
        if job is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.Timer(active=False), seen, *same
        loss_path = job.out_dir / LOSS_FILE
        stamp = (str(loss_path), *_stamp(loss_path))
        rows = read_loss(loss_path)
        curve = (
            gr.skip() if stamp == seen else loss_figure(rows, f"{job.variant}: loss (live, from loss.jsonl)")
        )
        tail = log_tail(job.log_path)
        if job.running:
            last = [r for r in rows if "loss" in r][-1:]
            where = (
                f"step {last[0]['step']} of {job.max_steps}, loss {last[0]['loss']:.3f}"
                if last
                else "loading"
            )
            note = f"Training **{job.variant}** ({job.preset}): {where} · {time.time() - job.started:.0f} s"
            return note, curve, tail, gr.skip(), gr.Timer(active=True), stamp, *same
        outcome = self.jobs.finish(job)
        refresh = [refreshed_choices(self.registry) for _ in range(self.pickers)]
        return outcome, curve, tail, report_text(job.out_dir), gr.Timer(active=False), stamp, *refresh

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
    names = list(presets)
    first = names[0] if names else None
    gr.Markdown(
        "Beyond the paper: a short LoRA run of a training preset, the same as "
        "`python -m train.lora --config PRESET --max_steps N`, in a separate process. When it finishes, its "
        "adapter becomes a new variant in Chat, Compare and Judge. One run at a time."
    )
    with gr.Row():
        preset = gr.Dropdown(names, value=first, label="Preset", scale=3, elem_id="train-preset")
        steps = gr.Slider(1, MAX_STEPS, value=5, step=1, label="max steps (a demo: keep it small)", scale=2)
        name = gr.Textbox(
            f"{preset_variant(presets[first])}-demo" if first else "",
            label="new variant name",
            scale=2,
            elem_id="train-name",
        )
    extra = gr.Textbox(
        "",
        label="extra arguments (optional, e.g. --max_length 128 --max_train_samples 64)",
        elem_id="train-extra",
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
    report = gr.Markdown(elem_id="train-report")
    timer = gr.Timer(TICK_S, active=True)  # the first tick finds a run in progress (or goes idle)
    seen = gr.State(None)  # the loss file this page last drew, so an unchanged curve is not re-sent

    start.click(
        handlers.start,
        [preset, steps, name, extra, secret],
        [status, timer, report],
        concurrency_limit=1,
        api_visibility="private",
    )
    stop.click(handlers.stop, None, status, queue=False, api_visibility="private")
    timer.tick(
        handlers.tick,
        seen,
        [status, plot, log_box, report, timer, seen, *pickers],
        queue=False,
        api_visibility="private",
    )
    preset.input(
        lambda p: f"{preset_variant(presets[p])}-demo" if p in presets else gr.skip(),
        preset,
        name,
        queue=False,
    )


def _stamp(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return (0, 0)
    return (st.st_size, st.st_mtime_ns)
