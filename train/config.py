"""Training presets: typed dataclasses read from a YAML file and/or the command line (the same thing).

    python -m train.lora --config train/configs/gemma-chat.yaml [--learning_rate 1e-4 ...]

A preset holds three groups of fields: :class:`ModelArguments`, :class:`DataArguments` and
transformers' ``TrainingArguments`` (output_dir, num_train_epochs, learning_rate, ...).

Everything a user can get wrong is caught here, before a model loads, with a message that names the file or
the flag: a preset that is not UTF-8, not YAML or not a mapping, unknown keys, and every numeric setting (NaN,
zero, negative, out of range, a total batch the micro-batch does not divide). The numeric bounds live in one
table, :data:`BOUNDS`, checked through :mod:`vichat.checks`. :func:`parse` is the one entry point: the CLI and
the app's Train tab both call it (the tab through :func:`validate`) on the same argument list.

Early stopping is two keys of our own on top of transformers' (:class:`ViChatTrainingArguments`):
``early_stopping_patience: 3`` stops the run after 3 evaluations in a row without a lower validation loss,
and the adapter saved is the best evaluation's weights; ``early_stopping_threshold`` (nats/token, default 0) is
how much lower a loss must be to count. transformers' callback needs more settings to agree (the best checkpoint
loaded at the end, judged by ``eval_loss``, a checkpoint at every evaluation); :func:`setup_early_stopping`
sets them, or refuses the preset in our words, so a user never meets transformers' own errors.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser, TrainingArguments

from vichat.checks import number
from vichat.errors import SettingsError
from vichat.paths import MODELS_YAML
from vichat.prompts import template_names


class PresetError(SettingsError):
    """A preset file or a training flag is wrong; the message names it and says the fix."""


# The numeric settings and their ranges (vichat.checks.number bounds). ``steps`` marks the Trainer's
# "a step count, or a fraction of the run below 1" fields: above 1 they must be whole.
_STEPS = {"above": 0, "maximum": 10**9, "steps": True}
BOUNDS: dict[str, dict[str, Any]] = {
    # ModelArguments
    "lora_r": {"minimum": 1, "maximum": 4096, "integer": True},
    "lora_alpha": {"minimum": 1, "maximum": 65536, "integer": True},
    "lora_dropout": {"minimum": 0, "below": 1},
    # DataArguments
    "validation_fraction": {"minimum": 0, "maximum": 0.5},
    "max_length": {"minimum": 16, "maximum": 131072, "integer": True},
    "max_train_samples": {"minimum": 1, "maximum": 10**9, "integer": True, "allow_none": True},
    "total_batch_size": {"minimum": 1, "maximum": 65536, "integer": True},
    # TrainingArguments
    "learning_rate": {"above": 0, "maximum": 10},
    "per_device_train_batch_size": {"minimum": 1, "maximum": 65536, "integer": True},
    "per_device_eval_batch_size": {"minimum": 1, "maximum": 65536, "integer": True},
    "gradient_accumulation_steps": {"minimum": 1, "maximum": 65536, "integer": True},
    "num_train_epochs": {"above": 0, "maximum": 10**6},
    "max_steps": {"minimum": -1, "maximum": 10**9, "integer": True},
    "warmup_steps": {"minimum": 0, "maximum": 10**9, "steps": True},
    "warmup_ratio": {"minimum": 0, "below": 1, "allow_none": True},
    "save_steps": _STEPS,
    "eval_steps": {**_STEPS, "allow_none": True},
    "logging_steps": _STEPS,
    "save_total_limit": {"minimum": 1, "maximum": 10**6, "integer": True, "allow_none": True},
    "weight_decay": {"minimum": 0, "maximum": 10},
    "max_grad_norm": {"minimum": 0, "maximum": 10**6},
    "adam_beta1": {"minimum": 0, "below": 1},
    "adam_beta2": {"minimum": 0, "below": 1},
    "adam_epsilon": {"above": 0, "below": 1},
    "seed": {"minimum": 0, "maximum": 2**32 - 1, "integer": True},
    "data_seed": {"minimum": 0, "maximum": 2**32 - 1, "integer": True, "allow_none": True},
    "dataloader_num_workers": {"minimum": 0, "maximum": 256, "integer": True},
    # ViChatTrainingArguments
    "early_stopping_patience": {"minimum": 1, "maximum": 10**6, "integer": True, "allow_none": True},
    "early_stopping_threshold": {"minimum": 0, "maximum": 100},
}

LIST_KEYS = frozenset({"train_files", "validation_files", "target_modules"})


def check_value(name: str, value: Any) -> Any:
    """``value`` checked against :data:`BOUNDS` (returned converted); names without bounds pass as they are."""
    bounds = dict(BOUNDS.get(name, {}))
    if not bounds:
        return value
    steps = bounds.pop("steps", False)
    value = number(name, value, **bounds)
    if steps and value is not None and value > 1 and value != int(value):
        raise SettingsError(
            f"{name} must be a whole number of steps above 1, or a fraction of the run below 1 "
            f"(got {value:g})"
        )
    if name == "max_steps" and value == 0:
        raise SettingsError("max_steps must be -1 (no cap: num_train_epochs decides) or >= 1 (got 0)")
    return value


def check_values(values: dict[str, Any], where: str = "") -> None:
    """Every numeric setting in ``values`` within its range; ``where`` (a file) prefixes the message."""
    for name, value in values.items():
        try:
            check_value(name, value)
        except SettingsError as e:
            raise PresetError(f"{where}: {e}" if where else str(e)) from None


@dataclass
class ModelArguments:
    base: str = field(metadata={"help": "a base key of assets/models.yaml, a hub id, or a local folder"})
    template: str = field(default="chat", metadata={"help": "prompt template: chat | doctor"})
    variant_name: str | None = field(default=None, metadata={"help": "name the adapter's variant gets"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank (paper: 8)"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha (paper recipe: 16)"})
    lora_dropout: float = field(
        default=0.05, metadata={"help": "LoRA dropout in [0, 1) (paper recipe: 0.05)"}
    )
    target_modules: list[str] | None = field(
        default=None,
        metadata={"help": "LoRA target modules; default by architecture (BLOOM query_key_value)"},
    )
    load_in_8bit: bool = field(default=True, metadata={"help": "int8 frozen base on CUDA (ignored on CPU)"})
    models_file: str = field(default=str(MODELS_YAML), metadata={"help": "variant file to resolve `base`"})
    init_adapter: str | None = field(
        default=None,
        metadata={
            "help": "a LoRA adapter folder (same base, rank, alpha and targets) whose weights the run starts "
            "from, with a fresh optimizer and schedule: continue an adapter on more or other data"
        },
    )

    def __post_init__(self) -> None:
        check_values(dataclasses.asdict(self))
        if self.template not in template_names():
            raise PresetError(f"template must be one of {', '.join(template_names())}, got {self.template!r}")


@dataclass
class DataArguments:
    train_files: list[str] = field(metadata={"help": "prompt/response JSONL files"})
    validation_files: list[str] | None = field(default=None, metadata={"help": "held-out JSONL files"})
    validation_fraction: float = field(
        default=0.1, metadata={"help": "held out from train_files when validation_files is not given"}
    )
    max_length: int = field(default=512, metadata={"help": "max tokens per example (paper: 512)"})
    train_on_inputs: bool = field(default=False, metadata={"help": "loss on prompt tokens too (Alpaca-LoRA)"})
    max_train_samples: int | None = field(
        default=None, metadata={"help": "use only the first N (after shuffle)"}
    )
    total_batch_size: int = field(
        default=128, metadata={"help": "effective batch = micro-batch x accumulation x devices (paper: 128)"}
    )
    padding_free: bool = field(
        default=True,
        metadata={
            "help": "a micro-batch is one row of its examples, attention per example, no padding (Gemma, "
            "Llama-like); BLOOM and GPT-J keep padded, length-grouped batches"
        },
    )
    baseline: bool = field(
        default=False,
        metadata={
            "help": "Alpaca-LoRA-style run for benchmarks: loss on all tokens, full logits, random order, "
            "padded batches"
        },
    )

    def __post_init__(self) -> None:
        check_values(dataclasses.asdict(self))
        if not self.train_files:
            raise PresetError("train_files is empty: name at least one JSONL file")


@dataclass
class ViChatTrainingArguments(TrainingArguments):
    """transformers' TrainingArguments plus early stopping on the validation loss (off unless a patience is set)."""

    early_stopping_patience: int | None = field(
        default=None,
        metadata={
            "help": "stop after this many evaluations in a row without a lower validation loss, keeping the "
            "best evaluation's weights (off when unset)"
        },
    )
    early_stopping_threshold: float = field(
        default=0.0,
        metadata={
            "help": "with early_stopping_patience: how much lower (nats/token) a validation loss must be"
        },
    )

    def to_dict(self) -> dict[str, Any]:
        """transformers' own settings only, so a config of the TrainingArguments family can be built from it
        (``bench.trl_peer`` builds TRL's SFTConfig so); the early-stopping keys are recorded in metrics.json."""
        d = super().to_dict()
        for name in ("early_stopping_patience", "early_stopping_threshold"):
            d.pop(name, None)
        return d


def _strategy(value: Any) -> str:
    """An eval/save strategy as its plain name ("steps", "epoch", "no", "best"), enum or string."""
    return str(getattr(value, "value", value)).lower()


def setup_early_stopping(values: dict[str, Any]) -> None:
    """Settle the settings transformers' EarlyStoppingCallback needs, or refuse the preset in our words.

    With ``early_stopping_patience``: evaluation must be on and have a validation split to run on; the best
    checkpoint is kept and loaded at the end (``load_best_model_at_end``), judged by ``eval_loss`` (lower is
    better); and a checkpoint is saved at every evaluation (``save_strategy`` = ``eval_strategy``,
    ``save_steps`` = ``eval_steps``), else the best evaluation could fall between two saves and be lost.
    """
    patience = values.get("early_stopping_patience")
    if patience is None:
        if values.get("early_stopping_threshold"):
            raise PresetError(
                "early_stopping_threshold works with early_stopping_patience (the evaluations to wait for a "
                "lower validation loss): set early_stopping_patience too, or drop the threshold"
            )
        return
    strategy = _strategy(values.get("eval_strategy"))
    if strategy not in ("steps", "epoch"):
        raise PresetError(
            "early_stopping_patience watches the validation loss, but eval_strategy is "
            f"{strategy}: set eval_strategy steps (or epoch), or drop early_stopping_patience"
        )
    if not values.get("validation_files") and not values.get("validation_fraction"):
        raise PresetError(
            "early_stopping_patience needs a validation split: set validation_fraction above 0 (e.g. 0.1) or "
            "validation_files, or drop early_stopping_patience"
        )
    metric = values.get("metric_for_best_model")
    if metric not in (None, "loss", "eval_loss") or values.get("greater_is_better"):
        raise PresetError(
            "early stopping judges by the validation loss (lower is better): remove metric_for_best_model "
            f"({metric}) and greater_is_better from the preset"
        )
    values.update(load_best_model_at_end=True, metric_for_best_model="eval_loss", greater_is_better=False)
    if _strategy(values.get("save_strategy")) == "best":  # saves exactly when the loss is a new best
        return
    if strategy == "epoch":
        values["save_strategy"] = "epoch"
        return
    every = values.get("eval_steps") or values["logging_steps"]  # transformers' own default for eval_steps
    if _strategy(values.get("save_strategy")) != "steps" or values.get("save_steps") != every:
        when = f"every {every:g} steps" if every >= 1 else f"every {every:g} of the run"
        print(
            f"note: early stopping saves a checkpoint at every evaluation ({when}), in place of save_strategy "
            f"{_strategy(values.get('save_strategy'))}, save_steps {values.get('save_steps'):g}",
            file=sys.stderr,
        )
    values.update(eval_steps=every, save_strategy="steps", save_steps=every)


def world_size() -> int:
    """Processes of this run (torchrun/accelerate set WORLD_SIZE); a bad value is a setting error too."""
    try:
        return number("WORLD_SIZE", os.environ.get("WORLD_SIZE", "1"), minimum=1, integer=True)
    except SettingsError as e:
        raise PresetError(f"environment variable {e}") from None


def accumulation(total_batch_size: int, micro: int, devices: int) -> int:
    """Gradient accumulation steps so that micro-batch x accumulation x devices = total batch."""
    per_step = micro * devices
    if total_batch_size % per_step:
        lower = max(per_step, total_batch_size // per_step * per_step)
        raise PresetError(
            f"total_batch_size {total_batch_size} must be a multiple of per_device_train_batch_size {micro} x "
            f"{devices} device(s) = {per_step}: set total_batch_size to {lower} or {lower + per_step}, or "
            "change per_device_train_batch_size"
        )
    return total_batch_size // per_step


# --------------------------------------------------------------------------- the preset file


def read_preset(path: Path) -> dict[str, Any]:
    """The settings of a YAML preset, or a PresetError naming the file and what to fix."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise PresetError(f"preset {path}: no such file") from None
    except IsADirectoryError:
        raise PresetError(f"preset {path} is a folder; give a .yaml file") from None
    except OSError as e:
        raise PresetError(f"cannot read preset {path}: {e.strerror or e}") from None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in raw[:4096]:
        raise PresetError(f"preset {path} is UTF-16 (or binary), not UTF-8 text: save it as UTF-8")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise PresetError(
            f"preset {path} is not UTF-8 text (invalid byte at offset {e.start}): save it as UTF-8"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise PresetError(
            f"preset {path}: YAML syntax error{where}: {e.problem or e}; fix that line"
        ) from None
    except (yaml.YAMLError, RecursionError, ValueError) as e:
        raise PresetError(f"preset {path} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        kind = {list: "a list", str: "a string"}.get(type(data), type(data).__name__)
        raise PresetError(f"preset {path} must be a mapping of `setting: value` lines, got {kind}")
    return data


def check_preset(data: dict[str, Any], path: Path, known: set[str]) -> None:
    """Keys known, each value of a usable shape, numbers in range; the message names the file."""
    unknown = [k for k in data if not isinstance(k, str) or k not in known]
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(str(k), known, n=1) if isinstance(k, str) else []
            hints.append(f"{k!r}" + (f" (did you mean {close[0]}?)" if close else ""))
        raise PresetError(
            f"preset {path}: unknown key(s) {', '.join(hints)}; see python -m train.lora --help for the settings"
        )
    for key, value in data.items():
        if isinstance(value, dict):
            raise PresetError(f"preset {path}: {key} must be a single value, not a mapping")
        if isinstance(value, list) and key not in LIST_KEYS:
            raise PresetError(f"preset {path}: {key} takes one value, not a list")
        if isinstance(value, list) and any(isinstance(v, dict | list) or v is None for v in value):
            raise PresetError(f"preset {path}: {key} must be a list of names or paths")
    check_values(data, f"preset {path}")


def _as_cli(data: dict) -> list[str]:
    args: list[str] = []
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, list):
            args.extend([f"--{key}", *(str(v) for v in value)])
        elif isinstance(value, bool):
            args.append(f"--{key}={'true' if value else 'false'}")
        else:  # `--key=value`: a value that starts with "-" stays a value
            args.append(f"--{key}={value}")
    return args


def _fit_to_hardware(preset: dict) -> None:
    """Without CUDA, train on the CPU; bf16 there only where the CPU has native bf16 (else fp32, said)."""
    import torch

    if torch.cuda.is_available():
        return
    preset.setdefault("use_cpu", True)
    preset.pop("fp16", None)
    if preset.get("bf16") and not _cpu_has_bf16():
        print("note: this CPU has no native bf16; training in float32", file=sys.stderr)
        preset["bf16"] = False


def _cpu_has_bf16() -> bool:
    import torch

    check = getattr(torch.cpu, "_is_avx512_bf16_supported", None) or getattr(
        torch.cpu, "_is_amx_tile_supported", None
    )
    return bool(check and check())


class _Parser(HfArgumentParser):
    """argparse's usage errors as a PresetError (one line), not a page of usage and SystemExit."""

    def error(self, message: str):  # type: ignore[override]
        raise PresetError(f"{message} (see python -m train.lora --help)")


def _take(argv: list[str], flag: str) -> str | None:
    """Remove ``flag VALUE`` or ``flag=VALUE`` from argv; return VALUE (None when absent)."""
    for i, a in enumerate(argv):
        if a == flag:
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                raise PresetError(f"{flag} needs a YAML file")
            value = argv[i + 1]
            del argv[i : i + 2]
            return value
        if a.startswith(flag + "="):
            del argv[i]
            return a.split("=", 1)[1]
    return None


def parse(
    argv: list[str] | None = None,
) -> tuple[ModelArguments, DataArguments, ViChatTrainingArguments, bool]:
    """(model, data, training, resume) from ``--config FILE`` plus command-line overrides, all checked."""
    argv = list(sys.argv[1:] if argv is None else argv)
    resume = "--resume" in argv
    argv = [a for a in argv if a != "--resume"]
    config = _take(argv, "--config")
    parser = _Parser((ModelArguments, DataArguments, ViChatTrainingArguments))
    known = {a.dest for a in parser._actions}
    preset: dict = {}
    if config is not None:
        path = Path(config)
        preset = read_preset(path)
        check_preset(preset, path, known)
    _fit_to_hardware(preset)
    # validation loss at intervals unless said otherwise (`--eval_strategy no`)
    if "eval_strategy" not in preset and not any(a.split("=")[0] == "--eval_strategy" for a in argv):
        preset["eval_strategy"] = "steps"
    namespace, rest = parser.parse_known_args(args=_as_cli(preset) + argv)
    if rest:
        raise PresetError(f"unknown argument(s): {' '.join(rest)} (see python -m train.lora --help)")
    values = vars(namespace)
    check_values(values)  # the command line's values, with the preset's under them
    accumulation(values["total_batch_size"], values["per_device_train_batch_size"], world_size())
    setup_early_stopping(values)
    groups = []
    for dtype in (ModelArguments, DataArguments, ViChatTrainingArguments):
        keys = {f.name for f in dataclasses.fields(dtype) if f.init}
        try:
            groups.append(dtype(**{k: v for k, v in values.items() if k in keys}))
        except PresetError:
            raise
        except (ValueError, TypeError) as e:  # TrainingArguments' own checks
            raise PresetError(f"invalid training settings: {e}") from None
    model, data, training = groups
    return model, data, training, resume


def validate(argv: list[str]) -> tuple[ModelArguments, DataArguments, ViChatTrainingArguments]:
    """Raise :class:`PresetError` (a SettingsError) if ``python -m train.lora ARGV`` would refuse to start.

    For the app's Train tab: the same checks as the CLI (preset file, keys, every number, batch sizes), run
    before a subprocess is started. Loads no model and reads no data. Returns the settings the run will get.
    """
    model, data, training, _ = parse(argv)
    return model, data, training
