"""Bad input to LoRA training (``python -m train.lora``, ``python -m train.quality``): every case a message,
exit 2, no traceback, no input file changed, and no model loaded (a bad preset, flag, data file or run-state
file is caught before any weights are read, so this file stays fast)."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.reliability.conftest import assert_clean_failure, invoke, invoke_subprocess
from tests.reliability.corpus import BAD_JSONL, BAD_NUMBERS, GOOD, write_corpus


@pytest.fixture(autouse=True)
def no_model_load(monkeypatch):
    """Loading a model here means a check came too late: it fails the test with a traceback."""
    import train.lora
    import train.quality

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was refused")

    monkeypatch.setattr(train.lora, "prepare_model", refuse)
    monkeypatch.setattr(train.quality.Registry, "from_yaml", refuse)


def settings(tmp_path, **overrides) -> dict:
    data = tmp_path / "data" / "train.jsonl"
    if not data.exists():
        data.parent.mkdir(parents=True, exist_ok=True)
        data.write_text(GOOD * 8, encoding="utf-8")
    cfg = {
        "base": str(tmp_path / "never-loaded"),
        "template": "chat",
        "train_files": [str(data)],
        "validation_fraction": 0.125,
        "max_length": 96,
        "total_batch_size": 4,
        "per_device_train_batch_size": 2,
        "learning_rate": 0.003,
        "num_train_epochs": 1,
        "save_steps": 2,
        "output_dir": str(tmp_path / "run"),
        "report_to": "none",
    }
    cfg.update(overrides)
    return cfg


def write_preset(tmp_path, **overrides):
    path = tmp_path / "preset.yaml"
    path.write_text(yaml.safe_dump(settings(tmp_path, **overrides)), encoding="utf-8")
    return path


def train_fails(tmp_path, unchanged, argv, contains):
    """train.lora on ``argv`` fails cleanly, leaving the data, the preset and any output folder as they were."""
    roots = [p for p in (tmp_path / "data", tmp_path / "preset.yaml", tmp_path / "run") if p.exists()]
    with unchanged(*roots):
        outcome = invoke("train.lora", argv)
    assert_clean_failure(outcome, contains=contains)
    assert outcome.code == 2, outcome.text
    assert not (tmp_path / "run" / "adapter").exists()
    return outcome


# --------------------------------------------------------------------------- the preset file

VALID_YAML = "base: x\ntrain_files: [a.jsonl]\n"
BAD_PRESETS = {
    "utf16": (VALID_YAML.encode("utf-16"), "UTF-16"),
    "utf16le_no_bom": (VALID_YAML.encode("utf-16-le"), "UTF-16"),
    "invalid_utf8": (b"base: \xff\xfe\ntrain_files: [a.jsonl]\n", "not UTF-8"),
    "yaml_syntax": (b"base: x\ntrain_files: [a.jsonl\nlearning_rate: 1\n", "YAML syntax error at line"),
    "tab_indent": (b"base: x\n\tlora_r: 8\n", "YAML syntax error"),
    "list": (b"- base: x\n- lora_r: 8\n", "must be a mapping"),
    "string": (b"just some words\n", "must be a mapping"),
    "number": (b"42\n", "must be a mapping"),
    "unknown_key": (b"base: x\ntrain_files: [a.jsonl]\nlearning_rat: 0.1\n", "did you mean learning_rate"),
    "integer_key": (b"base: x\ntrain_files: [a.jsonl]\n1: 2\n", "unknown key"),
    "mapping_value": (b"base: x\ntrain_files: [a.jsonl]\nlora_r: {a: 1}\n", "single value"),
    "list_for_scalar": (b"base: x\ntrain_files: [a.jsonl]\nlora_r: [8, 16]\n", "one value"),
    "nested_list": (b"base: x\ntrain_files: [[a.jsonl]]\n", "list of names"),
    "empty_train_files": (b"base: x\ntrain_files: []\n", "train_files"),
    "deep_nesting": (b"base: " + b"[" * 20000 + b"]" * 20000 + b"\n", "preset"),
    "huge_int": (b"base: x\ntrain_files: [a.jsonl]\nlora_r: " + b"9" * 5000 + b"\n", "preset"),
    "no_base": (b"train_files: [a.jsonl]\n", "base"),
}


@pytest.mark.parametrize("name", sorted(BAD_PRESETS))
def test_bad_preset_file(tmp_path, unchanged, name):
    data, contains = BAD_PRESETS[name]
    path = tmp_path / "preset.yaml"
    path.write_bytes(data)
    outcome = train_fails(tmp_path, unchanged, ["--config", str(path)], contains)
    if name not in ("no_base", "empty_train_files"):
        assert str(path) in outcome.text  # the message names the file


@pytest.mark.parametrize(
    ("argv", "contains"),
    [
        (["--config"], "needs a YAML file"),
        (["--config", "missing.yaml"], "no such file"),
        (["--config", "."], "is a folder"),
        (["--config", "PRESET", "--no-such-flag", "1"], "unknown argument"),
        (["--config", "PRESET", "--learning_rate"], "expected one argument"),
        (["--config", "PRESET", "--template", "pirate"], "template must be one of"),
    ],
)
def test_bad_config_flag(tmp_path, unchanged, argv, contains):
    preset = str(write_preset(tmp_path))
    train_fails(tmp_path, unchanged, [preset if a == "PRESET" else a for a in argv], contains)


# --------------------------------------------------------------------------- numbers, from the file and the flags

# (setting, bad values beyond BAD_NUMBERS, text of its range): 0 is out of range for every one of these
NUMERIC = {
    "learning_rate": ["1e-30000", "11"],
    "per_device_train_batch_size": ["2.5", "100000"],
    "num_train_epochs": [],
    "lora_r": ["8.5"],
    "max_length": ["8"],
    "save_steps": ["1.5"],
    "logging_steps": [],
    "total_batch_size": ["5"],  # not a multiple of the micro-batch 2
    "gradient_accumulation_steps": [],
    "max_train_samples": [],
}
NUMERIC_CASES = [(name, value) for name, extra in NUMERIC.items() for value in [*BAD_NUMBERS, *extra]]


@pytest.mark.parametrize(("name", "value"), NUMERIC_CASES)
def test_bad_number_on_the_command_line(tmp_path, unchanged, name, value):
    path = write_preset(tmp_path)
    train_fails(tmp_path, unchanged, ["--config", str(path), f"--{name}", value], name)


@pytest.mark.parametrize(("name", "value"), NUMERIC_CASES)
def test_bad_number_in_the_preset(tmp_path, unchanged, name, value):
    path = tmp_path / "preset.yaml"
    path.write_text(yaml.safe_dump(settings(tmp_path)) + f"{name}: {json.dumps(value)}\n", encoding="utf-8")
    train_fails(tmp_path, unchanged, ["--config", str(path)], name)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("lora_dropout", 1), ("lora_dropout", -0.1), ("lora_dropout", ".nan"), ("lora_alpha", 0),
        ("warmup_steps", -1), ("eval_steps", 0), ("validation_fraction", 0.9), ("seed", -1),
        ("seed", 2**40), ("max_steps", 0), ("max_steps", -2), ("weight_decay", -1), ("adam_beta1", 1),
        ("learning_rate", ".inf"), ("learning_rate", "-.inf"), ("num_train_epochs", ".nan"),
    ],
)  # fmt: skip
def test_bad_number_yaml_values(tmp_path, unchanged, name, value):
    """YAML's own spellings (.nan, .inf) and the settings whose 0 is valid but whose range is not."""
    path = tmp_path / "preset.yaml"
    path.write_text(yaml.safe_dump(settings(tmp_path)) + f"{name}: {value}\n", encoding="utf-8")
    outcome = train_fails(tmp_path, unchanged, ["--config", str(path)], name)
    assert str(path) in outcome.text


def test_bad_world_size(tmp_path, unchanged, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "0")
    train_fails(tmp_path, unchanged, ["--config", str(write_preset(tmp_path))], "WORLD_SIZE")


# --------------------------------------------------------------------------- the training data

DATA_MESSAGES = {"empty_file": "no records", "blank_lines": "no records"}
BEFORE_MODEL = sorted(BAD_JSONL)


@pytest.mark.parametrize("name", BEFORE_MODEL)
@pytest.mark.parametrize("role", ["train_files", "validation_files"])
def test_bad_training_data(tmp_path, unchanged, name, role):
    bad = write_corpus(tmp_path / "data", [name])[name]
    path = write_preset(tmp_path, **{role: [str(bad)]})
    outcome = train_fails(tmp_path, unchanged, ["--config", str(path)], DATA_MESSAGES.get(name, str(bad)))
    if name in ("malformed", "no_final_newline_torn"):
        assert f"{bad}:2" in outcome.text  # file:line


@pytest.mark.parametrize(
    ("files", "contains"),
    [
        (["missing.jsonl"], "no such file"),
        (["."], "is a directory"),
    ],
)
def test_missing_data_files(tmp_path, unchanged, files, contains):
    path = write_preset(tmp_path, train_files=[str(tmp_path / f) for f in files])
    train_fails(tmp_path, unchanged, ["--config", str(path)], contains)


def test_one_record_leaves_nothing_to_train_on(tmp_path, unchanged):
    one = tmp_path / "data" / "one.jsonl"
    one.parent.mkdir(parents=True)
    one.write_text(GOOD, encoding="utf-8")
    path = write_preset(tmp_path, train_files=[str(one)])
    train_fails(tmp_path, unchanged, ["--config", str(path)], "none is left for training")


# --------------------------------------------------------------------------- output folder and --resume

RUN_STATES = {
    "truncated": b'{"fingerprint": "abc',
    "not_json": b"this is not json\n",
    "empty": b"",
    "list": b'["fingerprint"]\n',
    "string": b'"fingerprint"\n',
    "no_fingerprint": b'{"model": {}}\n',
    "fingerprint_not_text": b'{"fingerprint": 5}\n',
    "utf16": json.dumps({"fingerprint": "abc"}).encode("utf-16"),
    "invalid_utf8": b'{"fingerprint": "\xff"}\n',
    "deep_nesting": b"[" * 100000 + b"]" * 100000,
}


@pytest.mark.parametrize("name", sorted(RUN_STATES))
def test_corrupt_run_state_on_resume(tmp_path, unchanged, name):
    run = tmp_path / "run"
    (run / "checkpoint-2").mkdir(parents=True)
    (run / "vichat_run.json").write_bytes(RUN_STATES[name])
    path = write_preset(tmp_path)
    outcome = train_fails(tmp_path, unchanged, ["--config", str(path), "--resume"], "damaged")
    assert str(run / "vichat_run.json") in outcome.text


def test_resume_with_only_half_saved_checkpoints(tmp_path, unchanged):
    from train.config import parse
    from train.lora import fingerprint

    path = write_preset(tmp_path)
    model, data, _, _ = parse(["--config", str(path)])
    run = tmp_path / "run"
    (run / "checkpoint-2").mkdir(parents=True)
    (run / "checkpoint-2" / "trainer_state.json").write_text('{"global_st')
    (run / "vichat_run.json").write_text(json.dumps({"fingerprint": fingerprint(model, data)}))
    train_fails(tmp_path, unchanged, ["--config", str(path), "--resume"], "checkpoint-2: not completely saved")


def test_resume_with_nothing_to_resume(tmp_path, unchanged):
    train_fails(tmp_path, unchanged, ["--config", str(write_preset(tmp_path)), "--resume"], "no checkpoint")


def test_fresh_run_over_checkpoints(tmp_path, unchanged):
    (tmp_path / "run" / "checkpoint-2").mkdir(parents=True)
    train_fails(tmp_path, unchanged, ["--config", str(write_preset(tmp_path))], "add --resume")


def test_output_dir_busy(tmp_path, unchanged):
    from vichat.files import OutputLock

    path = write_preset(tmp_path)
    with OutputLock(tmp_path / "run", "train.lora (another run)"):
        train_fails(tmp_path, unchanged, ["--config", str(path)], "in use by train.lora (another run)")


def test_output_dir_is_the_data_file(tmp_path, unchanged):
    path = write_preset(tmp_path)
    data = tmp_path / "data" / "train.jsonl"
    train_fails(tmp_path, unchanged, ["--config", str(path), "--output_dir", str(data)], "would overwrite")


def test_output_dir_would_write_onto_validation_data(tmp_path, unchanged):
    val = tmp_path / "data" / "validation.jsonl"
    path = write_preset(tmp_path, validation_files=[str(val)], output_dir=str(tmp_path / "data"))
    val.write_text(GOOD, encoding="utf-8")
    train_fails(tmp_path, unchanged, ["--config", str(path)], "would overwrite the input")


def test_output_dir_is_a_file(tmp_path, unchanged):
    (tmp_path / "data").mkdir()
    other = tmp_path / "data" / "notes.txt"
    other.write_text("mine", encoding="utf-8")
    path = write_preset(tmp_path)
    train_fails(tmp_path, unchanged, ["--config", str(path), "--output_dir", str(other)], "is a file")


# --------------------------------------------------------------------------- train.quality

@pytest.mark.parametrize("name", sorted(BAD_JSONL))
def test_quality_bad_data(tmp_path, unchanged, name):
    bad = write_corpus(tmp_path / "data", [name])[name]
    with unchanged(tmp_path / "data"):
        outcome = invoke("train.quality", ["--variant", "a", "--base", "b", "--data", str(bad)])
    assert_clean_failure(outcome, contains=str(bad))
    assert outcome.code == 2


@pytest.mark.parametrize(("flag", "value"), [("--limit", v) for v in BAD_NUMBERS] + [("--seed", "-1")])
def test_quality_bad_numbers(tmp_path, flag, value):
    data = tmp_path / "val.jsonl"
    data.write_text(GOOD, encoding="utf-8")
    outcome = invoke("train.quality", ["--variant", "a", "--base", "b", "--data", str(data), flag, value])
    assert_clean_failure(outcome, contains=flag)
    assert outcome.code == 2


def test_quality_out_onto_its_data(tmp_path, unchanged):
    data = tmp_path / "data" / "val.jsonl"
    data.parent.mkdir()
    data.write_text(GOOD, encoding="utf-8")
    with unchanged(tmp_path / "data"):
        outcome = invoke("train.quality", ["--variant", "a", "--base", "b", "--data", str(data), "--out", str(data)])
    assert_clean_failure(outcome, contains="would overwrite")


# --------------------------------------------------------------------------- the real `python -m` wiring


@pytest.mark.parametrize(
    ("module", "argv", "contains"),
    [
        ("train.lora", ["--config", "PRESET"], "UTF-16"),
        ("train.quality", ["--variant", "a", "--base", "b", "--data", "DATA"], "bad line"),
    ],
)
def test_python_m_fails_cleanly(tmp_path, module, argv, contains):
    preset = tmp_path / "preset.yaml"
    preset.write_bytes(VALID_YAML.encode("utf-16"))
    data = write_corpus(tmp_path, ["malformed"])["malformed"]
    argv = [str(preset) if a == "PRESET" else str(data) if a == "DATA" else a for a in argv]
    outcome = invoke_subprocess(module, argv, timeout=120)
    assert_clean_failure(outcome, contains=contains)
    assert outcome.code == 2
