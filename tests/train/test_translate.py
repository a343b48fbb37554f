"""train.translate against a real HTTP server on 127.0.0.1 standing in for Google Translate."""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from testkit.translate_server import HANG, REDIRECT_LOOP, TRUNCATE
from train.translate import (
    EndpointGoogleTranslator,
    Journal,
    RetryPolicy,
    ServiceError,
    TranslateSettings,
    endpoint_key,
    journal_header,
    main,
    mask_inline_code,
    split_code_blocks,
    split_for_limit,
    translate_file,
    unmask,
)
from vichat.errors import DataError, SettingsError, ViChatError

REPO = Path(__file__).resolve().parents[2]


def records(count: int, marker: str = "") -> list[dict]:
    return [
        {"id": f"r{i}", "topic": "t", "prompt": f"Question {i} {marker}".strip(), "response": f"Answer {i}."}
        for i in range(count)
    ]


def expected(record: dict) -> dict:
    return {**record, "prompt": record["prompt"].upper(), "response": record["response"].upper()}


# --------------------------------------------------------------------------- the happy path


def test_translates_every_record_in_input_order(tmp_path, fake_server, fast_settings, jsonl):
    server = fake_server(latency_s=0.01)
    source = jsonl.write(tmp_path / "in.jsonl", records(12))
    out = tmp_path / "out.jsonl"

    stats = translate_file(source, out, fast_settings(server, concurrency=4))

    assert jsonl.read(out) == [expected(r) for r in records(12)]
    assert server.request_count == 24 and stats.requests == 24
    assert sorted(server.texts) == sorted(t for r in records(12) for t in (r["prompt"], r["response"]))
    assert stats.translated == 12 and stats.failed == 0
    assert not (tmp_path / "out.jsonl.partial").exists()
    assert not (tmp_path / "out.jsonl.failures.jsonl").exists()


def test_requests_run_concurrently_within_the_bound(tmp_path, fake_server, fast_settings, jsonl):
    server = fake_server(latency_s=0.1)
    source = jsonl.write(tmp_path / "in.jsonl", records(16))

    translate_file(source, tmp_path / "out.jsonl", fast_settings(server, concurrency=4))

    assert 2 <= server.max_in_flight <= 4


def test_rerun_sends_zero_requests(tmp_path, fake_server, fast_settings, jsonl):
    server = fake_server()
    source = jsonl.write(tmp_path / "in.jsonl", records(6))
    out = tmp_path / "out.jsonl"
    translate_file(source, out, fast_settings(server))
    first = out.read_bytes()
    server.reset()

    again = translate_file(source, out, fast_settings(server))
    elsewhere = translate_file(source, tmp_path / "other.jsonl", fast_settings(server))

    assert server.request_count == 0
    assert again.requests == 0 and elsewhere.requests == 0 and again.cache_hits == 12
    assert out.read_bytes() == first == (tmp_path / "other.jsonl").read_bytes()


def test_identical_texts_share_one_request(tmp_path, fake_server, fast_settings, jsonl):
    server = fake_server(latency_s=0.05)
    same = [{"prompt": "Hello there.", "response": "Same answer."} for _ in range(8)]
    source = jsonl.write(tmp_path / "in.jsonl", same)

    translate_file(source, tmp_path / "out.jsonl", fast_settings(server, concurrency=8))

    assert Counter(server.texts) == {"Hello there.": 1, "Same answer.": 1}


def test_translator_none_passes_records_through_without_requests(tmp_path, jsonl):
    source = jsonl.write(tmp_path / "in.jsonl", records(3))
    settings = TranslateSettings(translator="none", url="http://127.0.0.1:9/m", cache_dir=str(tmp_path / "c"))
    settings.progress = False

    stats = translate_file(source, tmp_path / "out.jsonl", settings)

    assert jsonl.read(tmp_path / "out.jsonl") == records(3)
    assert stats.requests == 0 and not (tmp_path / "c").exists()


# --------------------------------------------------------------------------- retries and failures


def test_429_then_success_is_retried(tmp_path, fake_server, fast_settings, jsonl):
    server = fake_server(script=[429, 429])
    source = jsonl.write(tmp_path / "in.jsonl", records(1))

    stats = translate_file(source, tmp_path / "out.jsonl", fast_settings(server, concurrency=1))

    assert jsonl.read(tmp_path / "out.jsonl") == [expected(records(1)[0])]
    assert server.request_count == 4 and stats.retries == 2
    assert server.texts[:3] == ["Question 0"] * 3


def test_500_storm_ends_in_failures_file_and_rerun_retries_only_that(
    tmp_path, fake_server, fast_settings, jsonl
):
    data = records(5)
    data[2]["prompt"] = "Question 2 STORM"
    source = jsonl.write(tmp_path / "in.jsonl", data)
    out = tmp_path / "out.jsonl"
    server = fake_server(fail_when={"STORM": 500})
    argv = [
        str(source),
        str(out),
        "--url",
        server.url,
        "--cache",
        str(tmp_path / "cache"),
        "--max-attempts",
        "3",
    ]
    argv += ["--backoff", "0.001", "--backoff-max", "0.01", "--no-progress", "--concurrency", "2"]

    assert main(argv) == 1

    assert server.texts.count("Question 2 STORM") == 3  # bounded attempts
    failures = jsonl.read(tmp_path / "out.jsonl.failures.jsonl")
    assert len(failures) == 1
    assert failures[0]["index"] == 2 and failures[0]["id"] == "r2" and failures[0]["field"] == "prompt"
    assert "HTTP 500" in failures[0]["reason"] and "3 attempts" in failures[0]["reason"]
    assert [r["id"] for r in jsonl.read(out)] == ["r0", "r1", "r3", "r4"]  # the others, in order
    assert (tmp_path / "out.jsonl.partial").exists()

    server.settings.fail_when.clear()  # the service recovers
    server.reset()
    assert main(argv) == 0

    assert sorted(server.texts) == ["Answer 2.", "Question 2 STORM"]
    assert jsonl.read(out) == [expected(r) for r in data]
    assert not (tmp_path / "out.jsonl.partial").exists()
    assert not (tmp_path / "out.jsonl.failures.jsonl").exists()


def test_timeout_is_retried(tmp_path, fake_server, fast_settings, jsonl):
    server = fake_server(script=[HANG], hang_s=1.0)
    source = jsonl.write(tmp_path / "in.jsonl", records(1))

    stats = translate_file(
        source, tmp_path / "out.jsonl", fast_settings(server, concurrency=1, timeout_s=0.2)
    )

    assert jsonl.read(tmp_path / "out.jsonl") == [expected(records(1)[0])]
    assert stats.retries == 1 and server.texts == ["Question 0", "Question 0", "Answer 0."]


def test_persistent_timeout_is_recorded_as_a_failure(tmp_path, fake_server, fast_settings, jsonl):
    data = records(2)
    data[1]["response"] = "SLOW answer"
    server = fake_server(fail_when={"SLOW": HANG}, hang_s=0.6)
    source = jsonl.write(tmp_path / "in.jsonl", data)

    stats = translate_file(
        source, tmp_path / "out.jsonl", fast_settings(server, timeout_s=0.15, max_attempts=2)
    )

    assert stats.failed == 1
    [failure] = jsonl.read(tmp_path / "out.jsonl.failures.jsonl")
    assert failure["index"] == 1 and failure["field"] == "response" and "timed out" in failure["reason"]
    assert jsonl.read(tmp_path / "out.jsonl") == [expected(data[0])]


def test_other_4xx_is_not_retried(tmp_path, fake_server, fast_settings, jsonl):
    server = fake_server(fail_when={"FORBIDDEN": 403})
    data = [{"prompt": "FORBIDDEN words", "response": "fine"}]
    source = jsonl.write(tmp_path / "in.jsonl", data)

    stats = translate_file(source, tmp_path / "out.jsonl", fast_settings(server))

    assert server.request_count == 1 and stats.failed == 1
    assert "HTTP 403" in jsonl.read(tmp_path / "out.jsonl.failures.jsonl")[0]["reason"]


def test_backoff_grows_with_jitter_honours_retry_after_and_is_capped():
    policy = RetryPolicy(max_attempts=5, backoff_s=1.0, backoff_max_s=10.0, rng=random.Random(0))
    delays = [policy.delay(attempt, None) for attempt in (1, 2, 3)]
    assert 0.5 <= delays[0] <= 1.5 and 1.0 <= delays[1] <= 3.0 and 2.0 <= delays[2] <= 6.0
    assert policy.delay(1, retry_after_s=4.0) >= 4.0
    assert policy.delay(10, None) == 10.0 and policy.delay(1, retry_after_s=60.0) == 10.0


# --------------------------------------------------------------------------- long texts and code


PARAGRAPH = "Plants make food from light. They need water and air. " * 3


def test_long_text_is_split_below_the_limit_and_code_is_kept(tmp_path, fake_server, fast_settings, jsonl):
    code = "```python\ndef add(a, b):\n    return a + b  # keep me exactly\n```\n"
    inline = "`snake_case_name`"
    text = f"{PARAGRAPH}\n\n{PARAGRAPH}Call {inline} now.\n\n{code}{PARAGRAPH}\nlast line"
    server = fake_server(max_chars=120)  # refuses (HTTP 400) anything of 120 characters or more
    source = jsonl.write(tmp_path / "in.jsonl", [{"prompt": "Explain.", "response": text}])

    stats = translate_file(source, tmp_path / "out.jsonl", fast_settings(server, max_chars=120))

    assert stats.failed == 0
    sent = server.texts
    assert len(sent) > 4 and all(len(t) < 120 for t in sent)
    assert not any("def add" in t or "snake_case_name" in t for t in sent)
    want = text.upper().replace(code.upper(), code).replace(inline.upper(), inline)
    assert jsonl.read(tmp_path / "out.jsonl")[0]["response"] == want


def test_lost_line_breaks_are_redone_line_by_line(tmp_path, fake_server, fast_settings, jsonl):
    server = fake_server(translate=lambda t: t.upper().replace("\n", " "))
    text = "First line\nsecond line\nthird line"
    source = jsonl.write(tmp_path / "in.jsonl", [{"prompt": text, "response": "ok"}])

    translate_file(source, tmp_path / "out.jsonl", fast_settings(server))

    assert jsonl.read(tmp_path / "out.jsonl")[0]["prompt"] == text.upper()
    assert {"First line", "second line", "third line"} <= set(server.texts)


def test_dropped_code_markers_fall_back_to_translating_around_the_code(
    tmp_path, fake_server, fast_settings, jsonl
):
    server = fake_server(translate=lambda t: re.sub(r"\[\[\d+\]\]", "", t).upper())
    text = "Use `len(x)` to count and `sorted(x)` to sort."
    source = jsonl.write(tmp_path / "in.jsonl", [{"prompt": text, "response": "ok"}])

    translate_file(source, tmp_path / "out.jsonl", fast_settings(server))

    assert jsonl.read(tmp_path / "out.jsonl")[0]["prompt"] == "USE `len(x)` TO COUNT AND `sorted(x)` TO SORT."
    assert "len(x)" not in "".join(server.texts)


def test_split_for_limit_prefers_boundaries_and_rejoins_exactly():
    text = "Para one. Still one.\n\nPara two is here. " + "x" * 50 + "\nEnd."
    chunks = split_for_limit(text, 30)
    assert "".join(chunks) == text
    assert all(len(chunk) < 30 for chunk in chunks)
    assert chunks[0] == "Para one. Still one.\n\n"


def test_code_blocks_and_inline_code_round_trip():
    text = "Intro `a` and `b`\n~~~\nraw `x`\n~~~\nouter\n```\nunclosed"
    pieces = split_code_blocks(text)
    assert "".join(piece for _, piece in pieces) == text
    assert [is_code for is_code, _ in pieces] == [False, True, False, True]
    masked, spans = mask_inline_code(pieces[0][1])
    assert masked == "Intro [[0]] and [[1]]\n" and unmask(masked.upper(), spans) == "INTRO `a` AND `b`\n"
    assert mask_inline_code("already [[0]] here") is None


# --------------------------------------------------------------------------- kill and resume


class Crash(BaseException):
    """Stands in for the process dying: not an Exception, so nothing may swallow it."""


class CrashAfter:
    """Wraps the real client; after ``n`` requests every call crashes before sending."""

    def __init__(self, inner, n: int) -> None:
        self.inner, self.left, self.lock = inner, n, threading.Lock()

    def translate(self, text: str) -> str:
        with self.lock:
            self.left -= 1
            if self.left < 0:
                raise Crash()
        return self.inner.translate(text)


def test_crash_mid_run_then_resume_translates_nothing_twice(tmp_path, fake_server, fast_settings, jsonl):
    server = fake_server(latency_s=0.01)
    data = records(20)
    source = jsonl.write(tmp_path / "in.jsonl", data)
    out = tmp_path / "out.jsonl"
    settings = fast_settings(server, concurrency=3)
    client = EndpointGoogleTranslator("en", "vi", base_url=server.url, timeout_s=2)

    with pytest.raises(Crash):
        translate_file(source, out, settings, client=CrashAfter(client, 15))

    journaled = len((tmp_path / "out.jsonl.partial").read_text().splitlines()) - 1
    assert 0 < journaled < 20 and not out.exists()
    stats = translate_file(source, out, settings)

    assert stats.resumed == journaled and stats.translated == 20 - journaled
    assert jsonl.read(out) == [expected(r) for r in data]
    every_text = [t for r in data for t in (r["prompt"], r["response"])]
    assert Counter(server.texts) == Counter(every_text)  # each text sent exactly once over both runs


def test_killed_process_resumes_where_it_stopped(tmp_path, fake_server, jsonl):
    server = fake_server(latency_s=0.03)
    data = records(40)
    source = jsonl.write(tmp_path / "in.jsonl", data)
    out, journal = tmp_path / "out.jsonl", tmp_path / "out.jsonl.partial"
    argv = [sys.executable, "-m", "train.translate", str(source), str(out), "--url", server.url]
    argv += ["--cache", str(tmp_path / "cache"), "--concurrency", "1", "--no-progress"]
    process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not journal.exists() or journal.read_text().count("\n") < 6):
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL and not out.exists()
    with journal.open("a") as stream:
        stream.write('{"i": 39, "record": {"prompt": "torn wri')  # a line cut short by the kill
    done = [json.loads(line)["i"] for line in journal.read_text().splitlines()[1:-1]]
    assert 5 <= len(done) < 40

    stats = translate_file(
        source, out, TranslateSettings(url=server.url, cache_dir=str(tmp_path / "cache"), progress=False)
    )

    assert stats.resumed == len(done)
    assert jsonl.read(out) == [expected(r) for r in data]
    counts = Counter(server.texts)
    assert all(counts[t] == 1 for i in done for t in (data[i]["prompt"], data[i]["response"]))
    assert sum(counts.values()) <= 80 + 1  # at most the one request in flight at the kill is repeated


def test_journal_of_another_input_is_not_reused(tmp_path, fake_server, fast_settings, jsonl):
    server = fake_server()
    source = jsonl.write(tmp_path / "in.jsonl", records(2))
    out = tmp_path / "out.jsonl"
    (tmp_path / "out.jsonl.partial").write_text(
        '{"journal": 1, "input_sha256": "0000"}\n{"i": 0, "record": {"prompt": "STALE", "response": "x"}}\n'
    )

    stats = translate_file(source, out, fast_settings(server))

    assert stats.resumed == 0 and jsonl.read(out) == [expected(r) for r in records(2)]


# --------------------------------------------------------------------------- input and settings errors


def test_malformed_input_is_a_data_error_with_the_line(tmp_path, fake_server, fast_settings):
    server = fake_server()
    source = tmp_path / "in.jsonl"
    source.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "a",\n')

    with pytest.raises(DataError, match=r"in\.jsonl:2: malformed JSON"):
        translate_file(source, tmp_path / "out.jsonl", fast_settings(server))
    code, err = cli([str(source), str(tmp_path / "out.jsonl"), "--url", server.url, "--no-progress"])
    assert code == 2 and "in.jsonl:2" in err and "Traceback" not in err
    assert server.request_count == 0


def test_bad_settings_are_rejected(tmp_path, jsonl):
    source = jsonl.write(tmp_path / "in.jsonl", records(1))
    with pytest.raises(SettingsError, match="--concurrency"):
        translate_file(source, tmp_path / "o.jsonl", TranslateSettings(concurrency=0))
    with pytest.raises(ViChatError, match="overwrite the input"):
        translate_file(source, source, TranslateSettings())


@pytest.mark.parametrize("element_class", ["t0", "result-container"])
def test_client_reads_either_result_element_and_reports_status(fake_server, element_class):
    server = fake_server(script=[503, 404], element_class=element_class)
    client = EndpointGoogleTranslator("en", "vi", base_url=server.url, timeout_s=2)
    with pytest.raises(ServiceError) as busy:
        client.translate("hello")
    with pytest.raises(ServiceError) as missing:
        client.translate("hello")
    assert busy.value.retryable and "503" in str(busy.value)
    assert not missing.value.retryable and "404" in str(missing.value)
    assert client.translate("hello\nworld") == "HELLO\nWORLD"
    client.close()


def test_client_reports_a_page_without_a_translation(fake_server):
    server = fake_server(element_class="captcha")
    client = EndpointGoogleTranslator("en", "vi", base_url=server.url, timeout_s=2)
    with pytest.raises(ServiceError, match="no translation element") as failure:
        client.translate("hello")
    assert not failure.value.retryable
    client.close()


# --------------------------------------------------------------------------- hardening (issue 14)


def cli(argv: list[str]) -> tuple[int, str]:
    """``python -m train.translate argv`` in this process, through the one runner; (exit status, stderr)."""
    import contextlib
    import io

    from vichat.cli import run

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = run(main, argv)
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code
    return code, err.getvalue()


def fast_argv(server, tmp_path: Path, source: Path, out: Path, *extra: str) -> list[str]:
    return [
        str(source), str(out), "--url", server.url, "--cache", str(tmp_path / "cache"), "--no-progress",
        "--backoff", "0.001", "--backoff-max", "0.01", "--max-attempts", "2", *extra,
    ]


def test_failures_path_equal_to_the_input_is_refused_and_the_input_kept(tmp_path, fake_server, jsonl):
    server = fake_server()
    source = jsonl.write(tmp_path / "in.jsonl", records(3))
    before = source.read_bytes()

    code, err = cli(fast_argv(server, tmp_path, source, tmp_path / "out.jsonl", "--failures", str(source)))

    assert code == 2 and "--failures" in err and "overwrite the input" in err
    assert source.read_bytes() == before and server.request_count == 0


def test_a_user_file_at_the_failures_path_is_neither_truncated_nor_deleted(tmp_path, fake_server, jsonl):
    server = fake_server()
    source = jsonl.write(tmp_path / "in.jsonl", records(2))
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes, not a failures file\n")

    code, err = cli(fast_argv(server, tmp_path, source, tmp_path / "out.jsonl", "--failures", str(notes)))

    assert code == 2 and "not a failures file" in err
    assert notes.read_text() == "my notes, not a failures file\n"


def test_failures_file_is_written_whole_at_the_end(tmp_path, fake_server, fast_settings, jsonl):
    data = records(4)
    data[1]["prompt"] = "BAD one"
    data[3]["response"] = "BAD two"
    server = fake_server(fail_when={"BAD": 403})
    source = jsonl.write(tmp_path / "in.jsonl", data)
    old = [{"index": 9, "id": "old", "field": "prompt", "reason": "from an earlier run"}]
    failures = jsonl.write(tmp_path / "out.jsonl.failures.jsonl", old)

    stats = translate_file(source, tmp_path / "out.jsonl", fast_settings(server))

    assert stats.failed == 2
    assert sorted(f["index"] for f in jsonl.read(failures)) == [1, 3]  # the earlier run's list replaced
    assert not list(tmp_path.glob(".out.jsonl.failures.jsonl.*"))  # no temp file left behind


def test_empty_translation_is_a_failure_never_cached_and_a_rerun_retranslates(
    tmp_path, fake_server, fast_settings, jsonl
):
    blank = fake_server(translate=lambda text: "   " if "Question" in text else text.upper())
    source = jsonl.write(tmp_path / "in.jsonl", records(2))
    out = tmp_path / "out.jsonl"

    stats = translate_file(source, out, fast_settings(blank))

    assert stats.failed == 2 and stats.translated == 0
    assert all("empty translation" in f["reason"] for f in jsonl.read(tmp_path / "out.jsonl.failures.jsonl"))
    good = fake_server()
    again = translate_file(source, out, fast_settings(good))
    assert again.failed == 0 and {"Question 0", "Question 1"} <= set(good.texts)
    assert jsonl.read(out) == [expected(r) for r in records(2)]


def test_empty_translation_from_the_same_endpoint_is_not_served_from_the_cache(
    tmp_path, fake_server, fast_settings, jsonl
):
    answers = {"empty": True}
    server = fake_server(translate=lambda text: "" if answers["empty"] else text.upper())
    source = jsonl.write(tmp_path / "in.jsonl", records(1))

    assert translate_file(source, tmp_path / "out.jsonl", fast_settings(server)).failed == 1
    answers["empty"] = False
    server.reset()
    stats = translate_file(source, tmp_path / "out.jsonl", fast_settings(server))

    assert stats.failed == 0 and "Question 0" in server.texts
    assert jsonl.read(tmp_path / "out.jsonl") == [expected(records(1)[0])]


@pytest.mark.parametrize("misbehaviour", [TRUNCATE, REDIRECT_LOOP])
def test_transport_failures_are_retried_then_recorded_and_the_run_goes_on(
    tmp_path, fake_server, jsonl, misbehaviour
):
    data = records(4)
    data[2]["prompt"] = "Question 2 BROKEN"
    server = fake_server(fail_when={"BROKEN": misbehaviour})
    source = jsonl.write(tmp_path / "in.jsonl", data)
    out = tmp_path / "out.jsonl"

    code, err = cli(fast_argv(server, tmp_path, source, out, "--concurrency", "2"))

    assert code == 1 and "Traceback" not in err and "1 record(s) failed" in err
    [failure] = jsonl.read(tmp_path / "out.jsonl.failures.jsonl")
    assert failure["index"] == 2 and "2 attempts" in failure["reason"]
    assert [r["id"] for r in jsonl.read(out)] == ["r0", "r1", "r3"]
    assert server.texts.count("Question 2 BROKEN") >= 2  # retried


@pytest.mark.parametrize(
    "url", ["not a url", "ftp://127.0.0.1/m", "http://", "127.0.0.1:8000/m", "http://127.0.0.1:99999/m"]
)
def test_a_bad_url_is_refused_before_any_work(tmp_path, jsonl, url):
    source = jsonl.write(tmp_path / "in.jsonl", records(1))

    code, err = cli([str(source), str(tmp_path / "out.jsonl"), "--url", url, "--no-progress"])

    assert code == 2 and "--url" in err and "Traceback" not in err
    assert not (tmp_path / "out.jsonl.partial").exists()


def test_cache_and_journal_are_keyed_by_endpoint(tmp_path, fake_server, fast_settings, jsonl):
    stand_in = fake_server()  # upper-cases
    real = fake_server(translate=lambda text: f"vi: {text}")
    data = records(6)
    source = jsonl.write(tmp_path / "in.jsonl", data)
    out = tmp_path / "out.jsonl"
    client = EndpointGoogleTranslator("en", "vi", base_url=stand_in.url, timeout_s=2)
    with pytest.raises(Crash):  # a partial journal of stand-in translations is left behind
        translate_file(source, out, fast_settings(stand_in, concurrency=1), client=CrashAfter(client, 6))
    assert len((tmp_path / "out.jsonl.partial").read_text().splitlines()) > 1

    stats = translate_file(source, out, fast_settings(real))

    assert stats.resumed == 0 and real.request_count == 12
    assert jsonl.read(out) == [
        {**r, "prompt": f"vi: {r['prompt']}", "response": f"vi: {r['response']}"} for r in data
    ]


def test_endpoint_key_ignores_spelling_but_not_the_address():
    assert endpoint_key("HTTPS://Translate.Google.com:443/m") == endpoint_key("https://translate.google.com/m")
    assert endpoint_key("http://127.0.0.1:8000/m") != endpoint_key("http://127.0.0.1:8001/m")
    assert "secret" not in endpoint_key("http://user:secret@127.0.0.1:8000/m")  # never written to disk


def _journal(tmp_path: Path, data: list[dict], settings: TranslateSettings, done: int) -> Path:
    """The journal a killed run leaves: a header and ``done`` finished records, last line torn."""
    source = tmp_path / "in.jsonl"
    journal = Journal(tmp_path / "out" / "out.jsonl.partial", journal_header(source, settings.checked()))
    journal.path.parent.mkdir(exist_ok=True)
    lines = [json.dumps(journal.header)] + [
        json.dumps({"i": i, "record": expected(data[i])}) for i in range(done)
    ]
    journal.path.write_text("\n".join(lines) + '\n{"i": 99, "record": {"pro')
    return journal.path


@pytest.fixture
def full_disk(monkeypatch):
    """``full_disk(*names)``: from now on, the files so named and their temp files (``.NAME.*``) open (and
    truncate, for "w") but cannot be written: a full disk. Undone after the test."""
    import errno
    import io
    import os

    real_open = io.open

    class FullDisk:
        def __init__(self, stream):
            self.stream = stream

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        writelines = write

        def __getattr__(self, name):
            return getattr(self.stream, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.stream.close()

    def activate(*names: str) -> None:
        def full(path: str) -> bool:
            name = Path(path).name
            return name in names or any(re.fullmatch(rf"\.{re.escape(n)}\.\w{{8}}\.tmp", name) for n in names)

        def full_disk_open(file, mode="r", *args, **kwargs):
            name = os.readlink(f"/proc/self/fd/{file}") if isinstance(file, int) else os.fspath(file)
            stream = real_open(file, mode, *args, **kwargs)
            return FullDisk(stream) if full(name) and set(mode) & set("wa+") else stream

        monkeypatch.setattr(io, "open", full_disk_open)

    return activate


def test_disk_full_while_resuming_loses_no_journaled_record(
    tmp_path, fake_server, fast_settings, jsonl, full_disk, monkeypatch
):
    server = fake_server()
    data = records(40)
    source = jsonl.write(tmp_path / "in.jsonl", data)
    out = tmp_path / "out" / "out.jsonl"
    settings = fast_settings(server)
    journal = _journal(tmp_path, data, settings, done=30)

    full_disk(journal.name)
    with pytest.raises(OSError):
        translate_file(source, out, settings)
    monkeypatch.undo()

    kept = [json.loads(line)["i"] for line in journal.read_text().splitlines()[1:] if line.endswith("}")]
    assert sorted(set(kept)) == list(range(30))
    server.reset()
    stats = translate_file(source, out, settings)
    assert stats.resumed == 30 and server.request_count == 20
    assert jsonl.read(out) == [expected(r) for r in data]


def test_disk_full_at_the_end_keeps_the_earlier_outputs_whole(
    tmp_path, fake_server, fast_settings, jsonl, full_disk, monkeypatch
):
    server = fake_server(fail_when={"BAD": 403})
    data = records(3)
    data[1]["prompt"] = "BAD"
    source = jsonl.write(tmp_path / "in.jsonl", data)
    out = tmp_path / "out.jsonl"
    earlier = [{"index": 1, "id": "r1", "field": "prompt", "reason": "HTTP 403"}]
    failures = jsonl.write(tmp_path / "out.jsonl.failures.jsonl", earlier)
    out.write_text('{"prompt": "EARLIER", "response": "RUN"}\n')

    full_disk(out.name, failures.name)
    with pytest.raises(OSError):
        translate_file(source, out, fast_settings(server))
    monkeypatch.undo()

    assert jsonl.read(failures) == earlier and out.read_text() == '{"prompt": "EARLIER", "response": "RUN"}\n'
    assert not [p.name for p in tmp_path.glob(".out.jsonl*")]  # no temp file left behind
    server.reset()
    server.settings.fail_when.clear()
    assert translate_file(source, out, fast_settings(server)).failed == 0
    assert sorted(server.texts) == ["Answer 1.", "BAD"]  # record 1 only: the others are in the journal
    assert jsonl.read(out) == [expected(r) for r in data] and not failures.exists()


def test_resume_keeps_every_record_and_drops_only_the_torn_line(tmp_path, fake_server, fast_settings, jsonl):
    server = fake_server()
    data = records(10)
    source = jsonl.write(tmp_path / "in.jsonl", data)
    settings = fast_settings(server)
    _journal(tmp_path, data, settings, done=7)

    stats = translate_file(source, tmp_path / "out" / "out.jsonl", settings)

    assert stats.resumed == 7 and server.request_count == 6
    assert jsonl.read(tmp_path / "out" / "out.jsonl") == [expected(r) for r in data]


def test_a_second_translation_to_the_same_output_is_refused(tmp_path, fake_server, fast_settings, jsonl):
    release = threading.Event()

    def slow(text: str) -> str:
        release.wait(10)
        return text.upper()

    server = fake_server(translate=slow)
    source = jsonl.write(tmp_path / "in.jsonl", records(2))
    out = tmp_path / "out" / "a.jsonl"
    first: dict = {}
    worker = threading.Thread(
        target=lambda: first.update(stats=translate_file(source, out, fast_settings(server, concurrency=1)))
    )
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while server.request_count == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.request_count > 0
        code, err = cli(fast_argv(server, tmp_path, source, out))
    finally:
        release.set()
        worker.join(10)

    assert code == 2 and "in use" in err and "Traceback" not in err
    assert first["stats"].failed == 0 and jsonl.read(out) == [expected(r) for r in records(2)]


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--retries", "-5"),
        ("--timeout", "-1"),
        ("--timeout", "nan"),
        ("--timeout", "inf"),
        ("--concurrency", "0"),
        ("--concurrency", "-2"),
        ("--max-attempts", "0"),
        ("--backoff", "nan"),
        ("--backoff-max", "-1"),
        ("--max-chars", "3"),
    ],
)
def test_bad_numbers_are_refused_with_the_flag_named(tmp_path, fake_server, jsonl, flag, value):
    server = fake_server()
    source = jsonl.write(tmp_path / "in.jsonl", records(1))

    code, err = cli([str(source), str(tmp_path / "out.jsonl"), "--url", server.url, "--no-progress", flag, value])

    assert code == 2 and flag in err and "Traceback" not in err
    assert server.request_count == 0


def test_nan_timeout_in_settings_is_a_settings_error(tmp_path, jsonl):
    source = jsonl.write(tmp_path / "in.jsonl", records(1))
    with pytest.raises(SettingsError, match="--timeout"):
        translate_file(source, tmp_path / "o.jsonl", TranslateSettings(timeout_s=float("nan")))


def test_retries_sets_the_number_of_attempts(tmp_path, fake_server, jsonl):
    server = fake_server(fail_when={"Question": 500})
    source = jsonl.write(tmp_path / "in.jsonl", records(1))
    argv = [str(source), str(tmp_path / "out.jsonl"), "--url", server.url, "--no-progress"]
    argv += ["--cache", "", "--retries", "2", "--backoff", "0", "--backoff-max", "0"]

    assert cli(argv)[0] == 1
    assert server.texts.count("Question 0") == 3


@pytest.mark.parametrize(("flag", "value"), [("--source-lang", "englsh"), ("--target-lang", "xx"),
                                             ("--target-lang", "auto")])
def test_an_unknown_language_is_refused(tmp_path, fake_server, jsonl, flag, value):
    server = fake_server()
    source = jsonl.write(tmp_path / "in.jsonl", records(1))

    code, err = cli([str(source), str(tmp_path / "out.jsonl"), "--url", server.url, flag, value])

    assert code == 2 and flag in err and value in err and "Traceback" not in err
    assert server.request_count == 0


def test_a_language_name_means_its_code(tmp_path, fake_server, fast_settings, jsonl):
    server = fake_server()
    source = jsonl.write(tmp_path / "in.jsonl", records(1))
    translate_file(source, tmp_path / "a.jsonl", fast_settings(server, source_lang="en"))
    server.reset()

    stats = translate_file(source, tmp_path / "b.jsonl", fast_settings(server, source_lang="English"))

    assert stats.requests == 0  # the same cache entries: "English" is "en"


def test_a_field_no_record_has_is_an_error_naming_the_fields_that_exist(tmp_path, fake_server, jsonl):
    server = fake_server()
    source = jsonl.write(tmp_path / "in.jsonl", records(2))

    code, err = cli(fast_argv(server, tmp_path, source, tmp_path / "out.jsonl", "--fields", "prompt", "respones"))

    assert code == 2 and '"respones"' in err and "id, prompt, response, topic" in err
    assert server.request_count == 0


def test_a_missing_output_folder_is_created(tmp_path, fake_server, fast_settings, jsonl):
    server = fake_server()
    source = jsonl.write(tmp_path / "in.jsonl", records(2))
    out = tmp_path / "new" / "deeper" / "out.jsonl"

    translate_file(source, out, fast_settings(server))

    assert jsonl.read(out) == [expected(r) for r in records(2)]


def test_lone_surrogate_is_a_data_error_naming_the_line(tmp_path, fake_server, fast_settings):
    server = fake_server()
    source = tmp_path / "in.jsonl"
    source.write_bytes(b'{"prompt": "fine", "response": "ok"}\n\n{"prompt": "bad \\udc80", "response": "ok"}\n')

    with pytest.raises(DataError, match=r"in\.jsonl:3"):
        translate_file(source, tmp_path / "out.jsonl", fast_settings(server))
    assert server.request_count == 0


def test_ctrl_c_during_a_long_backoff_exits_at_once_with_the_journal_kept(tmp_path, fake_server, jsonl):
    data = records(2)
    data[1]["prompt"] = "Question 1 BUSY"
    server = fake_server(fail_when={"BUSY": 429}, retry_after_s=60)
    source = jsonl.write(tmp_path / "in.jsonl", data)
    out, journal = tmp_path / "out.jsonl", tmp_path / "out.jsonl.partial"
    argv = [sys.executable, "-m", "train.translate", str(source), str(out), "--url", server.url]
    argv += ["--cache", str(tmp_path / "cache"), "--concurrency", "1", "--no-progress", "--backoff-max", "120"]
    process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "Question 1 BUSY" not in server.texts:
            assert process.poll() is None, process.communicate()
            time.sleep(0.02)
        assert "Question 1 BUSY" in server.texts  # answered 429, Retry-After 60: the run is backing off
        process.send_signal(signal.SIGINT)
        start = time.monotonic()
        _, err = process.communicate(timeout=20)
        took = time.monotonic() - start
    finally:
        process.kill()
        process.wait()

    assert process.returncode == 130 and took < 5, (took, err)
    assert "Traceback" not in err and "resume" in err
    lines = journal.read_text().splitlines()
    assert [json.loads(line)["i"] for line in lines[1:]] == [0]
    assert server.texts.count("Question 1 BUSY") == 1
