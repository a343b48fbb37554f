"""The app as a Hugging Face Space: README front matter, the bind address, a thin app.py."""

from __future__ import annotations

import re

import yaml

from vichat.paths import REPO_ROOT
from vichat.registry import Registry
from vichat.ui.spaces import prefetch_hub_bases

SETUP = [
    "pip install -r requirements.txt && python app.py",
    "pip install -r requirements-dev.txt && apt-get update -q && apt-get install -y -q chromium && python -m pytest",
]


def test_readme_front_matter_is_a_gradio_space_and_the_setup_commands_come_first():
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    front, body = text[4:].split("\n---\n", 1)
    meta = yaml.safe_load(front)
    pinned = re.search(r"^gradio==(\S+)$", (REPO_ROOT / "requirements.txt").read_text(), re.M).group(1)
    assert meta["sdk"] == "gradio" and meta["sdk_version"] == pinned
    assert meta["app_file"] == "app.py" and meta["pinned"] is False and meta["title"] and meta["emoji"]
    blocks = re.findall(r"```bash\n(.*?)\n```", body, re.S)
    assert blocks[:2] == SETUP
    assert body.lstrip().startswith("# ViChat") and body.index(SETUP[1]) < body.index("##")


def test_the_app_binds_where_spaces_says(monkeypatch):
    import app

    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7860")
    args = app.parse_args([])
    assert (args.host, args.port) == ("0.0.0.0", 7860)
    monkeypatch.delenv("GRADIO_SERVER_NAME")
    assert app.parse_args([]).host == "127.0.0.1"


def test_app_py_stays_thin():
    lines = (REPO_ROOT / "app.py").read_text(encoding="utf-8").splitlines()
    assert len(lines) < 150
    assert not any(line.startswith(("registry =", "demo =")) for line in lines)  # no module-level state


def test_hub_bases_are_fetched_only_on_a_gpu_space(monkeypatch):
    registry = Registry.from_yaml()
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert prefetch_hub_bases(registry) is None
    monkeypatch.setenv("SPACE_ID", "someone/vichat")
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert prefetch_hub_bases(registry) is None  # CPU Space: the embedded Gemma default only


def components_by_id(config: dict) -> dict[str, dict]:
    return {c["props"]["elem_id"]: c for c in config["components"] if c.get("props", {}).get("elem_id")}


def test_started_as_a_space_the_app_serves_in_public_mode(app_files, tmp_path):
    """``python app.py`` with SPACE_ID set, on 127.0.0.1: it serves, and public mode is on in what it serves."""
    import httpx

    from tests.app.conftest import start_app, stop_app

    env = {"SPACE_ID": "someone/vichat", "GRADIO_SERVER_NAME": "127.0.0.1", "VICHAT_TRAIN_SECRET": ""}
    app = start_app(["--models", str(app_files["tiny"]), "--host", "127.0.0.1"], tmp_path / "runs",
                    "app-space-test.log", env)  # fmt: skip
    try:
        assert app.url.startswith("http://127.0.0.1:")
        config = httpx.get(app.url + "config", timeout=30).json()
        ids = components_by_id(config)
        banner = ids["public-mode"]["props"]
        assert banner["visible"] and "Public mode" in banner["value"] and "training is off" in banner["value"]
        endpoint = ids["judge-endpoint"]
        assert endpoint["type"] == "dropdown" and not endpoint["props"]["allow_custom_value"]
        assert [c[1] for c in endpoint["props"]["choices"]] == ["https://api.openai.com/v1"]
        assert not ids["datasets-tokenizer"]["props"]["allow_custom_value"]
        assert "train-off" in ids and "train-start" not in ids  # no Start button to press
        # uploads over the public bound are refused by the server itself
        big = httpx.post(app.url + "gradio_api/upload", files={"files": ("big.jsonl", b"x" * (11 * 2**20))},
                         timeout=60)  # fmt: skip
        assert big.status_code == 413
        small = httpx.post(app.url + "gradio_api/upload", files={"files": ("s.jsonl", b"{}\n")}, timeout=30)
        assert small.status_code == 200
    finally:
        stop_app(app)


def test_started_locally_the_app_is_not_in_public_mode(tiny_app):
    import httpx

    ids = components_by_id(httpx.get(tiny_app.url + "config", timeout=30).json())
    assert not ids["public-mode"]["props"]["visible"]
    assert ids["judge-endpoint"]["type"] == "textbox" and "train-start" in ids
