"""The default base loads in the background at start (Registry.preload), and says what it is doing."""

from __future__ import annotations

import time

import yaml

from tests.vichat.test_fast import _registry, gemma_tiny  # noqa: F401 - fixture
from vichat.registry import LoadStatus, Registry


def test_preload_loads_the_base_the_adapters_and_the_fast_engine(tmp_path, gemma_tiny):  # noqa: F811
    reg = _registry(tmp_path, gemma_tiny)
    assert reg.load_status("g").state == "idle"
    reg.preload(["g-base", "g-chat", "g-doctor"]).join(timeout=300)
    status = reg.load_status("g")
    assert status.state == "ready" and status.describe() == "ready"
    base = reg.loaded_base("g")
    assert {"g-chat", "g-doctor"} <= set(base.adapters) and base.fast is not None
    assert reg.decoder("g-chat").kind == "fast" and reg.scheduler(base).engine is base.fast


def test_a_failed_preload_is_kept_in_the_status(tmp_path):
    path = tmp_path / "models.yaml"
    data = {"bases": {"gone": {"source": str(tmp_path / "no-such-model")}}, "variants": [{"name": "x", "base": "gone"}]}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    reg = Registry.from_yaml(path, device="cpu", progress=lambda m: None)
    reg.preload(["x"]).join(timeout=60)
    status = reg.load_status("gone")
    assert status.state == "failed" and "x" in status.error and status.describe() == status.error


def test_load_status_says_the_step_and_the_time_left():
    status = LoadStatus()
    status.begin("converting the bundled model, once", 40.0)
    status.step_started -= 12  # as if 12 s had passed
    text = status.describe()
    assert text.startswith("converting the bundled model, once (12 s so far, about 28 s left")
    status.begin("preparing the fast CPU engine")
    assert status.state == "loading" and "left" not in status.describe()
    assert time.monotonic() - status.started < 5
