"""The LoRA trainer: transformers' Trainer with a response-only loss that skips the LM head where no label is.

On small-vocabulary-heavy models (Gemma's head is 262k x 640, most of its compute per token) computing logits
only at the positions that carry a label saves most of the head's work on prompt and padding tokens.

Checkpoints are only as good as the last one that is whole and finite, so :class:`CheckpointGuard` checks the
trainable (LoRA) weights before a checkpoint is saved (a non-finite weight stops the run, and that checkpoint
is never written) and, once the Trainer has written every file of it, fsyncs them and writes a marker
(``vichat_checkpoint.json``) last. :func:`find_checkpoints` accepts a folder on resume only with its marker, the
files it lists at their sizes, a readable ``trainer_state.json`` and finite adapter weights.

Early stopping (``early_stopping_patience`` in a preset) is transformers' ``EarlyStoppingCallback``;
``train.config`` has already set what it needs (the best checkpoint kept and loaded at the end, judged by
``eval_loss``, a checkpoint at every evaluation), and :func:`stopping_summary` says afterwards where it stopped
and which step's weights the adapter holds.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback
from transformers.trainer_pt_utils import LengthGroupedSampler

from train import head_loss
from train.dataset import IGNORE
from vichat.errors import ViChatError
from vichat.files import atomic_write_json
from vichat.loading import inner_model

CHECKPOINT_MARKER = "vichat_checkpoint.json"
CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
ADAPTER_WEIGHTS = "adapter_model.safetensors"
TRAINER_STATE = "trainer_state.json"


class TrainingDiverged(ViChatError):
    pass


def diverged(what: str, step: int, output_dir: str | os.PathLike[str]) -> TrainingDiverged:
    """The error that stops a run whose loss or weights stopped being finite, naming the checkpoint to use."""
    good, _ = find_checkpoints(Path(output_dir))
    where = (
        f"the last good checkpoint is {good[0]} (--resume continues from it)"
        if good
        else f"no good checkpoint was saved in {output_dir}"
    )
    return TrainingDiverged(
        f"{what} at step {step}: training stopped. Lower learning_rate, or use fp32/bf16 rather than fp16; "
        + where
    )


def trainable_finite(model) -> bool:
    """All trainable (LoRA) weights finite: one reduction per tensor, one sync for the lot."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return True
    with torch.no_grad():
        return bool(torch.stack([torch.isfinite(p).all() for p in params]).all())


# --------------------------------------------------------------------------- checkpoints


def checkpoint_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be resumed from (None when it is whole: marker, files, state, finite weights)."""
    marker = folder / CHECKPOINT_MARKER
    if not marker.is_file():
        return f"not completely saved (no {CHECKPOINT_MARKER}: the run stopped while writing it)"
    try:
        listed = json.loads(marker.read_text(encoding="utf-8"))["files"]
        listed = {str(k): int(v) for k, v in listed.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f"its {CHECKPOINT_MARKER} is damaged"
    for name, size in listed.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} is {path.stat().st_size} bytes, {size} were saved (cut short?)"
    try:
        state = json.loads((folder / TRAINER_STATE).read_text(encoding="utf-8"))
        int(state["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"{TRAINER_STATE} is missing or unreadable"
    weights = folder / ADAPTER_WEIGHTS
    if weights.is_file():
        try:
            from safetensors.torch import load_file

            tensors = load_file(weights)
        except Exception as e:  # a damaged safetensors header raises its own error types
            return f"{ADAPTER_WEIGHTS} is unreadable ({type(e).__name__})"
        if not all(bool(torch.isfinite(t).all()) for t in tensors.values() if t.is_floating_point()):
            return f"{ADAPTER_WEIGHTS} holds NaN or infinite weights"
    return None


def find_checkpoints(out: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """(whole checkpoints, newest first; skipped ones with the reason) among ``out/checkpoint-N``."""
    folders = []
    if out.is_dir():
        for p in out.iterdir():
            m = CHECKPOINT_NAME.match(p.name)
            if m and p.is_dir():
                folders.append((int(m.group(1)), p))
    good, skipped = [], []
    for _, folder in sorted(folders, reverse=True):
        problem = checkpoint_problem(folder)
        if problem is None:
            good.append(folder)
        else:
            skipped.append((folder, problem))
    return good, skipped


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointGuard(TrainerCallback):
    """No checkpoint of non-finite weights; a marker, written last, on every checkpoint saved whole."""

    def _check(self, args, state, control, model) -> None:
        if (
            model is not None
            and (control.should_save or control.should_evaluate)
            and not trainable_finite(model)
        ):
            control.should_save = False
            raise diverged("the LoRA weights became NaN or infinite", state.global_step, args.output_dir)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self._check(args, state, control, model)

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        self._check(args, state, control, model)

    def on_save(self, args, state, control, model=None, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if model is not None and not trainable_finite(model):  # a save path that bypassed the step check
            if state.is_world_process_zero:
                shutil.rmtree(folder, ignore_errors=True)  # never kept: it would pass for the last good one
            raise diverged("the LoRA weights became NaN or infinite", state.global_step, args.output_dir)
        if not state.is_world_process_zero or not folder.is_dir():
            return
        files = {}
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != CHECKPOINT_MARKER):
            _fsync(path)
            files[path.relative_to(folder).as_posix()] = path.stat().st_size
        atomic_write_json(folder / CHECKPOINT_MARKER, {"step": state.global_step, "files": files})


@contextlib.contextmanager
def head_bypassed(model):
    """The model's forward returns hidden states (its output head swapped for Identity) for the block.

    The real head is yielded so the caller applies it to the labelled positions only. The forward still goes
    through the (DDP/PEFT-)wrapped model, so distributed gradient sync works as usual; the head is frozen.
    """
    inner = inner_model(model)
    head = inner.get_output_embeddings()
    inner.set_output_embeddings(torch.nn.Identity())
    try:
        yield head
    finally:
        inner.set_output_embeddings(head)


MODEL_INPUTS = (
    "input_ids",
    "attention_mask",
    "position_ids",
    "cu_seq_lens_q",
    "cu_seq_lens_k",
    "max_length_q",
    "max_length_k",
)


class EpochSeededLengthSampler(LengthGroupedSampler):
    """Groups examples of similar length (little padding) in an order fixed by (seed, epoch) alone.

    transformers' own sampler draws from the global RNG, so a run resumed exactly at an epoch boundary saw
    another order than an uninterrupted run; seeding per epoch makes resume reproducible everywhere.
    """

    def __init__(self, *args, seed: int, **kwargs):
        super().__init__(*args, generator=torch.Generator(), **kwargs)
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(self.seed + int(epoch))


class ViChatTrainer(Trainer):
    """Trainer whose loss is computed from the labelled positions only (token-weighted across accumulation)."""

    def __init__(self, *args, labelled_logits_only: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        unwrapped = self.accelerator.unwrap_model(self.model)
        config = inner_model(unwrapped).config
        # A soft-capped head (Gemma 2) applies tanh after the head, inside forward: keep the plain path there.
        self.labelled_logits_only = labelled_logits_only and not getattr(
            config, "final_logit_softcapping", None
        )
        self.model_accepts_loss_kwargs = True  # we normalise by num_items_in_batch ourselves
        self.tokens_seen = 0

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.train_sampling_strategy != "group_by_length" or "length" not in dataset.column_names:
            return super()._get_train_sampler(train_dataset)
        return EpochSeededLengthSampler(
            self.args.train_batch_size * self.args.gradient_accumulation_steps,
            lengths=dataset["length"],
            seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed,
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["labels"]
        if model.training:
            real = (
                inputs["attention_mask"].sum() if "attention_mask" in inputs else inputs["input_ids"].numel()
            )
            self.tokens_seen += int(real)
        # padded batches carry attention_mask; padding-free rows carry position_ids and the examples' bounds
        model_inputs = {k: v for k, v in inputs.items() if k in MODEL_INPUTS}
        targets = labels[:, 1:]
        mask = targets != IGNORE
        if self.labelled_logits_only:
            with head_bypassed(self.accelerator.unwrap_model(model)) as head:
                hidden = model(**model_inputs).logits
            fused = head_loss.fusable(head)
            with self.accelerator.autocast():  # accelerate autocasts only the wrapped forward; the head too
                if fused:  # head and loss in one step, block by block (train.head_loss)
                    loss_sum = head_loss.head_cross_entropy(hidden[:, :-1][mask], head, targets[mask])
                else:
                    logits = head(hidden[:, :-1][mask])
            if not fused:
                loss_sum = F.cross_entropy(logits.float(), targets[mask], reduction="sum")
        else:  # what a plain HF causal-LM forward does: logits everywhere
            logits = model(**model_inputs).logits
            loss_sum = F.cross_entropy(logits[:, :-1][mask].float(), targets[mask], reduction="sum")
        if num_items_in_batch is not None and model.training:
            loss = loss_sum / num_items_in_batch
            if self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
                loss = loss * self.accelerator.num_processes
        else:
            loss = loss_sum / mask.sum().clamp(min=1)
        if not torch.isfinite(loss):
            raise diverged(f"the loss became {loss.item()}", self.state.global_step, self.args.output_dir)
        return (loss, {"loss": loss}) if return_outputs else loss


class LossLog(TrainerCallback):
    """Appends every logged loss to ``loss.jsonl`` (kept across resumes) for the curve and the report."""

    def __init__(self, path: Path):
        self.path = path
        self.start = time.time()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        row = {"step": state.global_step, "epoch": state.epoch}
        row.update({k: v for k, v in logs.items() if k in ("loss", "eval_loss", "learning_rate")})
        if len(row) > 2:
            if "loss" in row and not math.isfinite(row["loss"]):
                return
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")


# --------------------------------------------------------------------------- early stopping


def early_stopping(args) -> list[TrainerCallback]:
    """transformers' early stopping on the validation loss when the preset asks for it, else nothing."""
    patience = getattr(args, "early_stopping_patience", None)
    if not patience:
        return []
    return [EarlyStoppingCallback(patience, getattr(args, "early_stopping_threshold", None) or 0.0)]


def stopping_summary(args, state) -> dict | None:
    """After ``train()`` with early stopping: where it stopped and which evaluation the weights are from.

    ``stopped_early`` is true when the run ended before the steps it planned (max_steps or the epochs);
    ``best_step`` and ``best_eval_loss`` describe the checkpoint the Trainer loaded back at the end.
    None when early stopping was off.
    """
    patience = getattr(args, "early_stopping_patience", None)
    if not patience:
        return None
    best_step = getattr(state, "best_global_step", None)
    best = [h for h in state.log_history if "eval_loss" in h and h.get("step") == best_step]
    return {
        "early_stopping_patience": patience,
        "early_stopping_threshold": getattr(args, "early_stopping_threshold", None) or 0.0,
        "stopped_at_step": state.global_step,
        "planned_steps": state.max_steps,
        "stopped_early": state.global_step < state.max_steps,
        "best_step": best_step,
        "best_eval_loss": best[-1]["eval_loss"] if best else state.best_metric,
        "best_checkpoint_loaded": bool(args.load_best_model_at_end and state.best_model_checkpoint),
    }
