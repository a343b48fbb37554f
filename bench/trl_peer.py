"""TRL's SFTTrainer on train.lora's preset, data and weights: bench.train's peer row, run as a child process.

    python -m bench.trl_peer --config train/configs/gemma-chat.yaml --train_files T.jsonl \
        --validation_files V.jsonl --output_dir OUT [any other flag train.lora takes]

It takes train.lora's command line and parses it with train.config.parse, so both trainers get the very same
TrainingArguments (learning rate, schedule, warmup, seed, batch = micro-batch x accumulation, epochs, bf16 where
the CPU has it natively, logging) and LoRA settings. What a user who picks TRL instead would run, with TRL's best
settings on this machine:

- the base loaded by vichat.loading (the bundled GGUF, converted once), so TRL trains the same weights;
- a prompt-completion dataset: prompt = our template around the instruction (vichat.prompts), completion = the
  response + EOS; TRL tokenizes it, and the ids are compared with train.dataset.encode's (``same_ids``);
- SFTConfig = those TrainingArguments + ``completion_only_loss=True`` + ``padding_free=True`` (the micro-batch
  as one row; on the CPU transformers' SDPA builds the per-example block-diagonal mask from the restarting
  position ids). TRL enforces no max_length when padding-free, so it is used only when no example is longer
  than the preset's max_length (else padded batches, truncated at max_length, and the reason is recorded).
  Gradient checkpointing off (SFTConfig's default is on; train.lora does not checkpoint);
- peft_config = LoraConfig with the preset's r, alpha, dropout and target modules.

Held-out loss: the adapter TRL saved, loaded afresh onto a freshly loaded base, scored on the validation file
by the same code and settings train.lora scores its own adapter with (train.dataset.encode_all, response tokens
only; train.trainer.ViChatTrainer.evaluate; the padding-free collator where the model takes it).
Writes OUT/adapter/ and OUT/metrics.json: train_runtime, train_tokens_seen (TRL's own count), train_loss,
eval_loss, the settings used, and each example's length and labelled targets (bench.train counts FLOPs on them).
"""

from __future__ import annotations

import gc
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from train import padding_free
from train.config import accumulation, parse, world_size
from train.dataset import IGNORE, PadToLongest, encode_all
from train.lora import check_paths, load_data, resolve_base
from train.trainer import ViChatTrainer
from vichat.cli import run as run_cli
from vichat.errors import ViChatError
from vichat.files import atomic_write_json
from vichat.loading import load_base, lora_targets
from vichat.prompts import Template, get_template

TRL_PIN = "trl==1.16.0"


def check_trl() -> None:
    """TRL is a benchmark-only dependency: a clear error where it is not installed."""
    if importlib.util.find_spec("trl") is None:
        raise ViChatError(
            f"the TRL row needs TRL: pip install {TRL_PIN} (or leave the row out: python -m bench.train "
            "--rows baseline,baseline-bf16,ours)"
        )


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def prompt_completion(records: list[dict], template: Template, eos_token: str) -> list[dict]:
    """TRL's prompt-completion rows: the prompt as our template builds it, the response (stripped) + EOS."""
    return [
        {"prompt": template.build(r["prompt"]), "completion": r["response"].strip() + eos_token}
        for r in records
    ]


def lora_config(model_args, model_type: str):
    from peft import LoraConfig

    return LoraConfig(
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=model_args.target_modules or lora_targets(model_type),
        bias="none",
        task_type="CAUSAL_LM",
    )


def sft_config(training, *, padding_free_on: bool, max_length: int | None):
    """SFTConfig holding every TrainingArguments value of the preset, plus TRL's switches for this run."""
    from trl import SFTConfig

    fields = training.to_dict()
    fields["hub_token"] = training.hub_token  # to_dict masks it
    fields.update(
        completion_only_loss=True,
        padding_free=padding_free_on,
        max_length=max_length,
        gradient_checkpointing=False,
    )
    return SFTConfig(**fields)


def labelled_targets(labels: list[int]) -> int:
    """Positions whose next token is scored (the shift drops the first label)."""
    return sum(1 for label in labels[1:] if label != IGNORE)


def held_out_loss(spec, adapter_dir: Path, val_records, template, data_args, training, device: str) -> float:
    """train.lora's validation loss, on TRL's saved adapter loaded afresh onto the base."""
    from datasets import Dataset
    from peft import PeftModel
    from transformers import DataCollatorWithFlattening

    base = load_base(spec, device, progress=note)
    model = PeftModel.from_pretrained(base.model, adapter_dir, is_trainable=False)
    tokenizer = base.tokenizer
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    val_set, _ = encode_all(val_records, tokenizer, template, data_args.max_length, False, "validation")
    collator = PadToLongest(tokenizer.pad_token_id)
    if data_args.padding_free and padding_free.enable(model, data_args.max_length):
        collator = DataCollatorWithFlattening(return_flash_attn_kwargs=True, separator_id=IGNORE)
    training.remove_unused_columns = False
    training.label_names = ["labels"]
    training.prediction_loss_only = True
    trainer = ViChatTrainer(
        model=model, args=training, eval_dataset=Dataset.from_list(val_set), data_collator=collator
    )
    return float(trainer.evaluate()["eval_loss"])


def main(argv: Sequence[str] | None = None) -> int:
    check_trl()
    import trl
    from datasets import Dataset
    from transformers import set_seed
    from trl import SFTTrainer

    model_args, data_args, training, _ = parse(list(argv) if argv is not None else None)
    training.gradient_accumulation_steps = accumulation(
        data_args.total_batch_size, training.per_device_train_batch_size, world_size()
    )
    out = Path(training.output_dir)
    check_paths(out, data_args)
    train_records, val_records = load_data(data_args, training.seed)
    if not val_records:
        raise ViChatError(
            "bench.trl_peer needs validation records (validation_files or validation_fraction > 0)"
        )
    template = get_template(model_args.template)
    device = "cuda:0" if torch.cuda.is_available() else "cpu"
    spec = resolve_base(model_args)

    set_seed(training.seed)
    base = load_base(spec, device, progress=note)
    tokenizer = base.tokenizer
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    # our encoding of the same records: the ids TRL must arrive at, and the lengths that decide padding-free
    ours, _ = encode_all(train_records, tokenizer, template, 10**9, False, "train_files")
    longest = max(len(e["input_ids"]) for e in ours)
    padding_free_on = data_args.padding_free and longest <= data_args.max_length
    why = (
        "padding-free: the micro-batch as one row, SDPA with a block-diagonal mask from the position ids"
        if padding_free_on
        else (
            "padded: padding_free is off in the preset"
            if not data_args.padding_free
            else f"padded: an example of {longest} tokens exceeds max_length {data_args.max_length}, and TRL "
            "enforces no max_length when padding-free"
        )
    )
    note(f"TRL {trl.__version__}: {why}")
    args = sft_config(
        training,
        padding_free_on=padding_free_on,
        max_length=None if padding_free_on else data_args.max_length,
    )
    trainer = SFTTrainer(
        model=base.model,
        args=args,
        train_dataset=Dataset.from_list(prompt_completion(train_records, template, tokenizer.eos_token)),
        processing_class=tokenizer,
        peft_config=lora_config(model_args, base.model.config.model_type),
    )
    prepared = trainer.train_dataset
    ids, labels = prepared["input_ids"], prepared["labels"]
    limit = args.max_length or longest
    same_ids = sum(1 for a, b in zip(ids, ours, strict=False) if a == b["input_ids"][:limit])
    result = trainer.train()
    metrics = dict(result.metrics)
    metrics["train_tokens_seen"] = int(trainer._total_train_tokens)  # TRL's own count (its num_tokens log)
    adapter_dir = out / "adapter"
    trainer.save_model(str(adapter_dir))
    del trainer, base
    gc.collect()

    metrics["eval_loss"] = held_out_loss(
        spec, adapter_dir, val_records, template, data_args, training, device
    )
    metrics.update(
        {
            "trl_version": trl.__version__,
            "padding_free": padding_free_on,
            "layout": why,
            "bf16": bool(args.bf16),
            "gradient_checkpointing": bool(args.gradient_checkpointing),
            "completion_only_loss": True,
            "effective_batch": data_args.total_batch_size,
            "per_device_train_batch_size": args.per_device_train_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "learning_rate": args.learning_rate,
            "examples": len(ids),
            "same_ids": same_ids,
            "example_lengths": [len(x) for x in ids],
            "labelled_targets": [labelled_targets(x) for x in labels],
        }
    )
    atomic_write_json(out / "metrics.json", metrics, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
