"""The app started for real on 127.0.0.1, and headless Chromium driven by Playwright.

Two apps, each started once per session: ``app_url`` serves assets/models.yaml (the real Gemma default) plus
tiny BLOOM variants (fast answers for Compare and Judge) and a tiny training preset; ``tiny_app`` serves the
tiny variants only, for the load test.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest
import yaml

from vichat.paths import MODELS_YAML, REPO_ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TINY_BASE = "tiny-bloom"
TINY = "Tiny-Bloom"
TINY_CHAT = "Tiny-Bloom-Chat"


@dataclass
class RunningApp:
    url: str
    proc: subprocess.Popen
    runs: Path
    log: IO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_entries(tiny_models: dict[str, Path]) -> tuple[dict, list[dict]]:
    bases = {TINY_BASE: {"source": str(tiny_models["bloom"]), "description": "tiny random BLOOM (tests)"}}
    variants = [
        {"name": TINY, "base": TINY_BASE, "template": "chat", "description": "tiny BLOOM, no adapter"},
        {"name": TINY_CHAT, "base": TINY_BASE, "template": "chat", "adapter": str(tiny_models["bloom-a"])},
    ]
    return bases, variants


@pytest.fixture(scope="session")
def app_files(tiny_models, tmp_path_factory) -> dict[str, Path]:
    """Variant files (full = assets/models.yaml + tiny; tiny only) and a tiny training preset."""
    root = tmp_path_factory.mktemp("app")
    bases, variants = tiny_entries(tiny_models)
    full = yaml.safe_load(MODELS_YAML.read_text(encoding="utf-8"))
    full["bases"].update(bases)
    full["variants"] += variants
    out = {"full": root / "models-full.yaml", "tiny": root / "models-tiny.yaml", "preset": root / "tiny.yaml"}
    out["full"].write_text(yaml.safe_dump(full, allow_unicode=True), encoding="utf-8")
    out["tiny"].write_text(yaml.safe_dump({"bases": bases, "variants": variants}), encoding="utf-8")
    preset = {
        "base": TINY_BASE,
        "models_file": str(out["full"]),
        "template": "chat",
        "variant_name": "Tiny-Trained",
        "train_files": [str(REPO_ROOT / "assets/data/general_a.jsonl")],
        "validation_fraction": 0.1,
        "max_train_samples": 16,
        "max_length": 1024,
        "total_batch_size": 4,
        "per_device_train_batch_size": 4,
        "learning_rate": 0.001,
        "num_train_epochs": 1,
        "logging_steps": 1,
        "eval_steps": 1000,
        "save_steps": 1000,
        "report_to": "none",
        "seed": 0,
    }
    out["preset"].write_text(yaml.safe_dump(preset), encoding="utf-8")
    return out


def start_app(args: list[str], runs: Path, log_name: str, env: dict[str, str] | None = None) -> RunningApp:
    port = free_port()
    (REPO_ROOT / "runs").mkdir(exist_ok=True)
    log = open(REPO_ROOT / "runs" / log_name, "w")  # noqa: SIM115 (closed by stop_app)
    proc = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port), "--runs", str(runs), *args],
        cwd=REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})},
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 240
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"app exited with {proc.returncode}; see runs/{log_name}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return RunningApp(url, proc, runs, log)
        except OSError:
            time.sleep(1)
    proc.kill()
    raise RuntimeError("app did not start within 240 s")


def stop_app(app: RunningApp) -> None:
    app.proc.terminate()
    app.proc.wait(timeout=30)
    app.log.close()


@pytest.fixture(scope="session")
def running_app(app_files, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    app = start_app(
        ["--models", str(app_files["full"]), "--train-config", str(app_files["preset"])], runs, "app-test.log"
    )
    yield app
    stop_app(app)


@pytest.fixture(scope="session")
def app_url(running_app) -> str:
    return running_app.url


@pytest.fixture(scope="session")
def tiny_app(app_files, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs-load")
    app = start_app(["--models", str(app_files["tiny"]), "--queue-size", "6"], runs, "app-load-test.log")
    yield app
    stop_app(app)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(
            "Debian's chromium is missing: apt-get install -y chromium (the README's test command does)"
        )
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        yield b
        b.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.failed_call = report.failed
    return report


@pytest.fixture()
def page(browser, app_url, request):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(app_url)
    page.wait_for_selector("#chat-input", timeout=60_000)
    yield page
    if getattr(request.node, "failed_call", False):  # what the page looked like when the test failed
        folder = REPO_ROOT / "runs" / "screenshots"
        folder.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(folder / f"FAILED-{request.node.name}.png"), full_page=True)
    page.close()
