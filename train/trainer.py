"""The LoRA trainer: transformers' Trainer with a response-only loss that skips the LM head where no label is.

On small-vocabulary-heavy models (Gemma's head is 262k x 640, most of its compute per token) computing logits
only at the positions that carry a label saves most of the head's work on prompt and padding tokens.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback
from transformers.trainer_pt_utils import LengthGroupedSampler

from train.dataset import IGNORE
from vichat.errors import ViChatError


class TrainingDiverged(ViChatError):
    pass


@contextlib.contextmanager
def head_bypassed(model):
    """The model's forward returns hidden states (its output head swapped for Identity) for the block.

    The real head is yielded so the caller applies it to the labelled positions only. The forward still goes
    through the (DDP/PEFT-)wrapped model, so distributed gradient sync works as usual; the head is frozen.
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
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
        config = (unwrapped.get_base_model() if hasattr(unwrapped, "get_base_model") else unwrapped).config
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
            with self.accelerator.autocast():  # accelerate autocasts only the wrapped forward; the head too
                logits = head(hidden[:, :-1][mask])
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
            raise TrainingDiverged(
                f"the loss became {loss.item()} at step {self.state.global_step}: training stopped. Lower "
                "learning_rate, or use fp32/bf16 rather than fp16; the last good checkpoint is in "
                f"{self.args.output_dir}"
            )
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


def read_loss_log(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a kill, or blank
            continue
    last: dict[tuple, dict] = {}
    for r in rows:  # after a resume the same steps are logged again: keep the latest
        last[(r["step"], "eval_loss" in r)] = r
    return sorted(last.values(), key=lambda r: (r["step"], "eval_loss" in r))
