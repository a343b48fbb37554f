"""The Train tab without a browser: the preset it opens on, early stopping, and a finished run's card and quality.

A real run (``python -m train.lora`` on a tiny random BLOOM, started by the tab's own handlers as a child
process) is trained once for the module; the tests then read what the tab shows from its output folder.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import gradio as gr
import pytest
import torch
import yaml

from train.config import validate
from ui.public import Guard, Policy
from ui.train import (
    TrainHandlers,
    build_train_tab,
    card_text,
    cli_problem,
    default_preset,
    extra_arguments,
    preset_files,
    preset_patience,
    stopping_reach,
    train_command,
)
from vichat.errors import ViChatError
from vichat.paths import REPO_ROOT
from vichat.registry import Registry

VARIANT = "Tiny-Tab"


def request(session: str) -> gr.Request:
    return gr.Request(session_hash=session)


def public_guard() -> Guard:
    return Guard(Policy.from_env(environ={"SPACE_ID": "someone/vichat", "VICHAT_TRAIN_SECRET": "owner"}))


# ------------------------------------------------------------------------------------ the default preset


def test_the_tab_opens_on_a_preset_that_runs_here():
    presets = preset_files()
    assert default_preset(presets, cuda=False) == "gemma-chat.yaml"  # a CPU: the small Gemma recipe
    assert default_preset(presets, cuda=True) == "bloomz-chat.yaml"  # CUDA: the paper's
    assert default_preset({"mine.yaml": Path("mine.yaml")}, cuda=False) == "mine.yaml"
    assert default_preset({}) is None
    here = "bloomz-chat.yaml" if torch.cuda.is_available() else "gemma-chat.yaml"
    assert default_preset(presets) == here


def test_the_built_tab_shows_that_preset_and_its_variant_name(tiny_registry, tmp_path):
    presets = preset_files()
    with gr.Blocks() as demo:
        build_train_tab(tiny_registry, tmp_path / "app-train", presets, [])
    by_id = {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    here = "bloomz-chat.yaml" if torch.cuda.is_available() else "gemma-chat.yaml"
    assert by_id["train-preset"].value == here  # on a CPU no longer the first file by name (bloomz-chat)
    assert by_id["train-name"].value == f"{'Bloomz' if here.startswith('bloomz') else 'Gemma'}-Chat-demo"
    assert by_id["train-early"].value is False and by_id["train-patience"].value == 3  # shipped: off


# ------------------------------------------------------------------------------------------ early stopping


def tiny_preset(folder: Path, models_yaml: Path, **overrides) -> Path:
    cfg = {
        "base": "bloom",
        "models_file": str(models_yaml),
        "template": "chat",
        "variant_name": "Tiny-Trained",
        "train_files": [str(REPO_ROOT / "assets/data/general_a.jsonl")],
        "validation_fraction": 0.25,
        "max_train_samples": 8,
        "max_length": 128,
        "total_batch_size": 2,
        "per_device_train_batch_size": 2,
        "learning_rate": 0.001,
        "num_train_epochs": 1,
        "eval_steps": 1000,
        "save_steps": 1000,
        "report_to": "none",
        "seed": 0,
        **overrides,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def test_the_patience_box_becomes_the_cli_flag_and_is_checked(tmp_path, tiny_models_yaml):
    preset = tiny_preset(tmp_path, tiny_models_yaml)
    cmd = train_command(preset, 5, tmp_path / "run", "Mine", "--eval_steps 2", patience=4)
    assert cmd[cmd.index("--early_stopping_patience") + 1] == "4"
    _, _, training = cli_problem(cmd)  # the CLI's own parser: what the run will get
    assert training.early_stopping_patience == 4 and training.load_best_model_at_end
    assert training.save_steps == training.eval_steps == 2  # the preset's 1000 follows the evaluations
    assert "--early_stopping_patience" not in train_command(preset, 5, tmp_path / "run", "Mine")
    # 5 steps at one evaluation every 2 cannot outwait a patience of 4: the tab says so
    assert "too few for a patience of 4" in stopping_reach(training, 5)
    assert stopping_reach(training, 10) == ""
    _, _, plain = validate(train_command(preset, 5, tmp_path / "run", "Mine")[3:])
    assert stopping_reach(plain, 5) == ""


def test_bad_patience_and_threshold_are_refused_before_a_run(tiny_registry, tmp_path, tiny_models_yaml):
    preset = tiny_preset(tmp_path, tiny_models_yaml)
    runs = tmp_path / "app-train"
    handlers = TrainHandlers(tiny_registry, runs, {"tiny.yaml": preset})
    for bad in (0, -1, 1.5, "x", None, float("nan"), 101):
        with pytest.raises(gr.Error, match="patience"):
            handlers.start("tiny.yaml", 5, "Mine", "", None, request("s"), True, bad)
    assert extra_arguments("--early_stopping_threshold 0.05") == ["--early_stopping_threshold", "0.05"]
    with pytest.raises(ViChatError, match="early_stopping_threshold"):
        extra_arguments("--early_stopping_threshold -1")
    with pytest.raises(ViChatError, match="extra arguments may set only"):  # the patience has its own field
        extra_arguments("--early_stopping_patience 3")
    # a threshold without the box ticked: the CLI's parser says what is missing
    with pytest.raises(gr.Error, match="set early_stopping_patience too"):
        handlers.start("tiny.yaml", 5, "Mine", "--early_stopping_threshold 0.1", None, request("s"))
    # early stopping with no validation split: refused in words, not a transformers assertion
    handlers.presets["none.yaml"] = tiny_preset(tmp_path / "none", tiny_models_yaml, validation_fraction=0)
    with pytest.raises(gr.Error, match="needs a validation split"):
        handlers.start("none.yaml", 5, "Mine", "", None, request("s"), True, 2)
    # a preset that turns early stopping on itself cannot be run with the box unticked
    handlers.presets["own.yaml"] = tiny_preset(tmp_path / "own", tiny_models_yaml, early_stopping_patience=2)
    assert preset_patience(handlers.presets["own.yaml"]) == 2
    with pytest.raises(gr.Error, match="turns early stopping on itself"):
        handlers.start("own.yaml", 5, "Mine", "", None, request("s"), False, 3)
    assert not runs.exists()  # nothing started, nothing written


# --------------------------------------------------------------------------------- a finished run's results


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_models):
    """A tiny run started through the tab (public mode, owner's session), with early stopping on; ended."""
    root = tmp_path_factory.mktemp("train-tab")
    models = {
        "bases": {"bloom": {"source": str(tiny_models["bloom"])}},
        "variants": [{"name": "bloom-base", "base": "bloom", "template": "chat"}],
    }
    models_yaml = root / "models.yaml"
    models_yaml.write_text(yaml.safe_dump(models), encoding="utf-8")
    registry = Registry.from_yaml(models_yaml, device="cpu", progress=lambda m: None)
    handlers = TrainHandlers(registry, root / "app-train", {"tiny.yaml": tiny_preset(root, models_yaml)}, 1,
                             guard=public_guard())  # fmt: skip
    started = handlers.start("tiny.yaml", 3, VARIANT, "--eval_steps 1", "owner", request("owner"), True, 1)
    job = handlers.jobs.job_for("owner")
    job.proc.wait(timeout=600)
    yield handlers, started, job
    handlers.jobs.stop_all()


def test_a_finished_run_shows_its_report_card_and_quality(finished):
    handlers, started, job = finished
    assert started[0].startswith(f"Starting {VARIANT}") and started[-1].visible is False
    status, _, tail, report, quality, card, results, timer, _, picker = handlers.tick(None, request("owner"))
    assert status.startswith(f"Finished: **{VARIANT}**"), tail
    assert VARIANT in handlers.registry.variants and picker["choices"][-1] == (VARIANT, VARIANT)
    assert results.visible is True and timer.active is False
    # early stopping was on (patience 1, an evaluation every step of 3): the outcome and the report say how it went
    assert "Stopped early at step" in status or "Early stopping was on and the run went all 3 steps" in status
    assert "- early stopping (patience 1 evaluations" in report and "| Tiny-Tab |" in report
    assert report.startswith(f"## Training report: {VARIANT}\n")
    assert "![" not in report  # the picture is the curve above
    # the model card train.card wrote, read from the adapter folder, as Markdown the tab renders
    written = (job.out_dir / "adapter" / "README.md").read_text(encoding="utf-8")
    assert written.startswith("---\n") and f"\n# {VARIANT}\n" in written
    assert card.startswith("Hub metadata (the card's front matter):\n\n```yaml\n")
    assert f"\n## {VARIANT}\n" in card and "\n### Training data\n" in card  # headings one level down
    assert "## Licence" in card and "---\n\n#" not in card
    # no quality.json yet: the tab says so, and the card's Evaluation section says how to measure it
    assert quality.startswith("### Quality") and "No `quality.json` in this run yet" in quality
    assert "python -m train.quality --variant Tiny-Tab" in card


def test_quality_numbers_appear_once_quality_json_is_there(finished):
    handlers, _, job = finished
    figures = {
        "variant": VARIANT,
        "base": "bloom-base",
        "records": 2,
        "nll_base": 5.9876,
        "nll_tuned": 5.4321,
        "answers": 2,
        "ended_by_itself": 0.5,
        "vietnamese": 1.0,
        "both": 0.5,
        "examples": [{"prompt": "Xin chào", "base": "...", "tuned": "Chào bạn"}],
    }
    path = job.out_dir / "adapter" / "quality.json"
    path.write_text(json.dumps(figures), encoding="utf-8")
    try:
        quality = handlers.tick(None, request("owner"))[4]
        assert "| `nll_tuned` | 5.4321 |" in quality and "| `ended_by_itself` | 0.5000 |" in quality
        assert "lowers the NLL of the references by 0.5555 nats/token" in quality
        path.write_text("{not json", encoding="utf-8")  # damaged: a message, not a traceback
        assert "quality.json is not valid JSON" in handlers.tick(None, request("owner"))[4]
    finally:
        path.unlink()


def test_only_the_owner_session_sees_the_card(finished):
    handlers, _, job = finished
    visitor = handlers.tick(None, request("visitor"))
    assert VARIANT not in repr(visitor) and "Hub metadata" not in repr(visitor)
    assert handlers.stop(request("visitor")) == "no training run in progress"


def test_card_text_keeps_code_blocks_and_reads_no_card_as_empty(tmp_path):
    (tmp_path / "adapter").mkdir()
    assert card_text(tmp_path) == ""
    (tmp_path / "adapter" / "README.md").write_text(
        "---\nlicense: gemma\nbase_model: google/gemma-3-270m\n---\n\n# Mine\n\n## Use\n\n```bash\n"
        "# a shell comment stays\npython app.py\n```\n",
        encoding="utf-8",
    )
    text = card_text(tmp_path)
    assert "```yaml\nlicense: gemma\nbase_model: google/gemma-3-270m\n```" in text
    assert "\n## Mine\n\n### Use\n" in text and "# a shell comment stays\n" in text
    assert "## a shell" not in text


def test_a_local_app_shows_the_last_run_again_after_a_reload(tiny_registry, tmp_path):
    """A reload closes the old session; on a local app the finished run (and its card) is still shown."""
    handlers = TrainHandlers(tiny_registry, tmp_path, {})
    job = handlers.jobs.start(
        [sys.executable, "-c", "print('the log')"], tmp_path / "job", "Mine", "p", 1, "a"
    )
    job.proc.wait(timeout=30)
    handlers.guard.close_session("a")
    status, _, tail, *_ = handlers.tick(None, request("reloaded"))
    assert "the log" in tail and "incomplete" in status
