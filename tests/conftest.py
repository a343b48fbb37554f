"""Shared fixtures: tiny random BLOOM, GPT-J (and Gemma 3) models with a small Vietnamese BPE tokenizer, built offline.

They go through the same loader, templates, LoRA targets and generation as the real models, in seconds; the
builders live in testkit.tiny (bench.gpu_check builds the same models).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testkit.tiny import build_adapter, build_tiny, build_tiny_gemma


@pytest.fixture(scope="session")
def tiny_gemma_builder():
    return build_tiny_gemma


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    from vichat.loading import lora_targets

    out = {}
    for arch in ("bloom", "gptj"):
        base = build_tiny(root / arch, arch)
        out[arch] = base
        out[f"{arch}-a"] = build_adapter(base, root / f"{arch}-adapter-a", 1, lora_targets(arch))
        out[f"{arch}-b"] = build_adapter(base, root / f"{arch}-adapter-b", 2, lora_targets(arch))
    # a base only, for the padding-free training path: a window wider than any tiny example
    out["gemma"] = build_tiny_gemma(root / "gemma", out["bloom"], sliding_window=128)
    return out


@pytest.fixture()
def tiny_models_yaml(tiny_models, tmp_path) -> Path:
    """A variant file over the tiny models: a base and two adapters (template chat / doctor) per arch."""
    import yaml

    data = {"bases": {}, "variants": []}
    for arch in ("bloom", "gptj"):
        data["bases"][arch] = {"source": str(tiny_models[arch]), "load_in_8bit": True}
        data["variants"] += [
            {"name": f"{arch}-base", "base": arch, "template": "chat"},
            {
                "name": f"{arch}-chat",
                "base": arch,
                "template": "chat",
                "adapter": str(tiny_models[f"{arch}-a"]),
            },
            {
                "name": f"{arch}-doctor",
                "base": arch,
                "template": "doctor",
                "adapter": str(tiny_models[f"{arch}-b"]),
            },
        ]
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture()
def tiny_registry(tiny_models_yaml):
    from vichat.registry import Registry

    return Registry.from_yaml(tiny_models_yaml, device="cpu", progress=lambda m: None)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def fake_server():
    """``fake_server(latency_s=..., script=[...], ...)``: a stand-in translator on 127.0.0.1, stopped after the test."""
    from testkit.translate_server import FakeTranslateServer, ServerSettings

    started: list = []

    def start(**settings):
        server = FakeTranslateServer(ServerSettings(**settings)).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
