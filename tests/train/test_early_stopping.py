"""Early stopping on the validation loss: the preset keys, their checks, and a real run that stops early.

The run is built to overfit at once: a tiny random BLOOM, with LoRA on its output head too, learns to give one
answer to every prompt while its validation split holds answers in another register entirely (code), so after
a step or two every training step makes the held-out answers less likely and the validation loss climbs. The
same run without early stopping goes all its steps (and shows the climb), so the early one's stop is the
callback's doing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from train.config import PresetError, parse
from train.lora import run
from vichat.paths import REPO_ROOT

PROMPTS = [
    "Thủ đô của Việt Nam là gì?",
    "Tôi bị sốt nhẹ, nên làm gì?",
    "Viết một câu về mùa thu.",
    "Thành phố lớn nhất là gì?",
]
TRAIN = [{"prompt": p, "response": "Hà Nội Hà Nội Hà Nội."} for p in PROMPTS] * 4
VALIDATION = [
    {"prompt": "Thủ đô của Việt Nam là gì?", "response": "def add(a, b): return a + b  # 1 2 3"},
    {"prompt": "Viết một câu về mùa thu.", "response": "def add(a, b): return a + b  # 4 5 6"},
]
MAX_STEPS = 12


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def preset(folder: Path, base: Path, **overrides) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {
        "base": str(base),
        "template": "chat",
        "variant_name": "Tiny-Early",
        "train_files": [write_jsonl(folder / "train.jsonl", TRAIN)],
        "validation_files": [write_jsonl(folder / "validation.jsonl", VALIDATION)],
        "max_length": 96,
        "total_batch_size": 2,
        "per_device_train_batch_size": 2,
        "target_modules": ["query_key_value", "lm_head"],  # the head too: the answer is learnt in a few steps
        "learning_rate": 0.05,
        "lr_scheduler_type": "constant",
        "max_steps": MAX_STEPS,
        "logging_steps": 1,
        "eval_steps": 1,
        "save_steps": 7,  # not a multiple of eval_steps: transformers alone would refuse this with early stopping
        "save_total_limit": 2,
        "output_dir": str(folder / "run"),
        "report_to": "none",
        "seed": 0,
    }
    cfg.update(overrides)
    path = folder / "preset.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def eval_losses(out: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (out / "loss.jsonl").read_text(encoding="utf-8").splitlines()]
    return {r["step"]: r["eval_loss"] for r in rows if "eval_loss" in r}


def test_a_rising_validation_loss_stops_the_run_and_keeps_the_best_weights(tmp_path, tiny_models):
    # without early stopping: every step runs, and the validation loss does rise (the construction holds)
    plain = tmp_path / "plain"
    metrics = run(*parse(["--config", str(preset(plain, tiny_models["bloom"]))]))
    losses = eval_losses(plain / "run")
    assert sorted(losses) == list(range(1, MAX_STEPS + 1)) and "early_stopping" not in metrics
    assert losses[MAX_STEPS] > min(losses.values()) + 1, losses

    early = tmp_path / "early"
    patience = 2
    metrics = run(
        *parse(["--config", str(preset(early, tiny_models["bloom"], early_stopping_patience=patience))])
    )
    out = early / "run"
    losses = eval_losses(out)
    stop = metrics["early_stopping"]
    best_step = min(losses, key=losses.get)
    assert stop["stopped_early"] and stop["stopped_at_step"] == max(losses) < MAX_STEPS, (stop, losses)
    assert stop["best_step"] == best_step and stop["best_checkpoint_loaded"]
    # it waited exactly `patience` evaluations without a better loss after the best one
    assert max(losses) - best_step == patience
    assert metrics["eval_loss"] == pytest.approx(losses[best_step])  # the weights' own loss, not the last
    # the adapter saved is the best evaluation's checkpoint, which save_total_limit kept
    best = load_file(out / f"checkpoint-{best_step}" / "adapter_model.safetensors")
    saved = load_file(out / "adapter" / "adapter_model.safetensors")
    assert set(best) == set(saved) and all(bool((best[k] == saved[k]).all()) for k in best)
    last = load_file(out / f"checkpoint-{max(losses)}" / "adapter_model.safetensors")
    assert any(not bool((last[k] == saved[k]).all()) for k in last)
    report = (out / "report.md").read_text(encoding="utf-8")
    assert f"stopped early at step {max(losses)} of {MAX_STEPS}" in report
    assert f"the adapter holds step {best_step}'s weights" in report
    assert json.loads((out / "metrics.json").read_text())["early_stopping"]["best_step"] == best_step


def test_early_stopping_settles_what_transformers_needs(tmp_path, tiny_models):
    path = preset(tmp_path, tiny_models["bloom"], early_stopping_patience=3, early_stopping_threshold=0.01)
    _, _, training, _ = parse(["--config", str(path)])
    assert (training.early_stopping_patience, training.early_stopping_threshold) == (3, 0.01)
    assert training.load_best_model_at_end and training.metric_for_best_model == "eval_loss"
    assert training.greater_is_better is False
    assert (
        "early_stopping_patience" not in training.to_dict()
    )  # transformers' own keys (TRL's SFTConfig takes them)
    assert (str(training.save_strategy.value), training.save_steps, training.eval_steps) == ("steps", 1, 1)
    _, _, training, _ = parse(["--config", str(path), "--eval_strategy", "epoch"])
    assert str(training.save_strategy.value) == "epoch"
    _, _, training, _ = parse(["--config", str(preset(tmp_path, tiny_models["bloom"]))])  # off: untouched
    assert training.early_stopping_patience is None and not training.load_best_model_at_end
    assert training.save_steps == 7


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"early_stopping_patience": 0}, r"early_stopping_patience must be in \[1, "),
        ({"early_stopping_patience": -2}, "early_stopping_patience must be"),
        ({"early_stopping_patience": 2.5}, "early_stopping_patience must be a whole number"),
        (
            {"early_stopping_patience": "soon"},
            r"early_stopping_patience must be a whole number \(got 'soon'\)",
        ),
        (
            {"early_stopping_patience": 2, "early_stopping_threshold": -0.1},
            "early_stopping_threshold must be",
        ),
        (
            {"early_stopping_patience": 2, "early_stopping_threshold": float("nan")},
            "early_stopping_threshold",
        ),
        ({"early_stopping_threshold": 0.1}, "set early_stopping_patience too"),
        ({"early_stopping_patience": 2, "eval_strategy": "no"}, "eval_strategy is no"),
        (
            {"early_stopping_patience": 2, "metric_for_best_model": "accuracy"},
            "judges by the validation loss",
        ),
        ({"early_stopping_patience": 2, "greater_is_better": True}, "judges by the validation loss"),
        (
            {"early_stopping_patience": 2, "validation_files": None, "validation_fraction": 0},
            "validation split",
        ),
        ({"early_stoping_patience": 2}, "did you mean early_stopping_patience"),
    ],
)
def test_bad_early_stopping_keys_get_a_clear_error(tmp_path, tiny_models, keys, message):
    path = preset(tmp_path, tiny_models["bloom"])
    cfg = {**yaml.safe_load(path.read_text(encoding="utf-8")), **keys}
    cfg = {k: v for k, v in cfg.items() if v is not None}
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    with pytest.raises(PresetError, match=message):
        parse(["--config", str(path)])


def test_the_command_line_is_checked_the_same_way(tmp_path, tiny_models):
    path = preset(tmp_path, tiny_models["bloom"])
    for flags, message in (
        (["--early_stopping_patience", "0"], "early_stopping_patience must be"),
        (["--early_stopping_patience", "x"], "early_stopping_patience"),
        (["--early_stopping_patience", "2", "--eval_strategy", "no"], "eval_strategy is no"),
    ):
        with pytest.raises(PresetError, match=message):
            parse(["--config", str(path), *flags])


def _shipped() -> list[Path]:
    return sorted(
        p for p in (REPO_ROOT / "train" / "configs").glob("*.yaml") if "base" in yaml.safe_load(p.read_text())
    )


@pytest.mark.parametrize("path", _shipped(), ids=lambda p: p.stem)
def test_every_shipped_preset_takes_early_stopping(path):
    assert "# early_stopping_patience:" in path.read_text(encoding="utf-8")  # documented, off
    _, _, training, _ = parse(["--config", str(path), "--early_stopping_patience", "3"])
    assert training.load_best_model_at_end and training.save_steps == training.eval_steps
