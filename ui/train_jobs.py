"""Job control for the Train tab: start, stop and poll the training child, tail its log, say where it is.

A run is the training CLI itself (``python -m train.lora ...``) in a subprocess with its own process group: the
app stays responsive, a crash cannot take it down, and Stop ends it and any workers. At most one runs per app
(a run takes the CPU and its own copy of the base). The child gets ``train.env``'s scrubbed environment: no
variable whose name says key, token, secret, password or credential reaches a training run or its log.

Jobs belong to the browser session that started them: in public mode a session sees only its own run (its
log, curve, card), and only that session can stop it. When a run ends, :meth:`TrainJobs.finish` registers its
adapter once as a new variant. The layout that shows all this is ``ui.train``; the loss log is read by
``train.report``, the same reader the CLI's report uses.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from train.report import read_loss_log
from vichat.errors import ViChatError
from vichat.loading import ADAPTER_META, ADAPTER_WEIGHTS
from vichat.paths import REPO_ROOT
from vichat.registry import Registry, Variant

log = logging.getLogger(__name__)

LOSS_FILE = "loss.jsonl"
LOG_FILE = "train.log"
METRICS_FILE = "metrics.json"
CHILD_ENV = {"PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}


def scrubbed_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for the training child: ``train.env``'s allow-list, no credential, unbuffered output."""
    from train.env import scrubbed_env as allowed

    return {**allowed(environ), **CHILD_ENV}


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


def early_stopping_note(out_dir: Path) -> str:
    """One sentence on early stopping from the run's metrics.json ("" when it was off or is not recorded)."""
    try:
        stop = json.loads((out_dir / METRICS_FILE).read_text(encoding="utf-8")).get("early_stopping")
        if not isinstance(stop, dict):
            return ""
        where = (
            f"Stopped early at step {stop['stopped_at_step']} of {stop['planned_steps']}: the validation loss "
            f"did not fall for {stop['early_stopping_patience']} evaluations"
            if stop["stopped_early"]
            else f"Early stopping was on and the run went all {stop['planned_steps']} steps"
        )
        best = (
            f"; the adapter holds step {stop['best_step']}'s weights (validation loss {stop['best_eval_loss']:.4f})."
            if stop.get("best_checkpoint_loaded")
            else "."
        )
        return where + best
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return ""


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
    def loss_path(self) -> Path:
        return self.out_dir / LOSS_FILE

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def progress(self, rows: list[dict]) -> str:
        """Where a running job is, in one line: step, train loss, latest validation loss, time."""
        train = [r for r in rows if "loss" in r][-1:]
        val = [r for r in rows if "eval_loss" in r]
        where = (
            f"step {train[0]['step']} of {self.max_steps}, loss {train[0]['loss']:.3f}"
            if train
            else "loading"
        )
        if val:
            best = min(val, key=lambda r: r["eval_loss"])
            where += f", validation {val[-1]['eval_loss']:.3f} (best {best['eval_loss']:.3f} at step {best['step']})"
        return f"Training **{self.variant}** ({self.preset}): {where} · {time.time() - self.started:.0f} s"


@dataclass
class Poll:
    """What one look at a job finds: its loss rows and log tail, whether it still runs, and the status."""

    job: TrainJob
    rows: list[dict]
    tail: str
    running: bool
    status: str


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

    def poll(self, owner: str, see_all: bool = False) -> Poll | None:
        """``owner``'s job as it is now (see :meth:`job_for`); a job that has ended is finished first."""
        job = self.job_for(owner, see_all)
        if job is None:
            return None
        running = job.running
        rows = read_loss_log(job.loss_path)
        status = job.progress(rows) if running else self.finish(job)
        return Poll(job, rows, log_tail(job.log_path), running, status)

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
        note = early_stopping_note(job.out_dir)
        return (
            f"Finished: **{variant.name}** (base {variant.base}, template {variant.template}) is registered: "
            f"pick it in Chat, Compare or Judge. Adapter: `{variant.adapter}`." + (f" {note}" if note else "")
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
