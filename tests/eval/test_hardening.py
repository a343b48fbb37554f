"""Verdicts that cannot be faked or lost: endpoint-keyed cache, locked out-dirs, garbage from the endpoint,
and a key that never reaches a file or a log. Every server here is a real HTTP server on 127.0.0.1."""

import hashlib
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from eval.answers import answers_path
from eval.answers import main as answers_main
from eval.client import normalise_endpoint
from eval.judge import main
from eval.report import main as report_main
from eval.sets import load_eval_set
from eval.verdicts import JudgePrompt, JudgmentCache, judgments_path, unparsable_path
from testkit.openai_server import Behaviour, FakeOpenAIServer
from vichat.cli import run
from vichat.errors import SettingsError

REPO = Path(__file__).resolve().parents[2]


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()] if path.exists() else []


def _everything_under(folder: Path) -> str:
    return "".join(p.read_bytes().decode("utf-8", "replace") for p in folder.rglob("*") if p.is_file())


def _with_url(argv: list[str], url: str) -> list[str]:
    argv = list(argv)
    argv[argv.index("--base-url") + 1] = url
    return argv


# --- 1. the verdict cache is keyed by endpoint -------------------------------------------------------------


def test_normalised_endpoint():
    assert normalise_endpoint("HTTP://User:pw@127.0.0.1:80/v1/") == "http://127.0.0.1/v1"
    assert normalise_endpoint(" https://API.openai.com:443/v1?key=x ") == "https://api.openai.com/v1"
    assert normalise_endpoint("http://127.0.0.1:8001/v1") == "http://127.0.0.1:8001/v1"
    for bad in ("", "127.0.0.1:8000/v1", "ftp://host/v1", "http://", "http://host:port/v1"):
        with pytest.raises(SettingsError, match="--base-url must be an http"):
            normalise_endpoint(bad)


def test_verdicts_of_one_endpoint_are_never_reused_for_another(
    judge_argv, server, workdir, tiny_set, tmp_path, capsys
):
    """A server that calls itself gpt-4 fills the cache; the real endpoint is still asked, every time."""
    with FakeOpenAIServer(Behaviour(bias=3.0)) as impostor:  # different verdicts under the same model name
        assert run(main, _with_url(judge_argv("--variants", "A", "--single-order"), impostor.url)) == 0
        assert impostor.calls == 4
        assert run(main, judge_argv("--variants", "A", "--single-order")) == 0
        assert server.calls == 4  # the real endpoint is asked; nothing of the impostor's is reused
        assert run(main, judge_argv("--variants", "A", "--single-order")) == 0
        assert server.calls == 4  # and its own verdicts are reused
        records = _records(judgments_path(workdir, "tiny", "gpt-4"))
        assert {r["endpoint"] for r in records} == {impostor.url, server.url}
        capsys.readouterr()
        base = ["--set", str(tiny_set), "--out-dir", str(workdir), "--single-order"]
        assert (
            run(report_main, [*base, "--report-dir", str(tmp_path / "real"), "--base-url", server.url]) == 0
        )
        real = (tmp_path / "real" / "tiny.md").read_text("utf-8")
        assert "| Total | 4 | 68.75 |" in real and f"at {server.url}" in real
        assert (
            run(report_main, [*base, "--report-dir", str(tmp_path / "fake"), "--base-url", impostor.url]) == 0
        )
        assert "| Total | 4 | 68.75 |" not in (tmp_path / "fake" / "tiny.md").read_text("utf-8")
        capsys.readouterr()
        assert run(report_main, base) == 2  # two endpoints and no --base-url: say so, do not pick one
        assert "several judge endpoints" in capsys.readouterr().err


def test_old_cache_entries_without_endpoint_are_not_reused(judge_argv, server, workdir, tiny_set):
    """A cache from before the endpoint was in the key (forged here with scores 1 1) is asked afresh."""
    es = load_eval_set(tiny_set)
    version = JudgePrompt.load().version
    path = judgments_path(workdir, "tiny", "gpt-4")
    path.parent.mkdir(parents=True)
    with path.open("w", encoding="utf-8") as fh:
        for q in es.questions:
            reference = q.reference
            answer = next(r for r in _records(answers_path(workdir, "tiny", "A")) if r["id"] == q.id)[
                "answer"
            ]
            fields = [q.id, q.question, reference, answer, "forward", "gpt-4", version]  # the old key
            key = hashlib.sha256(json.dumps(fields, ensure_ascii=False).encode()).hexdigest()
            fh.write(json.dumps({"key": key, "question_id": q.id, "scores": [1, 1], "raw": "1 1"}) + "\n")
    assert run(main, judge_argv("--variants", "A", "--single-order")) == 0
    assert server.calls == 4
    fresh = [r for r in _records(path) if "endpoint" in r]
    assert len(fresh) == 4 and all(r["scores"] != [1, 1] for r in fresh)


# --- 4. one writer per output folder -----------------------------------------------------------------------


@pytest.fixture()
def hold_lock():
    """Hold ``OutputLock(folder)`` in a child process until the test ends."""
    children = []

    def hold(folder: Path) -> None:
        code = (
            "import sys; from vichat.files import OutputLock; "
            f"held = OutputLock({str(folder)!r}, 'a test holder').acquire(); "
            "print('held', flush=True); sys.stdin.read()"
        )
        child = subprocess.Popen(
            [sys.executable, "-c", code], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        children.append(child)
        assert child.stdout.readline().strip() == "held"  # waits for the state, no sleep

    yield hold
    for child in children:
        child.stdin.close()
        child.wait(timeout=30)


def test_a_second_judge_on_the_same_folder_stops_at_once(judge_argv, server, workdir, hold_lock, capsys):
    hold_lock(judgments_path(workdir, "tiny", "gpt-4").parent)
    assert run(main, judge_argv("--variants", "A")) == 2
    err = capsys.readouterr().err
    assert "in use by a test holder" in err and "choose another output folder" in err
    assert server.calls == 0 and not judgments_path(workdir, "tiny", "gpt-4").exists()
    assert run(main, judge_argv("--variants", "A", "--dry-run")) == 0  # looking is fine: it writes nothing


def test_a_second_answers_run_on_the_same_folder_stops_at_once(tiny_set, tmp_path, hold_lock, capsys):
    out = tmp_path / "runs"
    hold_lock(answers_path(out, "tiny", "x").parent)
    argv = ["--variants", "reference", "--set", str(tiny_set), "--out-dir", str(out)]
    assert run(answers_main, argv) == 2
    assert "in use by a test holder" in capsys.readouterr().err
    assert not answers_path(out, "tiny", "reference").exists()


def test_the_lock_is_released_after_a_run(judge_argv, server, workdir):
    assert run(main, judge_argv("--variants", "A", "--single-order")) == 0
    assert run(main, judge_argv("--variants", "B", "--single-order")) == 0  # the first run let go
    assert server.calls == 8


# --- 7. numbers, and a run where every task failed ----------------------------------------------------------


@pytest.mark.parametrize(
    "flag, value, says",
    [
        ("--retries", "-5", "--retries must be"),
        ("--timeout", "-1", "--timeout must be"),
        ("--timeout", "nan", "--timeout must be"),
        ("--timeout", "0", "--timeout must be"),
        ("--backoff", "inf", "--backoff must be"),
        ("--concurrency", "0", "--concurrency must be"),
        ("--max-calls", "-1", "--max-calls must be"),
        ("--max-retries", "-1", "--max-retries must be"),
    ],
)
def test_bad_numbers_are_refused_before_any_call(judge_argv, server, workdir, flag, value, says, capsys):
    argv = judge_argv("--variants", "A")
    if flag in argv:
        argv[argv.index(flag) + 1] = value
    else:
        argv += [flag, value]
    assert run(main, argv) == 2
    assert says in capsys.readouterr().err
    assert server.calls == 0 and not judgments_path(workdir, "tiny", "gpt-4").exists()


def test_a_run_where_every_task_failed_exits_non_zero(judge_argv, server, workdir, capsys):
    server.script(then="400")
    assert run(main, judge_argv("--variants", "A", "--single-order")) == 1
    err = capsys.readouterr().err
    assert "4 requests failed" in err and "HTTP 400" in err
    assert server.calls == 4 and not judgments_path(workdir, "tiny", "gpt-4").exists()


# --- 8, 9. garbage from the endpoint, and a key it echoes ---------------------------------------------------


class GarbageServer:
    """Answers every request with one kind of garbage, echoing the Authorization header where it can."""

    def __init__(self, kind: str):
        self.kind, self.calls = kind, 0
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer._lock:
                    outer.calls += 1
                auth = self.headers.get("Authorization", "")
                status, body, headers = outer.answer(auth, self.path)
                self.send_response(status)
                for name, value in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True

    def answer(self, auth: str, path: str) -> tuple[int, bytes, dict]:
        json_type = {"Content-Type": "application/json"}
        echo = f"you sent Authorization: {auth}"
        chat = {"id": "x", "object": "chat.completion", "created": 0, "model": "gpt-4"}
        if self.kind == "html":
            return (
                200,
                f"<html><body>Login required. {echo}</body></html>".encode(),
                {"Content-Type": "text/html"},
            )
        if self.kind == "not_json":
            return 200, f"OK {echo}".encode(), json_type
        if self.kind == "truncated":
            return (
                200,
                json.dumps({**chat, "choices": [{"message": {"content": echo}}]}).encode()[:40],
                json_type,
            )
        if self.kind == "no_choices":
            return 200, json.dumps({**chat, "choices": []}).encode(), json_type
        if self.kind == "null_message":
            return 200, json.dumps({**chat, "choices": [{"index": 0, "message": None}]}).encode(), json_type
        if self.kind == "500":
            body = json.dumps({"error": {"message": f"internal error; {echo}", "type": "server_error"}})
            return 500, body.encode(), json_type
        if self.kind == "redirect_loop":
            return 307, b"", {"Location": path}
        if self.kind == "echo_verdict":  # a well-formed completion whose text holds the key
            message = {"role": "assistant", "content": f"I cannot score this. {echo}"}
            reply = {**chat, "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
            return 200, json.dumps(reply).encode(), json_type
        raise AssertionError(self.kind)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self):
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.mark.parametrize(
    "kind, says",
    [
        ("html", "an HTML page instead of a chat completion"),
        ("not_json", "not JSON"),
        ("truncated", "not JSON, or is cut off"),
        ("no_choices", "no choices"),
        ("null_message", "no message"),
        ("500", "HTTP 500"),
        ("redirect_loop", "redirect loop"),
    ],
)
def test_garbage_is_retried_then_a_clear_error_and_nothing_cached(
    judge_argv, workdir, key, kind, says, capsys
):
    with GarbageServer(kind) as garbage:
        argv = _with_url(judge_argv("--variants", "A", "--concurrency", "1", "--retries", "1"), garbage.url)
        code = run(main, argv)
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert garbage.calls >= 2  # retried
    assert "Traceback" not in captured.err + captured.out
    assert says in captured.err and "run the same command again" in captured.err
    assert not judgments_path(workdir, "tiny", "gpt-4").exists()  # nothing cached
    assert key not in captured.err + captured.out and key[-8:] not in captured.err + captured.out
    assert key not in _everything_under(workdir)


def test_an_echoed_key_never_reaches_a_file_or_the_output(judge_argv, workdir, key, capsys):
    with GarbageServer("echo_verdict") as echo:
        assert run(main, _with_url(judge_argv("--variants", "A", "--single-order"), echo.url)) == 1
    captured = capsys.readouterr()
    kept = _records(unparsable_path(judgments_path(workdir, "tiny", "gpt-4")))
    assert len(kept) == 4 and all("***" in r["raw"] for r in kept)  # the raw text, scrubbed
    assert key not in _everything_under(workdir) and key[-8:] not in _everything_under(workdir)
    assert key not in captured.out + captured.err and key[-8:] not in captured.out + captured.err
    assert len(JudgmentCache(judgments_path(workdir, "tiny", "gpt-4"))) == 0


# --- 5. every file eval writes is written atomically --------------------------------------------------------


def _no_space(*args, **kwargs):
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize("breaks", ["chart", "table"])
def test_a_failed_report_write_leaves_the_old_files_whole(
    workdir, tiny_set, tmp_path, monkeypatch, breaks, capsys
):
    from matplotlib.figure import Figure

    report_dir = tmp_path / "report"
    argv = ["--set", str(tiny_set), "--out-dir", str(workdir), "--report-dir", str(report_dir)]
    assert run(report_main, argv) == 0
    before = {p.name: p.read_bytes() for p in report_dir.iterdir()}
    assert set(before) == {"tiny.md", "tiny.csv", "tiny.png"}

    if breaks == "chart":  # the disk fills while the chart is saved: part of a PNG, then the error

        def savefig(self, target, *args, **kwargs):
            if hasattr(target, "write"):
                target.write(b"\x89PNG\r\n\x1a\n cut")
            else:
                Path(target).write_bytes(b"\x89PNG\r\n\x1a\n cut")
            _no_space()

        monkeypatch.setattr(Figure, "savefig", savefig)
    else:  # the disk fills after the table's first row

        class Writer:
            def __init__(self, stream, *args, **kwargs):
                self.stream = stream

            def writerows(self, rows):
                self.stream.write("category,n\r\n")
                _no_space()

        monkeypatch.setattr("eval.report.csv.writer", Writer)
    assert run(report_main, argv) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in report_dir.iterdir()} == before  # whole, and no temp file left


def test_a_sample_set_is_written_atomically(tmp_path, monkeypatch):
    from eval import sets

    target = tmp_path / "sample.jsonl"
    target.write_text("the old sample\n", encoding="utf-8")
    sample = sets.EvalSet("s", None, (sets.Question("q1", "Medical", "Đau đầu?", "Nghỉ ngơi"),) * 3)
    writes = []

    def dumps(value, **kwargs):
        writes.append(value)
        if len(writes) == 2:
            _no_space()
        return json.dumps(value, **kwargs)

    monkeypatch.setattr(sets.json, "dumps", dumps)
    with pytest.raises(OSError):
        sets.write_eval_set(sample, target)
    assert target.read_text(encoding="utf-8") == "the old sample\n" and list(tmp_path.iterdir()) == [target]
