"""LoRA instruction tuning, the paper's recipe (Table II), on one machine or many.

    python -m train.lora --config train/configs/gemma-chat.yaml
    python -m train.lora --config train/configs/gemma-chat.yaml --resume          # continue a killed run
    torchrun --nproc_per_node 4 -m train.lora --config train/configs/bloomz-chat.yaml
    accelerate launch -m train.lora --config train/configs/bloomz-chat.yaml --deepspeed train/configs/zero2.json

Writes to ``output_dir``: ``adapter/`` (safetensors + vichat.json naming base and template, so the registry
loads it by folder alone; adapter_config.json naming the base's hub id; a model card README.md from
``train.card``), ``checkpoints`` (checkpoint-N/), ``validation.jsonl`` (the held-out split),
``loss.jsonl`` and ``loss.png``, ``report.md`` (Table II layout) and ``metrics.json``.

Nothing is lost to a crash or a mistake: every file written here is written atomically (the adapter folder
appears whole or not at all); the output folder is locked for the run, so a second training on it stops at
once; an output that would land on an input is refused; the preset, the data and ``vichat_run.json`` are
checked before any model loads; ``--resume`` continues from the newest checkpoint that was saved whole and
finite, and says which ones it skipped and why.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import set_seed

from train import padding_free
from train.card import ADAPTER_CONFIG as CONFIG_FILE
from train.card import CARD, recorded_base, write_card
from train.config import DataArguments, ModelArguments, PresetError, accumulation, parse, world_size
from train.dataset import IGNORE, PadToLongest, encode_all, load_records, split
from train.report import loss_plot, read_loss_log, repair_loss_log, table_ii
from train.trainer import (
    CheckpointGuard,
    LossLog,
    TrainingDiverged,
    ViChatTrainer,
    diverged,
    early_stopping,
    find_checkpoints,
    stopping_summary,
    trainable_finite,
)
from vichat.cli import run as run_cli
from vichat.errors import DataError, ViChatError
from vichat.files import (
    OutputLock,
    atomic_write_json,
    atomic_write_lines,
    atomic_write_text,
    refuse_overwriting_inputs,
)
from vichat.loading import ADAPTER_META, BaseSpec, load_base, lora_targets
from vichat.prompts import get_template
from vichat.registry import Registry

RUN_FILE = "vichat_run.json"
OUTPUTS = ("adapter", "validation.jsonl", "loss.jsonl", "loss.png", "report.md", "metrics.json", RUN_FILE)


def resolve_base(args: ModelArguments) -> BaseSpec:
    registry = Registry.from_yaml(args.models_file)
    if args.base in registry.bases:
        spec = registry.bases[args.base]
        return BaseSpec(spec.key, spec.source, spec.load_in_8bit and args.load_in_8bit, spec.description)
    return BaseSpec(args.base, args.base, args.load_in_8bit)


def world() -> tuple[int, int]:
    return world_size(), int(os.environ.get("LOCAL_RANK", 0))


def fingerprint(model_args: ModelArguments, data_args: DataArguments) -> str:
    blob = json.dumps([asdict(model_args), asdict(data_args)], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_run_state(out: Path) -> dict:
    """The run-state file of ``out``, or a PresetError that names it and says what to do (it is left as is)."""
    run_file = out / RUN_FILE
    fix = (
        f"it records which preset trained {out}: restore it, or train afresh with another output_dir "
        "(nothing in this folder was changed)"
    )
    try:
        raw = run_file.read_bytes()
    except OSError as e:
        raise PresetError(f"--resume: cannot read {run_file} ({e.strerror or e}); {fix}") from None
    try:
        state = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise PresetError(f"--resume: {run_file} is damaged (not UTF-8 text); {fix}") from None
    except (ValueError, RecursionError):
        raise PresetError(f"--resume: {run_file} is damaged (not valid JSON: cut short?); {fix}") from None
    if not isinstance(state, dict) or not isinstance(state.get("fingerprint"), str):
        raise PresetError(f"--resume: {run_file} is damaged (no fingerprint of the preset); {fix}")
    return state


def check_resume(out: Path, fp: str, resume: bool) -> Path | None:
    """The checkpoint to resume from (None for a fresh run); refuses a run that does not fit the folder."""
    has_checkpoints = any(out.glob("checkpoint-*")) if out.is_dir() else False
    if not resume:
        if has_checkpoints:
            raise PresetError(
                f"{out} already holds checkpoints: add --resume to continue, or choose another output_dir"
            )
        return None
    if not (out / RUN_FILE).is_file() or not has_checkpoints:
        raise PresetError(f"--resume: no checkpoint to resume in {out}")
    if read_run_state(out)["fingerprint"] != fp:
        raise PresetError(
            f"--resume: {out} was trained with a different preset (model/data settings differ); "
            "use the same preset or another output_dir"
        )
    good, skipped = find_checkpoints(out)
    for folder, why in skipped:
        print(f"note: --resume skips {folder.name}: {why}", file=sys.stderr)
    if not good:
        raise PresetError(
            f"--resume: no checkpoint in {out} was saved whole ({'; '.join(f'{f.name}: {w}' for f, w in skipped)});"
            " train afresh with another output_dir"
        )
    print(f"resuming from {good[0]}", file=sys.stderr)
    return good[0]


def check_paths(out: Path, data_args: DataArguments, init_adapter: str | None = None) -> None:
    """The output folder is a folder, and nothing written there lands on a data file or the starting adapter."""
    inputs = [*data_args.train_files, *(data_args.validation_files or [])]
    refuse_overwriting_inputs([out, *(out / name for name in OUTPUTS)], inputs, "output_dir")
    if init_adapter and Path(init_adapter).resolve().is_relative_to(out.resolve()):
        raise PresetError(
            f"init_adapter {init_adapter} is inside output_dir {out}, where this run writes: copy it elsewhere "
            "first, or choose another output_dir"
        )
    if out.exists() and not out.is_dir():
        raise PresetError(f"output_dir {out} is a file; choose a folder for the run's outputs")


def load_data(data_args: DataArguments, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, validation) records, checked before any model loads: bad lines name file:line, none is empty."""
    records = load_records(data_args.train_files)
    if not records:
        raise DataError(
            f"train_files ({', '.join(data_args.train_files)}) hold no records: add prompt/response lines"
        )
    if data_args.validation_files:
        train_records, val_records = records, load_records(data_args.validation_files)
        if not val_records:
            raise DataError(
                f"validation_files ({', '.join(data_args.validation_files)}) hold no records: add some, or "
                "leave validation_files out to hold out validation_fraction of train_files"
            )
    else:
        train_records, val_records = split(records, data_args.validation_fraction, seed)
        if not train_records:
            raise DataError(
                f"train_files hold {len(records)} record(s): none is left for training after holding out "
                f"validation_fraction {data_args.validation_fraction}; add data or set validation_fraction 0"
            )
    if data_args.max_train_samples:
        train_records = train_records[: data_args.max_train_samples]
    return train_records, val_records


def save_adapter(model, adapter_dir: Path, meta: dict, base_model: str) -> None:
    """Weights and vichat.json into a temp folder, then renamed: the adapter folder is whole or absent.

    ``base_model`` (the base's hub id, else the base as named) goes into adapter_config.json in place of the
    folder the weights were loaded from (a cache path on this machine, which breaks every tool that reads it).
    """
    tmp = adapter_dir.with_name(f".{adapter_dir.name}.tmp")
    old = adapter_dir.with_name(f".{adapter_dir.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    config = json.loads((tmp / CONFIG_FILE).read_text(encoding="utf-8"))
    atomic_write_json(tmp / CONFIG_FILE, {**config, "base_model_name_or_path": base_model}, indent=2)
    (tmp / CARD).unlink(missing_ok=True)  # PEFT's stub names the cache path; train.card writes the card
    atomic_write_json(tmp / ADAPTER_META, meta, indent=1)
    shutil.rmtree(old, ignore_errors=True)
    if adapter_dir.exists():
        os.replace(adapter_dir, old)
    os.replace(tmp, adapter_dir)
    shutil.rmtree(old, ignore_errors=True)


def check_init_adapter(model_args: ModelArguments, spec_key: str) -> dict | None:
    """The ``init_adapter`` folder fits the preset (checked before any model loads); what the run records of it.

    Its base (vichat.json), rank, alpha and target modules must be the preset's: a different shape cannot load,
    and a different alpha would silently rescale what the adapter learned.
    """
    if not model_args.init_adapter:
        return None
    folder = Path(model_args.init_adapter)
    weights = folder / "adapter_model.safetensors"
    for needed in (folder / CONFIG_FILE, weights):
        if not needed.is_file():
            raise PresetError(
                f"init_adapter {folder}: no {needed.name} there; name a LoRA adapter folder (as train.lora writes)"
            )
    try:
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PresetError(f"init_adapter {folder}: {CONFIG_FILE} is not valid JSON ({e})") from None
    meta_file = folder / ADAPTER_META
    meta = json.loads(meta_file.read_text(encoding="utf-8")) if meta_file.is_file() else {}
    if meta.get("base") and meta["base"] != spec_key:
        raise PresetError(
            f"init_adapter {folder} was trained on base {meta['base']!r}, this preset's is {spec_key!r}"
        )
    wanted = {"r": model_args.lora_r, "lora_alpha": model_args.lora_alpha}
    if model_args.target_modules:
        wanted["target_modules"] = sorted(model_args.target_modules)
    for key, value in wanted.items():
        have = sorted(config.get(key) or []) if key == "target_modules" else config.get(key)
        if have != value:
            raise PresetError(
                f"init_adapter {folder} has {key} {have!r}, the preset {value!r}: set the preset's "
                f"{'lora_' + key if key == 'r' else key} to the adapter's"
            )
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    return {
        "path": str(folder),
        "sha256": digest,
        "train_files": meta.get("train_files"),
        "train_sources": meta.get("train_sources"),
    }


def load_init_adapter(model, folder: Path) -> int:
    """Copy the adapter's LoRA weights into the fresh PEFT model; every LoRA tensor must be set. Returns the count."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = load_file(str(folder / "adapter_model.safetensors"))
    lora_params = {n for n, _ in model.named_parameters() if "lora_" in n}
    result = set_peft_model_state_dict(model, state)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    missing = [k for k in (getattr(result, "missing_keys", []) or []) if "lora_" in k]
    if unexpected or missing or len(state) != len(lora_params):
        raise PresetError(
            f"init_adapter {folder} does not fit this model: {len(state)} tensors for {len(lora_params)} LoRA "
            f"weights (unexpected {unexpected[:3]}, missing {missing[:3]})"
        )
    return len(state)


def prepare_model(spec: BaseSpec, model_args: ModelArguments, device: str):
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    base = load_base(spec, device, progress=lambda m: print(m, file=sys.stderr))
    model = base.model
    if getattr(model, "is_loaded_in_8bit", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    targets = model_args.target_modules or lora_targets(model.config.model_type)
    cfg = LoraConfig(
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        model = get_peft_model(model, cfg)
    except ValueError as e:
        raise PresetError(
            f"target_modules {targets} do not match this model ({model.config.model_type}): {e}"
        ) from e
    if model_args.init_adapter:
        count = load_init_adapter(model, Path(model_args.init_adapter))
        print(f"started from the {count} LoRA tensors of {model_args.init_adapter}", file=sys.stderr)
    model.train()
    return model, base.tokenizer, targets


def adapter_changes_output(model, batch: dict) -> bool:
    """The saved adapter is applied: logits with it differ from the base's."""
    model.eval()
    with torch.no_grad():
        ids = batch["input_ids"][:1].to(model.device)
        with_adapter = model(input_ids=ids).logits
        with model.disable_adapter():
            without = model(input_ids=ids).logits
    return not torch.allclose(with_adapter, without)


def run(model_args: ModelArguments, data_args: DataArguments, training, resume: bool) -> dict:
    world_size, local_rank = world()
    training.gradient_accumulation_steps = accumulation(
        data_args.total_batch_size, training.per_device_train_batch_size, world_size
    )
    out = Path(training.output_dir)
    check_paths(out, data_args, model_args.init_adapter)
    records = load_data(data_args, training.seed)  # before any model loads, and before the folder is touched
    if training.early_stopping_patience and not records[1]:
        raise PresetError("early_stopping_patience needs validation records: none were held out")
    is_main = local_rank == 0 and int(os.environ.get("RANK", 0)) == 0
    lock = OutputLock(out, f"train.lora (output_dir {out})") if is_main else contextlib.nullcontext()
    with lock:
        return _run(model_args, data_args, training, resume, records, is_main)


def _run(model_args, data_args, training, resume: bool, records, is_main: bool) -> dict:
    world_size, local_rank = world()
    micro = training.per_device_train_batch_size
    out = Path(training.output_dir)
    fp = fingerprint(model_args, data_args)
    checkpoint = check_resume(out, fp, resume)
    template = get_template(model_args.template)
    train_records, val_records = records

    cuda = torch.cuda.is_available()
    device = f"cuda:{local_rank}" if cuda else "cpu"
    if not cuda:
        training.ddp_backend = training.ddp_backend or "gloo"
        training.use_cpu = True
    spec = resolve_base(model_args)
    base_model = recorded_base(spec.key, spec.source, model_args.models_file)  # checked before training
    init = check_init_adapter(model_args, spec.key)
    set_seed(training.seed)  # LoRA's initial weights come from the seed too: a run is reproducible
    model, tokenizer, targets = prepare_model(spec, model_args, device)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    train_set, train_cut = encode_all(
        train_records,
        tokenizer,
        template,
        data_args.max_length,
        data_args.train_on_inputs or data_args.baseline,
        "train_files",
    )
    val_set, _ = (
        encode_all(val_records, tokenizer, template, data_args.max_length, False, "validation")
        if val_records
        else ([], 0)
    )

    training.remove_unused_columns = False
    training.label_names = ["labels"]
    training.prediction_loss_only = True
    if not val_set:
        training.eval_strategy = "no"
    elif training.eval_strategy != "no":
        training.eval_steps = training.eval_steps or max(1, training.logging_steps * 5)

    from datasets import Dataset

    collator = PadToLongest(tokenizer.pad_token_id)
    padding_free_on = (
        data_args.padding_free and not data_args.baseline and padding_free.enable(model, data_args.max_length)
    )
    if padding_free_on:
        from transformers import DataCollatorWithFlattening

        collator = DataCollatorWithFlattening(return_flash_attn_kwargs=True, separator_id=IGNORE)
    elif not data_args.baseline:  # padded: examples of similar length together keep the padding small
        training.train_sampling_strategy = "group_by_length"
        if data_args.padding_free:
            print(
                f"note: {model.config.model_type} trains on padded, length-grouped batches (its attention "
                "cannot run padding-free, or max_length exceeds its sliding window)",
                file=sys.stderr,
            )

    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        state = {"fingerprint": fp, "model": asdict(model_args), "data": asdict(data_args)}
        atomic_write_text(out / RUN_FILE, json.dumps(state, indent=1, default=str) + "\n")
        atomic_write_lines(out / "validation.jsonl", val_records)
        if resume:
            repair_loss_log(out / "loss.jsonl")  # a line cut by the kill would swallow the next row
        else:
            (out / "loss.jsonl").unlink(missing_ok=True)
    trainer = ViChatTrainer(
        model=model,
        args=training,
        train_dataset=Dataset.from_list(train_set),
        eval_dataset=Dataset.from_list(val_set) if val_set else None,
        data_collator=collator,
        callbacks=[CheckpointGuard(), LossLog(out / "loss.jsonl"), *early_stopping(training)],
        labelled_logits_only=not data_args.baseline,
    )
    start = time.time()
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    seconds = time.time() - start
    metrics = dict(result.metrics)
    stopping = stopping_summary(training, trainer.state)
    if val_set:
        evals = [h for h in trainer.state.log_history if "eval_loss" in h]
        if (
            stopping and stopping["best_checkpoint_loaded"]
        ):  # the weights are the best evaluation's, not the last's
            weights_step = stopping["best_step"]
        else:
            weights_step = trainer.state.global_step
        same = [h for h in evals if h.get("step") == weights_step][-1:]
        if same:  # the Trainer already evaluated these very weights
            metrics.update({k: v for k, v in same[0].items() if k.startswith("eval_")})
        else:
            metrics.update(trainer.evaluate())
    if stopping:
        metrics["early_stopping"] = stopping
    metrics["train_tokens_seen"] = trainer.tokens_seen
    metrics["padding_free"] = padding_free_on
    metrics["train_tokens_per_s"] = trainer.tokens_seen / seconds if seconds else 0.0
    rank = int(os.environ.get("RANK", 0))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        out / f"rank{rank}.json",
        {"rank": rank, "tokens_seen": trainer.tokens_seen, "global_step": trainer.state.global_step},
        indent=None,
    )
    if not trainer.is_world_process_zero():
        return metrics

    padding_free.disable(model)
    if not trainable_finite(model):
        raise diverged("the LoRA weights became NaN or infinite", trainer.state.global_step, out)
    adapter_dir = out / "adapter"
    meta = {
        "base": spec.key,
        "base_source": spec.source,
        "template": model_args.template,
        "variant": model_args.variant_name,
        "target_modules": targets,
        "train_files": data_args.train_files,
    }
    if init:
        meta["init_adapter"] = init
    save_adapter(model, adapter_dir, meta, base_model)
    probe = PadToLongest(tokenizer.pad_token_id)([val_set[0] if val_set else train_set[0]])
    if not adapter_changes_output(model, probe):
        raise ViChatError(
            f"the adapter saved in {adapter_dir} does not change the model's output (empty adapter?)"
        )

    trainable, total = model.get_nb_trainable_parameters()
    hardware = (
        f"{world_size} x {torch.cuda.get_device_name(0)}"
        if cuda
        else f"{world_size} x CPU ({os.cpu_count()} cores, {platform.machine()})"
    )
    row = {
        "model": model_args.variant_name or out.name,
        "original_params": total - trainable,
        "trainable_params": trainable,
        "training_time_s": seconds,
        "dataset": f"{len(train_set)} train / {len(val_set)} validation examples",
        "hardware": hardware,
    }
    rows = read_loss_log(out / "loss.jsonl")
    loss_plot(rows, out / "loss.png", f"{row['model']}: LoRA r={model_args.lora_r} on {spec.key}")
    metrics.update(
        {
            "truncated_examples": train_cut,
            "trainable_params": trainable,
            "total_params": total,
            "effective_batch": data_args.total_batch_size,
            "gradient_accumulation_steps": training.gradient_accumulation_steps,
            "world_size": world_size,
            "per_device_train_batch_size": micro,
            "learning_rate": training.learning_rate,
            "num_train_epochs": training.num_train_epochs,
            "max_length": data_args.max_length,
        }
    )
    atomic_write_json(out / "metrics.json", metrics, indent=1)
    atomic_write_text(
        out / "report.md",
        f"# Training report: {row['model']}\n\n{table_ii([row])}\n\n"
        f"- base: {spec.source}; template: {model_args.template}; LoRA r={model_args.lora_r}, "
        f"alpha={model_args.lora_alpha}, dropout={model_args.lora_dropout}, targets {', '.join(targets)}\n"
        f"- lr {training.learning_rate}, epochs {training.num_train_epochs}, effective batch "
        f"{data_args.total_batch_size} = {micro} x {training.gradient_accumulation_steps} x {world_size}, "
        f"max length {data_args.max_length}\n"
        f"- final train loss {metrics.get('train_loss', float('nan')):.4f}; validation loss "
        f"{metrics.get('eval_loss', float('nan')):.4f}; {metrics['train_tokens_per_s']:.0f} tokens/s\n"
        f"{stopping_line(stopping)}\n"
        "![loss](loss.png)\n",
    )
    try:  # from the files just written; the run's results are saved whatever happens here
        write_card(adapter_dir, out, model_args.models_file)
    except ViChatError as e:
        print(
            f"note: no model card written ({e}); fix that, then: python -m train.card {adapter_dir}",
            file=sys.stderr,
        )
    print(f"adapter written to {adapter_dir} (card {CARD}); report {out / 'report.md'}", file=sys.stderr)
    return metrics


def stopping_line(stopping: dict | None) -> str:
    """The report's line on early stopping ("" when it was off)."""
    if not stopping:
        return ""
    where = (
        f"stopped early at step {stopping['stopped_at_step']} of {stopping['planned_steps']}"
        if stopping["stopped_early"]
        else f"ran all {stopping['planned_steps']} steps"
    )
    best = (
        f"the adapter holds step {stopping['best_step']}'s weights (best validation loss "
        f"{stopping['best_eval_loss']:.4f})"
        if stopping["best_checkpoint_loaded"]
        else "no evaluation was saved before the end, so the adapter holds the last step's weights"
    )
    return (
        f"- early stopping (patience {stopping['early_stopping_patience']} evaluations, threshold "
        f"{stopping['early_stopping_threshold']:g}): {where}; {best}\n"
    )


def main(argv: list[str] | None = None) -> int:
    """Exit 0 on success, 2 on a user error (through vichat.cli.run), 3 when the loss or weights diverged."""
    model_args, data_args, training, resume = parse(argv)
    try:
        run(model_args, data_args, training, resume)
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
