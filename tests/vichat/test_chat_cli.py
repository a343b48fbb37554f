import os
import subprocess
import sys

import pytest

from vichat.chat import main
from vichat.cli import run
from vichat.paths import REPO_ROOT


def test_list_shows_availability(capsys):
    assert run(main, ["--list"]) == 0
    out = capsys.readouterr().out
    assert "Gemma-Base" in out and "yes: bundled GGUF" in out
    assert "Bloomz-Chat" in out and "not downloaded" in out


def test_unknown_variant_exits_2_with_a_message(capsys):
    assert run(main, ["--variant", "Nope", "xin chào"]) == 2
    err = capsys.readouterr().err
    assert "unknown variant 'Nope'" in err and "Gemma-Base" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--temperature", "9", "--temperature must be in [0, 2] (got 9)"),
        ("--temperature", "nan", "--temperature must be a finite number"),
        ("--max-new-tokens", "-5", "--max-new-tokens must be in [1, 2048]"),
        ("--max-new-tokens", "2.5", "--max-new-tokens must be a whole number"),
        ("--top-p", "inf", "--top-p must be a finite number"),
        ("--seed", "-1", "--seed must be >= 0"),
    ],
)
def test_bad_setting_is_a_usage_error(capsys, flag, value, message):
    with pytest.raises(SystemExit) as e:
        run(main, ["--variant", "Gemma-Base", flag, value, "xin chào"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [[""], ["   \n"], []], ids=["empty", "blank", "none"])
def test_empty_prompt_exits_2_before_any_model_loads(capsys, argv):
    assert run(main, ["--variant", "Gemma-Base", *argv]) == 2
    err = capsys.readouterr().err
    assert ("prompt is empty" in err or "give a PROMPT" in err) and "Traceback" not in err


def test_missing_models_file(capsys, tmp_path):
    assert run(main, ["--models", str(tmp_path / "nope.yaml"), "--list"]) == 2
    assert "nope.yaml not found" in capsys.readouterr().err


def test_module_entry_point_goes_through_the_runner(tmp_path):
    bad = tmp_path / "m.yaml"
    bad.write_bytes("bases: {}\nvariants: []\n".encode("utf-16"))
    proc = subprocess.run(
        [sys.executable, "-m", "vichat.chat", "--list", "--models", str(bad)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert proc.returncode == 2 and "is UTF-16" in proc.stderr and "Traceback" not in proc.stderr


def test_streams_a_reply(tiny_models_yaml, capsys):
    argv = ["--models", str(tiny_models_yaml), "--variant", "bloom-chat", "--temperature", "0"]
    assert run(main, [*argv, "--max-new-tokens", "8", "--stats", "Hà Nội"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() and "tokens, first after" in captured.err
