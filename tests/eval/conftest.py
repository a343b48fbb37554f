"""Fixtures for the eval tests: a local OpenAI-compatible server, a tiny eval set with known scores, answers.

The server scores each answer by its ``[score=N]`` tag, so every judge score below is known in advance:

    question  category   reference  A   B
    g1        Generic    8          6   8
    g2        Generic    10         5   9
    g3        Generic    5          5   4
    k1        Knowledge  8          4   8
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.answers import answers_path
from eval.client import ClientConfig
from testkit.openai_server import Behaviour, FakeOpenAIServer

KEY = "sk-test-" + "S3CR3T" * 4
SCORES = {  # question id: (category, reference, A, B)
    "g1": ("Generic", 8, 6, 8),
    "g2": ("Generic", 10, 5, 9),
    "g3": ("Generic", 5, 5, 4),
    "k1": ("Knowledge", 8, 4, 8),
}


def write_answers(out_dir: Path, set_name: str, variant: str, answers: dict[str, str]) -> Path:
    path = answers_path(out_dir, set_name, variant)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for qid, text in answers.items():
            fh.write(
                json.dumps({"id": qid, "variant": variant, "answer": text, "settings": {"seed": 0}}) + "\n"
            )
    return path


@pytest.fixture(name="write_answers")
def write_answers_fixture():
    """The helper above, for tests (conftest modules are not importable under --import-mode=importlib)."""
    return write_answers


@pytest.fixture()
def key() -> str:
    return KEY


@pytest.fixture()
def server():
    with FakeOpenAIServer(Behaviour(retry_after_ms=1, hang_s=1.0)) as s:
        yield s


@pytest.fixture()
def config(server) -> ClientConfig:
    return ClientConfig(
        base_url=server.url, api_key=KEY, timeout=2.0, max_retries=0, retries=2, backoff=0.001
    )


@pytest.fixture()
def tiny_set(tmp_path) -> Path:
    """Four questions in two categories; the references carry their score tags."""
    path = tmp_path / "tiny.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for qid, (category, ref, _, _) in SCORES.items():
            row = {
                "id": qid,
                "category": category,
                "question": f"Câu hỏi {qid}?",
                "reference": f"Đáp {qid} [score={ref}]",
            }
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


@pytest.fixture()
def workdir(tmp_path, tiny_set) -> Path:
    """An out-dir holding answers of variants A and B for the tiny set."""
    out = tmp_path / "runs"
    for index, variant in ((2, "A"), (3, "B")):
        write_answers(
            out, "tiny", variant, {q: f"{variant} trả lời {q} [score={s[index]}]" for q, s in SCORES.items()}
        )
    return out


@pytest.fixture()
def judge_argv(server, tiny_set, workdir, monkeypatch):
    """Build an eval.judge command line against the local server (key from the environment)."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)

    def argv(*extra: str) -> list[str]:
        return [
            "--set", str(tiny_set), "--out-dir", str(workdir), "--base-url", server.url,
            "--timeout", "2", "--max-retries", "0", "--retries", "2", "--backoff", "0.001", *extra,
        ]  # fmt: skip

    return argv
