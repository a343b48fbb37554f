"""Judging through the real openai client against the local server: retries, failures, cache, resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eval.answers import load_answers
from eval.client import ChatClient, Completion, JudgeUnavailableError
from eval.judge import main, run_judgments
from eval.scoring import summarize
from eval.sets import load_eval_set
from eval.verdicts import (
    FORWARD,
    SWAPPED,
    JudgePrompt,
    JudgmentCache,
    build_tasks,
    collect,
    judgments_path,
    pending,
    unparsable_path,
)
from vichat.cli import run

REPO = Path(__file__).resolve().parents[2]


def _cache_path(workdir):
    return judgments_path(workdir, "tiny", "gpt-4")


def _records(workdir):
    path = _cache_path(workdir)
    return (
        [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []
    )


def _tasks(tiny_set, workdir, variants=("A",), orders=(FORWARD, SWAPPED), endpoint=None):
    es = load_eval_set(tiny_set)
    answers = {v: load_answers(workdir, es, v) for v in ("reference", *variants)}
    tasks, _ = build_tasks(
        es, answers, [("reference", v) for v in variants], orders, "gpt-4", JudgePrompt.load().version,
        endpoint=endpoint,
    )  # fmt: skip
    return es, tasks


def test_prompt_is_the_papers():
    p = JudgePrompt.load()
    assert p.system == "You are a helpful and precise assistant for checking the quality of the answer."
    user = p.messages("Q?", "first answer", "second answer")[1]["content"]
    assert user.startswith("###Question\nQ?\n")
    assert "###The Start of Assistant 1's Answer\nfirst answer\n###The End of Assistant 1's Answer" in user
    assert "###The Start of Assistant 2's Answer\nsecond answer\n###The End of Assistant 2's Answer" in user
    assert "Please first output a single line containing only two values" in user
    assert (
        "ensuring that the order in which the responses were presented does not affect your judgment." in user
    )
    assert p.messages("{answer_2}", "{x}", "y")[1]["content"].startswith("###Question\n{answer_2}\n")


def test_paper_mode_single_order_scores_and_rerun_makes_zero_calls(judge_argv, server, workdir, capsys):
    assert run(main, judge_argv("--variants", "A", "--single-order")) == 0
    out = capsys.readouterr().out
    assert server.calls == 4
    assert "4 verdicts wanted" in out and "4 to ask" in out
    # by hand (conftest table): 100 x mean(6/8, 5/10, 5/5, 4/8) = 68.75; ratio of sums 100 x 20/31
    assert (
        "A vs reference (=100): 68.75 (sample-weighted), 64.52 (ratio of sums), 4/4 questions scored" in out
    )
    rec = _records(workdir)[0]
    assert rec["assistant_1"] == "reference" and rec["assistant_2"] == "A" and rec["order"] == FORWARD
    assert server.requests[0]["body"]["model"] == "gpt-4"
    assert server.requests[0]["body"]["messages"][0]["role"] == "system"
    assert run(main, judge_argv("--variants", "A", "--single-order")) == 0
    assert server.calls == 4  # the rerun made no call
    assert "4 cached, 0 to ask" in capsys.readouterr().out


def test_both_orders_are_judged_and_averaged(judge_argv, server, tiny_set, workdir, capsys):
    server.behaviour.bias = 1.0  # the judge favours whoever is shown first by one point
    assert run(main, judge_argv("--variants", "A")) == 0
    assert server.calls == 8
    es, tasks = _tasks(tiny_set, workdir, endpoint=server.url)
    pairs = {
        p.question_id: p
        for p in collect(tasks, JudgmentCache(_cache_path(workdir))).pairs[("reference", "A")]
    }
    assert (pairs["g1"].first, pairs["g1"].second, pairs["g1"].orders) == (
        8.5,
        6.5,
        2,
    )  # bias cancels to +0.5
    s = summarize(pairs.values(), es.categories)
    # g2's reference is shown first at 10 already (the bias is capped at 10): (10 + 10) / 2 vs (6 + 5) / 2
    assert s.categories["Generic"] == pytest.approx(100 * (6.5 / 8.5 + 5.5 / 10 + 5.5 / 5.5) / 3)
    # single order (the paper's way) would keep the bias: 6/9 for g1
    _, forward_only = _tasks(tiny_set, workdir, orders=(FORWARD,), endpoint=server.url)
    g1 = [
        p
        for p in collect(forward_only, JudgmentCache(_cache_path(workdir))).pairs[("reference", "A")]
        if p.question_id == "g1"
    ]
    assert (g1[0].first, g1[0].second) == (9, 6)


def test_head_to_head(judge_argv, server, capsys):
    assert run(main, judge_argv("--pair", "A,B")) == 0
    # A vs B: g1 6<8, g2 5<9, g3 5>4, k1 4<8
    assert "A vs B: A wins 1, ties 0, B wins 3 (4 questions)" in capsys.readouterr().out
    assert server.calls == 8


def test_429_then_success_by_the_clients_own_retries(tiny_set, workdir, server, config):
    _, tasks = _tasks(tiny_set, workdir, orders=(FORWARD,))
    server.script("429", "429")
    config.max_retries, config.retries = 2, 0
    result = run_judgments(
        tasks[:1],
        JudgmentCache(_cache_path(workdir)),
        ChatClient(config),
        "gpt-4",
        JudgePrompt.load(),
        progress=False,
    )
    assert result.called == 1 and server.calls == 3
    assert _records(workdir)[0]["scores"] == [8, 6]


@pytest.mark.parametrize("failure", ["429", "500", "503", "hang"])
def test_failures_then_success_by_our_backoff(tiny_set, workdir, server, config, failure):
    _, tasks = _tasks(tiny_set, workdir, orders=(FORWARD,))
    server.script(failure, failure)
    config.timeout = 0.3  # "hang" holds the answer for 1 s
    result = run_judgments(
        tasks[:1],
        JudgmentCache(_cache_path(workdir)),
        ChatClient(config),
        "gpt-4",
        JudgePrompt.load(),
        progress=False,
    )
    assert result.called == 1 and server.calls == 3
    assert [r["scores"] for r in _records(workdir)] == [[8, 6]]


def test_timeout_that_never_ends_is_a_clear_error(tiny_set, workdir, server, config):
    _, tasks = _tasks(tiny_set, workdir, orders=(FORWARD,))
    server.script(then="hang")
    config.timeout, config.retries = 0.2, 1
    with pytest.raises(JudgeUnavailableError, match="timeout after 2 attempts") as e:
        run_judgments(
            tasks[:1],
            JudgmentCache(_cache_path(workdir)),
            ChatClient(config),
            "gpt-4",
            JudgePrompt.load(),
            progress=False,
        )
    assert "run the same command again" in str(e.value)
    assert _records(workdir) == []


def test_rate_limit_outlasting_retries_stops_cleanly_and_resumes(judge_argv, server, workdir, capsys):
    server.script("ok", "ok", "ok", then="429")
    code = run(main, judge_argv("--variants", "A", "--concurrency", "1"))
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert code == 2 and len(errors) == 1 and errors[0].startswith("error: ")
    err = errors[0]
    assert "rate limit (HTTP 429)" in err and "3 new verdicts" in err and "again to continue" in err
    assert len(_records(workdir)) == 3  # everything judged before the stop is saved
    calls_before = server.calls
    server.script(then="ok")  # the limit lifts
    assert run(main, judge_argv("--variants", "A", "--concurrency", "1")) == 0
    assert server.calls - calls_before == 5  # only the 5 not yet judged
    assert len(_records(workdir)) == 8


def test_unparsable_is_reported_never_cached_and_asked_again(judge_argv, server, tiny_set, workdir, capsys):
    server.script("garbage")
    assert run(main, judge_argv("--variants", "A", "--single-order", "--concurrency", "1")) == 1
    captured = capsys.readouterr()
    assert "3/4 questions scored" in captured.out and "unparsable: g1 reference/A forward" in captured.out
    assert "1 answer had no readable scores" in captured.err and "again" in captured.err
    assert all(r["scores"] is not None for r in _records(workdir)) and len(_records(workdir)) == 3
    bad = [json.loads(line) for line in unparsable_path(_cache_path(workdir)).read_text("utf-8").splitlines()]
    assert len(bad) == 1 and bad[0]["raw"] == "Tôi không thể chấm điểm câu trả lời này."
    _, tasks = _tasks(tiny_set, workdir, orders=(FORWARD,), endpoint=server.url)
    collected = collect(tasks, JudgmentCache(_cache_path(workdir)))
    assert len(collected.unparsable) == 1 and len(collected.pairs[("reference", "A")]) == 3  # not scored as 0
    assert run(main, judge_argv("--variants", "A", "--single-order")) == 0
    assert server.calls == 5  # a plain rerun asks again: an unreadable answer is no verdict
    assert "4/4 questions scored" in capsys.readouterr().out
    assert run(main, judge_argv("--variants", "A", "--single-order", "--retry-unparsable")) == 0
    assert server.calls == 5  # the old flag is still accepted; nothing is left to ask


def test_empty_answer_is_unparsable_not_a_verdict(tiny_set, workdir, server, config):
    _, tasks = _tasks(tiny_set, workdir, orders=(FORWARD,), endpoint=server.url)
    cache = JudgmentCache(_cache_path(workdir))

    class Empty(ChatClient):
        def complete(self, *a, **k):
            return Completion("   ")

    result = run_judgments(tasks[:1], cache, Empty(config), "gpt-4", JudgePrompt.load(), progress=False)
    assert result.called == 1 and len(result.unparsable) == 1
    fresh = JudgmentCache(_cache_path(workdir))
    assert _records(workdir) == [] and len(fresh) == 0 and pending(tasks[:1], fresh) == tasks[:1]
    assert fresh.unparsable(tasks[0].key)["raw"] == "   "
    # the next run asks again, and a readable answer then becomes the verdict
    again = run_judgments(tasks[:1], fresh, ChatClient(config), "gpt-4", JudgePrompt.load(), progress=False)
    assert again.called == 1 and [r["scores"] for r in _records(workdir)] == [[8, 6]]


def test_bad_request_is_reported_and_the_rest_go_on(judge_argv, server, workdir, capsys):
    server.script("400")
    assert run(main, judge_argv("--variants", "A", "--single-order", "--concurrency", "1")) == 1
    captured = capsys.readouterr()
    assert "failed: g1" in captured.err and "HTTP 400" in captured.err
    assert "1 request failed" in captured.err
    assert len(_records(workdir)) == 3
    assert run(main, judge_argv("--variants", "A", "--single-order")) == 0
    assert len(_records(workdir)) == 4 and server.calls == 5


def test_max_calls_stops_and_a_rerun_finishes_without_recalling(judge_argv, server, workdir, capsys):
    assert run(main, judge_argv("--variants", "A,B", "--max-calls", "5")) == 0
    assert server.calls == 5 and "11 left: run again to continue" in capsys.readouterr().out
    done = {r["key"] for r in _records(workdir)}
    assert run(main, judge_argv("--variants", "A,B")) == 0
    assert server.calls == 16
    keys = [r["key"] for r in _records(workdir)]
    assert len(keys) == len(set(keys)) == 16 and done <= set(keys)


def test_a_killed_process_resumes(judge_argv, server, workdir, key):
    server.behaviour.latency = 0.15
    env = {**os.environ, "OPENAI_API_KEY": key, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "eval.judge", *judge_argv("--variants", "A,B", "--concurrency", "1")]
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while len(_records(workdir)) < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    saved = len(_records(workdir))
    assert 3 <= saved < 16
    before = server.calls
    server.behaviour.latency = 0.0
    assert run(main, judge_argv("--variants", "A,B")) == 0
    assert server.calls - before == 16 - saved  # none of the saved verdicts asked again
    assert len(_records(workdir)) == 16


def test_concurrency_is_bounded(tiny_set, workdir, server, config):
    server.behaviour.latency = 0.05
    _, tasks = _tasks(tiny_set, workdir, variants=("A", "B"))
    result = run_judgments(
        tasks,
        JudgmentCache(_cache_path(workdir)),
        ChatClient(config),
        "gpt-4",
        JudgePrompt.load(),
        concurrency=3,
        progress=False,
    )
    assert result.called == 16 and server.max_active == 3


def test_key_never_written_or_shown(judge_argv, server, workdir, config, key, capsys):
    assert run(main, judge_argv("--variants", "A")) == 0
    server.script("401")
    assert run(main, judge_argv("--variants", "B")) == 2  # the server's 401 message echoes the key
    captured = capsys.readouterr()
    assert "HTTP 401" in captured.err and "***" in captured.err
    assert key not in captured.err + captured.out and key[-8:] not in captured.err
    assert key not in _cache_path(workdir).read_text(encoding="utf-8")
    assert server.requests[0]["authorization"] == f"Bearer {key}"  # it was sent, only to the endpoint
    assert key not in repr(config) + repr(ChatClient(config))


def test_missing_key_is_one_line_before_any_work(judge_argv, server, workdir, monkeypatch, capsys):
    monkeypatch.delenv("OPENAI_API_KEY")
    assert run(main, judge_argv("--variants", "A")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "OPENAI_API_KEY is not set" in err
    assert server.calls == 0 and not _cache_path(workdir).exists()


def test_dry_run_estimates_cost_without_key_or_calls(judge_argv, server, workdir, monkeypatch, capsys):
    monkeypatch.delenv("OPENAI_API_KEY")
    assert run(main, judge_argv("--variants", "A,B", "--dry-run")) == 0
    out = capsys.readouterr().out
    assert "16 calls to gpt-4" in out and "$" in out and "dry run: no calls made" in out
    assert run(main, judge_argv("--variants", "A", "--dry-run", "--judge-model", "my-judge")) == 0
    assert "pass --price" in capsys.readouterr().out
    assert (
        run(main, judge_argv("--variants", "A", "--dry-run", "--judge-model", "my-judge", "--price", "1,2"))
        == 0
    )
    assert "at $1/$2 per 1M tokens" in capsys.readouterr().out
    assert server.calls == 0 and not _cache_path(workdir).exists()


def test_cache_key_changes_with_answers_and_prompt(tiny_set, workdir):
    _, tasks = _tasks(tiny_set, workdir, orders=(FORWARD, SWAPPED))
    assert len({t.key for t in tasks}) == len(tasks)
    es = load_eval_set(tiny_set)
    answers = {v: load_answers(workdir, es, v) for v in ("reference", "A")}
    other, _ = build_tasks(es, answers, [("reference", "A")], (FORWARD,), "gpt-4", "pair-v2-changed")
    assert not {t.key for t in other} & {t.key for t in tasks}
    cache = JudgmentCache(_cache_path(workdir))
    assert len(pending(tasks + tasks, cache)) == len(tasks)


def test_argument_errors(judge_argv, capsys):
    assert run(main, judge_argv()) == 2
    assert run(main, judge_argv("--variants", "A", "--pair", "A,B")) == 2
    assert run(main, judge_argv("--pair", "A")) == 2
    assert run(main, judge_argv("--variantz", "A")) == 2
    assert run(main, judge_argv("--variants", "Nobody")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5 and all(line.startswith("error: ") for line in err)
    assert "unknown arguments: --variantz A" in err[3]
    assert "python -m eval.answers --variants Nobody" in err[-1]
