"""Training presets: typed dataclasses read from a YAML file and/or the command line (the same thing).

    python -m train.lora --config train/configs/gemma-chat.yaml [--learning_rate 1e-4 ...]

A preset holds three groups of fields: :class:`ModelArguments`, :class:`DataArguments` and
transformers' ``TrainingArguments`` (output_dir, num_train_epochs, learning_rate, ...). Unknown keys and
out-of-range values are errors that name the key before any training starts.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from transformers import HfArgumentParser, TrainingArguments

from vichat.errors import ViChatError
from vichat.paths import MODELS_YAML
from vichat.prompts import template_names


class PresetError(ViChatError):
    pass


@dataclass
class ModelArguments:
    base: str = field(metadata={"help": "a base key of assets/models.yaml, a hub id, or a local folder"})
    template: str = field(default="chat", metadata={"help": "prompt template: chat | doctor"})
    variant_name: str | None = field(default=None, metadata={"help": "name the adapter's variant gets"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank (paper: 8)"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha (paper recipe: 16)"})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout (paper recipe: 0.05)"})
    target_modules: list[str] | None = field(
        default=None,
        metadata={"help": "LoRA target modules; default by architecture (BLOOM query_key_value)"},
    )
    load_in_8bit: bool = field(default=True, metadata={"help": "int8 frozen base on CUDA (ignored on CPU)"})
    models_file: str = field(default=str(MODELS_YAML), metadata={"help": "variant file to resolve `base`"})

    def __post_init__(self) -> None:
        _check("lora_r", self.lora_r, 1, 512)
        _check("lora_alpha", self.lora_alpha, 1, 4096)
        _check("lora_dropout", self.lora_dropout, 0.0, 0.9)
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
        _check("validation_fraction", self.validation_fraction, 0.0, 0.5)
        _check("max_length", self.max_length, 16, 32768)
        _check("total_batch_size", self.total_batch_size, 1, 65536)
        if self.max_train_samples is not None:
            _check("max_train_samples", self.max_train_samples, 1, 10**9)
        if not self.train_files:
            raise PresetError("train_files is empty: name at least one JSONL file")


def _check(name: str, value, low, high) -> None:
    if not (low <= value <= high):
        raise PresetError(f"{name} must be in [{low}, {high}], got {value!r}")


def _as_cli(data: dict) -> list[str]:
    args: list[str] = []
    for key, value in data.items():
        args.append(f"--{key}")
        if isinstance(value, list):
            args.extend(str(v) for v in value)
        elif isinstance(value, bool):
            args.append("true" if value else "false")
        elif value is None:
            args.pop()
        else:
            args.append(str(value))
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


def parse(argv: list[str] | None = None) -> tuple[ModelArguments, DataArguments, TrainingArguments, bool]:
    """(model, data, training, resume) from ``--config FILE`` plus command-line overrides."""
    argv = list(sys.argv[1:] if argv is None else argv)
    preset: dict = {}
    resume = False
    if "--resume" in argv:
        argv.remove("--resume")
        resume = True
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise PresetError("--config needs a YAML file")
        path = Path(argv[i + 1])
        del argv[i : i + 2]
        try:
            preset = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as e:
            raise PresetError(f"cannot read preset {path}: {e}") from e
        if not isinstance(preset, dict):
            raise PresetError(f"preset {path} must be a mapping of settings")
    _fit_to_hardware(preset)
    # validation loss at intervals unless said otherwise (`--eval_strategy no`)
    if "eval_strategy" not in preset and not any(a.split("=")[0] == "--eval_strategy" for a in argv):
        preset["eval_strategy"] = "steps"
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    known = {a.dest for a in parser._actions}
    unknown = [k for k in preset if k not in known]
    if unknown:
        raise PresetError(f"unknown preset key(s): {', '.join(unknown)}")
    try:
        model, data, training, rest = parser.parse_args_into_dataclasses(
            args=_as_cli(preset) + argv, return_remaining_strings=True
        )
    except SystemExit as e:
        raise PresetError("invalid preset or command line (see the message above)") from e
    except ValueError as e:
        raise PresetError(str(e)) from e
    if rest:
        raise PresetError(f"unknown argument(s): {' '.join(rest)}")
    return model, data, training, resume
