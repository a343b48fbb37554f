"""Public mode and the app's hardening, handler by handler, without a browser (tiny models, seconds).

Each test names the defect it holds shut: a visitor pointing the judge at any host (a blind SSRF), the
tokenizer field downloading or probing, unbounded and never-deleted uploads, training for anyone with the log
of whoever trained last, the training subprocess inheriting every secret, and judge downloads failing after
the calls were paid for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import gradio as gr
import pytest

from testkit.openai_server import Behaviour, FakeOpenAIServer
from ui.common import Cancellations
from ui.compare import CompareHandlers
from ui.datasets import ALL, UPLOADED, DatasetBrowser
from ui.judge import JudgeRunner
from ui.public import (
    OFFICIAL_JUDGE,
    Guard,
    Policy,
    PublicModeRefusal,
    RateLimiter,
    SessionUploads,
    check_servable,
    served_folders,
)
from ui.train import TrainHandlers, TrainJobs, scrubbed_env
from vichat.errors import SettingsError

KEY = "sk-test-" + "K3Y" * 8
SETTINGS = (8, 0.0, 20, 1.2, 1)


def request(session: str) -> gr.Request:
    return gr.Request(session_hash=session)


def public(**env) -> Guard:
    return Guard(Policy.from_env(environ={"SPACE_ID": "someone/vichat", **env}))


# ------------------------------------------------------------------------------------------- the mode


def test_public_mode_is_on_with_space_id_or_the_flag_and_off_otherwise():
    assert not Policy.from_env(environ={}).public
    assert Policy.from_env(public=True, environ={}).public
    p = Policy.from_env(environ={"SPACE_ID": "a/b"})
    assert p.public and p.judge_endpoints == (OFFICIAL_JUDGE,) and not p.train_allowed
    assert p.max_upload_bytes == 10 * 2**20 and p.max_upload_rows and p.generations_per_minute
    p = Policy.from_env(
        environ={"SPACE_ID": "a/b", "VICHAT_JUDGE_ENDPOINTS": "https://x.example/v1/, http://y:8000/v1"}
    )
    assert p.judge_endpoints == ("https://x.example/v1", "http://y:8000/v1")
    with pytest.raises(SettingsError, match="http"):
        Policy.from_env(environ={"SPACE_ID": "a/b", "VICHAT_JUDGE_ENDPOINTS": "file:///etc/passwd"})
    with pytest.raises(SettingsError, match="VICHAT_GENERATIONS_PER_MINUTE"):
        Policy.from_env(environ={"SPACE_ID": "a/b", "VICHAT_GENERATIONS_PER_MINUTE": "nan"})
    assert "secret" not in repr(Policy.from_env(environ={"SPACE_ID": "a/b", "VICHAT_TRAIN_SECRET": "s3cr3t"}))


def test_the_app_serves_the_judge_folder_and_bounds_uploads(monkeypatch, tmp_path, tiny_models_yaml):
    """Defect: no allowed_paths, so downloads from a --runs folder outside cwd and /tmp failed."""
    import app

    seen = {}
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: seen.update(kw))
    monkeypatch.delenv("SPACE_ID", raising=False)
    app.main(["--models", str(tiny_models_yaml), "--runs", str(tmp_path / "runs"), "--port", "7999"])
    assert (
        seen["allowed_paths"]
        == served_folders(tmp_path / "runs")
        == [str((tmp_path / "runs/eval").resolve())]
    )
    assert seen["max_file_size"] == 50 * 2**20
    monkeypatch.setenv("SPACE_ID", "someone/vichat")
    app.main(["--models", str(tiny_models_yaml), "--runs", str(tmp_path / "runs")])
    assert seen["max_file_size"] == 10 * 2**20


def test_bad_app_flags_are_one_line_errors(capsys):
    import app
    from vichat.cli import run

    for argv in (["--port", "nan"], ["--concurrency", "0"], ["--queue-size", "-5"]):
        with pytest.raises(SystemExit) as e:
            run(app.main, argv)
        assert e.value.code == 2
        assert "Traceback" not in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- judge


@pytest.fixture()
def quiet_runner():
    def make(registry, out_dir, guard=None, served=None):
        r = JudgeRunner(registry, out_dir, guard, served)
        for name in ("answer", "score"):
            method = getattr(r, name)
            setattr(r, name, lambda *a, _m=method, **k: _m(*a, progress=lambda *x, **y: None, **k))
        return r

    return make


def test_public_judge_refuses_an_arbitrary_endpoint_before_any_request(tiny_registry, tmp_path, quiet_runner):
    """Defect: a visitor set the judge base URL, so the server POSTed to any host (blind SSRF)."""
    runner = quiet_runner(tiny_registry, tmp_path / "eval", public())
    with FakeOpenAIServer(Behaviour()) as server:
        for url in (server.url, "http://169.254.169.254/latest", "file:///etc/passwd", "gopher://x"):
            with pytest.raises(gr.Error, match="fixed on this public app"):
                runner.score(["bloom-chat"], "general", 1, url, "gpt-4", KEY, False, "")
            with pytest.raises(gr.Error, match="fixed on this public app"):
                runner.check_run(["bloom-chat"], "general", 1, url, "gpt-4", KEY, False, "")
        assert server.calls == 0
    assert runner.check_run(
        ["bloom-chat"], "general", 1, OFFICIAL_JUDGE + "/", "gpt-4", KEY, False, ""
    ).startswith("Checked")


def test_a_local_judge_may_use_any_http_endpoint_but_not_garbage(tiny_registry, tmp_path, quiet_runner):
    runner = quiet_runner(tiny_registry, tmp_path / "eval")
    assert "127.0.0.1:9" in runner.check_run(["bloom-chat"], "general", 1, "http://127.0.0.1:9/v1", "gpt-4", KEY,
                                             False, "")  # fmt: skip
    for bad in ("file:///etc/passwd", "not a url", "http://", "http://h:99999/v1"):
        with pytest.raises(gr.Error, match="http"):
            runner.check_run(["bloom-chat"], "general", 1, bad, "gpt-4", KEY, False, "")


def test_an_unservable_output_folder_is_refused_before_any_call(
    tiny_registry, tmp_path, monkeypatch, quiet_runner
):
    """Defect: downloads failed only after the judge calls were spent (runs outside cwd and the temp dir)."""
    elsewhere = tmp_path / "other-tmp"
    elsewhere.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(elsewhere))
    monkeypatch.chdir(elsewhere)
    out = tmp_path / "runs" / "eval"  # neither under the (patched) temp dir nor under cwd
    runner = quiet_runner(tiny_registry, out)
    with FakeOpenAIServer(Behaviour()) as server:
        with pytest.raises(gr.Error, match="outside the folders this app may serve"):
            runner.score(["bloom-chat"], "general", 1, server.url, "gpt-4", KEY, False, "")
        with pytest.raises(gr.Error, match="outside the folders"):
            runner.answer(["bloom-chat"], "general", 1, False)
        assert server.calls == 0
    check_servable(out, served_folders(tmp_path / "runs"))  # what app.py passes as allowed_paths: fine


def test_an_unwritable_output_folder_is_refused_with_its_name(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SettingsError, match="not writable"):
        check_servable(blocker / "eval")


# -------------------------------------------------------------------------------------------- datasets


def test_the_tokenizer_field_is_limited_to_the_bases_in_public_mode(tiny_registry, tmp_path):
    """Defect: a visitor made the server download any hub tokenizer or probe local paths."""
    browser = DatasetBrowser(tiny_registry, tmp_path, public())
    name = "assets/data/general_a.jsonl"
    for bad in ("/etc", "/nonexistent", "../../../etc/passwd", "gpt2", "someone/tokenizer", str(tmp_path)):
        with pytest.raises(gr.Error, match="whitespace or a base's tokenizer") as e:
            browser.show(name, None, "", ALL, 0, 0, bad, 10, 1)
        assert "No such file" not in str(e.value) and "exist" not in str(e.value)
    by_words = browser.show(name, None, "", ALL, 0, 0, "whitespace", 10, 1)
    by_base = browser.show(name, None, "", ALL, 0, 0, "tokenizer of bloom", 10, 1)
    assert by_base[2] == by_words[2] and by_base[4] != by_words[4]  # same records, other token counts


def test_a_local_tokenizer_path_gets_one_message_whether_it_exists_or_not(
    tiny_registry, tiny_models, tmp_path
):
    browser = DatasetBrowser(tiny_registry, tmp_path)
    name = "assets/data/general_a.jsonl"
    messages = set()
    for probe in ("/etc", "/nonexistent/dir", "/etc/passwd", str(tmp_path), "../x"):
        with pytest.raises(gr.Error, match="is not a tokenizer folder") as e:
            browser.show(name, None, "", ALL, 0, 0, probe, 10, 1)
        messages.add(str(e.value).replace(repr(probe), "P"))
    assert len(messages) == 1  # nothing tells an existing path from a missing one
    with pytest.raises(gr.Error, match="neither a tokenizer folder nor a hub id"):
        browser.show(name, None, "", ALL, 0, 0, "a b c", 10, 1)
    table, *_ = browser.show(name, None, "", ALL, 0, 0, str(tiny_models["bloom"]), 10, 1)  # a real folder
    assert len(table) == 10


def test_uploads_are_bounded_in_bytes_and_rows(tiny_registry, tmp_path):
    browser = DatasetBrowser(tiny_registry, tmp_path, public())
    big = tmp_path / "big.jsonl"
    big.write_bytes(b'{"prompt": "a", "response": "b"}\n' * (11 * 2**20 // 33))
    with pytest.raises(gr.Error, match="limited to 10 MB"):
        browser.show(UPLOADED, str(big), "", ALL, 0, 0, "whitespace", 10, 1)
    rows = tmp_path / "rows.jsonl"
    rows.write_bytes(b"{}\n" * 20_001)
    with pytest.raises(gr.Error, match="limited to 20,000"):
        browser.show(UPLOADED, str(rows), "", ALL, 0, 0, "whitespace", 10, 1)
    ok = tmp_path / "ok.jsonl"
    ok.write_text('{"prompt": "a", "response": "b"}\n', encoding="utf-8")
    assert browser.show(UPLOADED, str(ok), "", ALL, 0, 0, "whitespace", 10, 1)[2].startswith("1 of 1")


def test_uploads_are_deleted_when_their_last_session_ends(tiny_registry, tmp_path):
    """Defect: uploaded files were never deleted."""
    root = tmp_path / "gradio"
    shared = root / "hash1" / "same.jsonl"  # Gradio names the folder by content: two sessions, one file
    mine = root / "hash2" / "mine.jsonl"
    for f in (shared, mine):
        f.parent.mkdir(parents=True)
        f.write_text('{"prompt": "a", "response": "b"}\n', encoding="utf-8")
    outside = tmp_path / "elsewhere.jsonl"
    outside.write_text('{"prompt": "a", "response": "b"}\n', encoding="utf-8")
    guard = Guard(uploads_root=root)
    browser = DatasetBrowser(tiny_registry, tmp_path, guard)
    for session, path in (("s1", shared), ("s1", mine), ("s2", shared), ("s1", outside)):
        browser.show(UPLOADED, str(path), "", ALL, 0, 0, "whitespace", 10, 1, request(session))
    guard.close_session("s1")
    assert not mine.exists() and not mine.parent.exists()  # gone with its hash folder
    assert (
        shared.exists() and outside.exists()
    )  # s2 still holds it; a path outside the cache is never deleted
    guard.close_session("s2")
    assert not shared.exists() and outside.exists()
    with pytest.raises(gr.Error, match="upload it again"):
        browser.show(UPLOADED, str(mine), "", ALL, 0, 0, "whitespace", 10, 1, request("s1"))


def test_session_uploads_ignore_paths_outside_the_cache(tmp_path):
    uploads = SessionUploads(tmp_path / "cache")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    uploads.track("s", victim)
    uploads.track("s", tmp_path / "cache" / ".." / "victim.txt")
    assert uploads.close_session("s") == [] and victim.read_text() == "keep"


# ----------------------------------------------------------------------------------------- rate limits


def test_the_rate_limit_is_per_session_and_says_when_to_retry():
    now = [0.0]
    limiter = RateLimiter(3, 60, clock=lambda: now[0])
    for _ in range(3):
        limiter.take("a")
    with pytest.raises(PublicModeRefusal, match=r"3 generations a minute per session; try again in 60 s"):
        limiter.take("a")
    limiter.take("b")  # another session has its own window
    now[0] = 30
    with pytest.raises(PublicModeRefusal, match="try again in 30 s"):
        limiter.take("a")
    now[0] = 60.5
    limiter.take("a", cost=3)
    RateLimiter(None).take("a", cost=10**6)  # a local app: no limit


def test_public_compare_stops_at_the_rate_limit_with_a_message(tiny_registry):
    guard = Guard(Policy(public=True, generations_per_minute=2))
    handlers = CompareHandlers(tiny_registry, Cancellations(), guard)
    out = list(handlers.compare("Xin chào", "bloom-base", "bloom-chat", *SETTINGS, request("v1")))
    assert out[-1][-1].startswith("done")
    with pytest.raises(gr.Error, match="rate limit"):
        next(handlers.compare("Xin chào", "bloom-base", "bloom-chat", *SETTINGS, request("v1")))
    assert next(handlers.compare("Xin chào", "bloom-base", "bloom-chat", *SETTINGS, request("v2")))


# ----------------------------------------------------------------------------------------------- train


def test_public_training_is_off_without_the_owner_secret(tiny_registry, tmp_path):
    """Defect: any visitor of a Space could start a CPU-heavy training run."""
    presets = {"tiny.yaml": tmp_path / "tiny.yaml"}
    handlers = TrainHandlers(tiny_registry, tmp_path / "app-train", presets, guard=public())
    with pytest.raises(gr.Error, match="training is off on this public app"):
        handlers.start("tiny.yaml", 5, "Mine", "", "", request("v"))
    handlers = TrainHandlers(
        tiny_registry, tmp_path / "app-train", presets, guard=public(VICHAT_TRAIN_SECRET="owner")
    )
    for wrong in ("", "Owner", "owner2", None):
        with pytest.raises(gr.Error, match="needs the owner's secret"):
            handlers.start("tiny.yaml", 5, "Mine", "", wrong, request("v"))
    assert not (tmp_path / "app-train").exists()  # nothing started, nothing written


def test_each_session_sees_only_its_own_job_in_public_mode(tiny_registry, tmp_path):
    """Defect: the Train tab showed every visitor the current training log."""
    handlers = TrainHandlers(tiny_registry, tmp_path, {}, guard=public(VICHAT_TRAIN_SECRET="x"))
    out = tmp_path / "job"
    cmd = [sys.executable, "-c", "print('step log of the owner')"]
    job = handlers.jobs.start(cmd, out, "Mine", "p", 1, "owner")
    job.proc.wait(timeout=30)
    status, _, tail, *_ = handlers.tick(None, request("owner"))
    assert "step log of the owner" in tail and "incomplete" in status
    visitor = handlers.tick(None, request("visitor"))
    assert "step log of the owner" not in repr(visitor)
    assert handlers.stop(request("visitor")) == "no training run in progress"
    local = TrainHandlers(tiny_registry, tmp_path, {})  # a local app: a reloaded page still finds the run
    local.jobs = handlers.jobs
    assert "step log of the owner" in local.tick(None, request("reloaded"))[2]
    handlers.guard.close_session("owner")  # a finished job is forgotten with its session
    assert handlers.jobs.job_for("owner") is None


def test_one_run_at_a_time_and_only_its_owner_stops_it(tiny_registry, tmp_path):
    jobs = TrainJobs(tiny_registry)
    slow = [sys.executable, "-c", "import time; time.sleep(60)"]
    job = jobs.start(slow, tmp_path / "a", "A", "p", 1, "owner")
    try:
        with pytest.raises(Exception, match="another session started"):
            jobs.start(slow, tmp_path / "b", "B", "p", 1, "visitor")
        assert jobs.stop("visitor") == "only the browser session that started this run can stop it"
        assert job.running
        assert jobs.stop("owner") == "stopped A"
    finally:
        jobs.stop_all()
    assert not job.running


# ---------------------------------------------------------------------------------------- subprocesses


SECRETS = {
    "HF_TOKEN": "hf_secret",
    "OPENAI_API_KEY": "sk-secret",
    "VLLM_API_KEY": "v-secret",
    "VICHAT_TRAIN_SECRET": "owner-secret",
    "AWS_SECRET_ACCESS_KEY": "aws-secret",
    "DB_PASSWORD": "pw-secret",
    "GITHUB_TOKEN": "gh-secret",
    "MY_CREDENTIALS": "cred-secret",
}


def test_the_training_subprocess_gets_a_scrubbed_environment(tiny_registry, tmp_path, monkeypatch):
    """Defect: the training subprocess inherited every environment secret (and wrote them to no one knows)."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HF_HOME", "/some/cache")
    env = scrubbed_env()
    assert not set(SECRETS) & set(env)
    assert env["HF_HOME"] == "/some/cache" and env["PATH"] == os.environ["PATH"]
    assert env["TOKENIZERS_PARALLELISM"] == "false" and env["PYTHONUNBUFFERED"] == "1"
    # a real child, started the way the Train tab starts training, prints the environment it got
    jobs = TrainJobs(tiny_registry)
    cmd = [sys.executable, "-c", "import json, os; print(json.dumps(dict(os.environ)))"]
    job = jobs.start(cmd, tmp_path / "run", "EnvProbe", "p", 1, "s")
    assert job.proc.wait(timeout=30) == 0
    text = job.log_path.read_text(encoding="utf-8")
    child = json.loads(text.strip().splitlines()[-1])
    assert not set(SECRETS) & set(child) and child["HF_HOME"] == "/some/cache"
    assert not any(value in text for value in SECRETS.values())


def test_scrubbing_keeps_what_training_needs():
    env = scrubbed_env({"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "0", "VICHAT_CACHE": "/c", "HF_HUB_OFFLINE": "1",
                        "hf_token": "x", "Openai_Api_Key": "y"})  # fmt: skip
    assert env == {
        "PATH": "/bin", "CUDA_VISIBLE_DEVICES": "0", "VICHAT_CACHE": "/c", "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false",
    }  # fmt: skip


def test_subprocess_probe_runs_without_the_app(tmp_path):
    """The probe itself: a plain child with scrubbed_env() sees no secret (independent of TrainJobs)."""
    env = scrubbed_env({**os.environ, **SECRETS})
    out = subprocess.run(
        [sys.executable, "-c", "import os; print(sorted(os.environ))"],
        env=env,
        capture_output=True,
        text=True,
    ).stdout
    assert not any(name in out for name in SECRETS)
