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

from train.fake_translate_server import HANG
from train.translate import (
    EndpointGoogleTranslator,
    RetryPolicy,
    ServiceError,
    TranslateSettings,
    main,
    mask_inline_code,
    split_code_blocks,
    split_for_limit,
    translate_file,
    unmask,
)
from vichat.errors import DataError, SettingsError

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


def test_malformed_input_is_a_data_error_with_the_line(tmp_path, fake_server, fast_settings, capsys):
    server = fake_server()
    source = tmp_path / "in.jsonl"
    source.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "a",\n')

    with pytest.raises(DataError, match=r"in\.jsonl:2: malformed JSON"):
        translate_file(source, tmp_path / "out.jsonl", fast_settings(server))
    assert main([str(source), str(tmp_path / "out.jsonl"), "--url", server.url, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "in.jsonl:2" in err and "Traceback" not in err
    assert server.request_count == 0


def test_bad_settings_are_rejected(tmp_path, jsonl):
    source = jsonl.write(tmp_path / "in.jsonl", records(1))
    with pytest.raises(SettingsError, match="--concurrency"):
        translate_file(source, tmp_path / "o.jsonl", TranslateSettings(concurrency=0))
    with pytest.raises(SettingsError, match="differ"):
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
