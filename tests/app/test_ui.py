"""The tabs' functions without a browser: what each tab computes, on the tiny models (seconds)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import gradio as gr
import pytest

from testkit.openai_server import Behaviour, FakeOpenAIServer
from ui.chat import history_rule, pairs
from ui.common import (
    Cancellations,
    coalesced,
    default_pair,
    prompt_problem,
    settings_problems,
    shorten,
    unavailable_reason,
    variant_choices,
)
from ui.compare import pair_problem
from ui.datasets import ALL, UPLOADED, DatasetBrowser, errors_markdown, facet_choices, select
from ui.judge import JudgeRunner, first_questions
from ui.train import adapter_variant, log_tail, read_loss, register_trained, train_command
from vichat.errors import SettingsError
from vichat.generation import GenerationSettings
from vichat.prompts import history_instruction
from vichat.registry import Variant

KEY = "sk-test-" + "K3Y" * 8


# ------------------------------------------------------------------------------------------------ chat


def test_the_stated_multi_turn_rule_is_what_history_instruction_does():
    rule = history_rule()
    assert "2,000 characters" in rule and "Cuộc trò chuyện trước đó:" in rule and "Câu hỏi hiện tại:" in rule
    history = [("Thủ đô của Việt Nam là gì?", "Hà Nội.")]
    folded = history_instruction(history, "Còn thành phố lớn nhất?")
    assert folded.startswith("Cuộc trò chuyện trước đó:\nNgười dùng: Thủ đô")
    assert folded.endswith("Câu hỏi hiện tại: Còn thành phố lớn nhất?")
    old = [("a" * 1990, "b"), ("c", "d")]  # the oldest turn no longer fits: dropped, the newest kept
    folded = history_instruction(old, "e")
    assert "a" * 1990 not in folded and "Người dùng: c" in folded
    assert history_instruction([], "chỉ một câu") == "chỉ một câu"


def test_pairs_reads_gradio_6_message_content_parts():
    history = [
        {"role": "user", "content": [{"type": "text", "text": "Xin chào"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Chào bạn"}]},
        {"role": "user", "content": "Bạn khỏe không?"},
        {"role": "assistant", "content": "Khỏe."},
    ]
    assert pairs(history) == [("Xin chào", "Chào bạn"), ("Bạn khỏe không?", "Khỏe.")]


def test_inputs_are_checked_before_the_model(tiny_registry):
    assert "empty" in prompt_problem("   ")
    assert "16,000" in prompt_problem("x" * 20_000)
    assert prompt_problem("Xin chào") is None
    problems = settings_problems(5000, 3.0, 20, 1.2, -1)
    assert "max_new_tokens" in problems[0] and "temperature" in problems[1] and "seed" in problems[4]
    assert problems[2] is None and problems[3] is None
    assert "unknown variant" in unavailable_reason(tiny_registry, "nope")
    assert unavailable_reason(tiny_registry, "bloom-chat") is None
    assert pair_problem("bloom-base", "bloom-base") and pair_problem("bloom-base", "bloom-chat") is None


def test_unavailable_variants_stay_listed_with_the_reason(tiny_registry):
    tiny_registry.add_variant(Variant("bloom-missing", "bloom", adapter="/nonexistent/adapter"))
    labels = dict((value, label) for label, value in variant_choices(tiny_registry))
    assert labels["bloom-chat"] == "bloom-chat"
    assert labels["bloom-missing"].startswith("bloom-missing (unavailable: adapter folder")
    assert shorten("one two three four", 12) == "one two…"


def test_default_pair_is_a_base_and_its_tuned_sibling(tiny_registry):
    assert default_pair(tiny_registry) == ("bloom-base", "bloom-chat")


def test_closing_a_tab_cancels_and_forgets_its_events():
    c = Cancellations()
    mine = [c.new("s1:chat"), c.new("s1:compare:a"), c.new("s1:compare:b")]
    other = c.new("s2:chat")
    c.cancel("s1:compare")
    assert [e.is_set() for e in mine] == [False, True, True]
    c.close_session("s1")
    assert all(e.is_set() for e in mine) and not other.is_set() and len(c) == 1


# -------------------------------------------------------------------------------------------- datasets


def test_a_malformed_upload_lists_each_bad_line_and_keeps_the_good_rows(tmp_path, tiny_registry):
    upload = tmp_path / "mine.jsonl"
    upload.write_text(
        '{"prompt": "Xin chào", "response": "Chào bạn!", "source": "a"}\n'
        "not json\n"
        '{"prompt": "Hỏi"}\n'
        "\n"
        '{"prompt": "Một hai", "response": "Ba bốn năm", "source": "b"}\n',
        encoding="utf-8",
    )
    browser = DatasetBrowser(tiny_registry, tmp_path)
    table, page, where, errors, stats, _, facets = browser.show(
        UPLOADED, str(upload), "", ALL, 0, 0, "whitespace", 10, 1
    )
    assert "2 bad lines" in errors and "line 2: malformed JSON" in errors
    assert 'line 3: missing field "response"' in errors
    assert list(table["prompt"]) == ["Xin chào", "Một hai"] and where.startswith("2 of 2 records")
    assert "mine.jsonl: 2 samples" in stats and "total tokens: 9" in stats
    assert facets["choices"] == [ALL, "source: a", "source: b"]
    table, *_ = browser.show(UPLOADED, str(upload), "ba bốn", ALL, 0, 0, "whitespace", 10, 1)
    assert list(table["prompt"]) == ["Một hai"]


def test_browse_filters_and_pages_our_sample_data(tmp_path, tiny_registry):
    browser = DatasetBrowser(tiny_registry, tmp_path)
    name = "assets/data/general_a.jsonl"
    assert name in browser.files
    from vichat.data import read_jsonl

    records = read_jsonl(name).records  # counted here: the sample data may grow or shrink
    knowledge = sum(r.get("category") == "knowledge" for r in records)
    pages = -(-knowledge // 10)
    table, page, where, errors, *_ = browser.show(
        name, None, "", "category: knowledge", 0, 0, "whitespace", 10, 99
    )
    assert knowledge > 10 and errors == "" and page == pages  # clamped to the last page
    assert where == f"{knowledge} of {len(records)} records · page {pages} of {pages}"
    assert set(table["labels"]) == {"category: knowledge"}
    records = [
        {"prompt": "a b", "response": "c", "category": "x"},
        {"prompt": "d", "response": "e", "category": "y"},
    ]
    assert select(records, [3, 2], "", ALL, 3, None) == [0]
    assert select(records, [3, 2], "", "category: y", None, None) == [1]
    assert facet_choices(records) == [ALL, "category: x", "category: y"]
    with pytest.raises(gr.Error):
        browser.show(name, None, "", ALL, -1, 0, "whitespace", 10, 1)


def test_errors_markdown_is_empty_for_a_clean_file(tiny_registry):
    from vichat.data import read_jsonl
    from vichat.paths import ASSETS

    assert errors_markdown(read_jsonl(ASSETS / "data" / "medical_a.jsonl")) == ""


# ----------------------------------------------------------------------------------------------- judge


@pytest.fixture()
def runner(tiny_registry, tmp_path):
    r = JudgeRunner(tiny_registry, tmp_path / "eval")
    for name in ("answer", "score"):
        method = getattr(r, name)
        setattr(r, name, lambda *a, _m=method, **k: _m(*a, progress=lambda *x, **y: None, **k))
    return r


def test_judge_tab_without_a_key_gives_offline_scores(runner, tmp_path):
    status = runner.answer(["bloom-base", "bloom-chat"], "general", 2, False)
    assert "first 2 general questions" in status
    table, chart, bars, files, status = runner.score(
        ["bloom-base", "bloom-chat"], "general", 2, "", "gpt-4", "", False, ""
    )
    assert status.startswith("No API key")
    assert list(table.columns) == ["category", "n", "chrF bloom-base", "chrF bloom-chat"]
    assert table.iloc[-1]["category"] == "Total" and table.iloc[-1]["n"] == "2"
    assert bars["visible"] and not chart["visible"]
    assert any(f.endswith("bloom-chat.jsonl") for f in files)
    assert runner.answer(["bloom-base"], "general", 2, False).endswith("(bloom-base: 0 new).")  # cached


def test_judge_tab_with_a_key_judges_and_never_writes_the_key(runner, tmp_path):
    before = runner.estimate(["bloom-base", "bloom-chat"], "general", 3, "gpt-4", False, "")
    assert before.startswith("Estimate: 12 calls to gpt-4") and "(0 verdicts cached)" in before
    runner.answer(["bloom-chat"], "general", 2, False)
    estimate = runner.estimate(["bloom-chat"], "general", 2, "gpt-4", False, "")
    assert estimate.startswith("Estimate: 4 calls to gpt-4") and "$" in estimate
    with FakeOpenAIServer(Behaviour()) as server:
        table, chart, bars, files, status = runner.score(
            ["bloom-chat"], "general", 2, server.url, "gpt-4", KEY, False, ""
        )
    assert status.startswith("4 calls")
    after = runner.estimate(["bloom-chat"], "general", 2, "gpt-4", False, "", server.url)
    assert after.startswith("Estimate: 0 calls") and "(4 verdicts cached)" in after  # a rerun pays nothing
    elsewhere = runner.estimate(["bloom-chat"], "general", 2, "gpt-4", False, "")  # verdicts are per endpoint
    assert elsewhere.startswith("Estimate: 4 calls")
    assert (
        list(table.columns)[:3] == ["category", "n", "bloom-chat"] and "Bloomz-Chat (paper)" in table.columns
    )
    assert chart["visible"] and chart["value"].endswith(".png") and not bars["visible"]
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and not any(KEY in p.read_bytes().decode("utf-8", "replace") for p in written)
    assert KEY not in repr((table.to_dict(), chart, files, status))


def test_judge_tab_refuses_bad_input(runner):
    with pytest.raises(gr.Error, match=r"questions must be in \[1, 80\]"):
        first_questions("general", 0)
    with pytest.raises(gr.Error, match="at least one variant"):
        runner.answer([], "general", 1, False)
    assert runner.estimate(["nope"], "general", 1, "gpt-4", False, "").startswith("estimate unavailable")


# ----------------------------------------------------------------------------------------------- train


def test_the_train_tab_runs_the_cli_with_a_step_cap(tmp_path):
    cmd = train_command(
        Path("train/configs/gemma-chat.yaml"), 5, tmp_path / "run", "Mine", "--max_length 128"
    )
    assert cmd[1:5] == ["-m", "train.lora", "--config", "train/configs/gemma-chat.yaml"]
    assert cmd[cmd.index("--max_steps") + 1] == "5" and cmd[-2:] == ["--max_length", "128"]
    assert cmd[cmd.index("--output_dir") + 1] == str(tmp_path / "run")


def test_extra_arguments_may_set_sizes_and_rates_but_never_paths(tmp_path):
    from ui.train import extra_arguments
    from vichat.errors import ViChatError

    assert extra_arguments("--max_length 128 --learning_rate 1e-4") == [
        "--max_length", "128", "--learning_rate", "1e-4",
    ]  # fmt: skip
    for bad in (
        "--output_dir /etc",
        "--train_files /etc/passwd",
        "--push_to_hub true",
        "--max_length",
        "x 1",
    ):
        with pytest.raises(ViChatError, match="extra arguments"):
            extra_arguments(bad)


def test_loss_log_and_log_tail_are_read_while_written(tmp_path):
    loss = tmp_path / "loss.jsonl"
    loss.write_text(
        '{"step": 1, "loss": 2.5}\n{"step": 1, "eval_loss": 2.7}\n{"step": 2, "lo', encoding="utf-8"
    )
    assert read_loss(loss) == [{"step": 1, "loss": 2.5}, {"step": 1, "eval_loss": 2.7}]
    log = tmp_path / "train.log"
    log.write_text("loading\n  0%|   | 0/5\r 40%|## | 2/5\r 60%|### | 3/5\n", encoding="utf-8")
    assert log_tail(log) == "loading\n 60%|### | 3/5"


def test_a_finished_run_registers_its_adapter(tmp_path, tiny_registry, tiny_models):
    run = tmp_path / "app-train" / "Mine"
    adapter = run / "adapter"
    adapter.mkdir(parents=True)
    for f in ("adapter_model.safetensors", "adapter_config.json"):
        (adapter / f).write_bytes((Path(tiny_models["bloom-a"]) / f).read_bytes())
    (adapter / "vichat.json").write_text(
        json.dumps({"base": "bloom", "template": "doctor", "variant": "Mine"})
    )
    (tmp_path / "app-train" / "broken").mkdir()
    v = adapter_variant(run, "fallback")
    assert (v.name, v.base, v.template, v.adapter) == ("Mine", "bloom", "doctor", str(adapter))
    assert register_trained(tiny_registry, tmp_path / "app-train") == ["Mine"]
    assert unavailable_reason(tiny_registry, "Mine") is None
    assert isinstance(tiny_registry.generate("Mine", "Xin chào", GenerationSettings(max_new_tokens=4)), str)
    assert register_trained(tiny_registry, tmp_path / "app-train") == []  # once


def test_cancellations_are_thread_safe():
    c = Cancellations()
    threads = [threading.Thread(target=lambda i=i: c.new(f"s{i}:chat")) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(50):
        c.close_session(f"s{i}")
    assert len(c) == 0


def test_streamed_pieces_reach_the_page_at_most_once_per_interval_and_none_is_lost():
    times = iter([0.0, 0.01, 0.02, 0.06, 0.07, 0.2, 0.21])
    pieces = ["Xin", " chào", " bạn", ",", " tôi", " là", " ViChat"]

    batches = list(coalesced(iter(pieces), every_s=0.05, clock=lambda: next(times)))

    # the first piece at once; then one update per 0.05 s of the clock; the tail flushed at the end
    assert batches == [["Xin"], [" chào", " bạn", ","], [" tôi", " là"], [" ViChat"]]
    assert "".join(p for b in batches for p in b) == "".join(pieces)
    assert list(coalesced(iter([]))) == []


def test_the_stream_interval_comes_from_the_environment_and_bad_values_are_named(monkeypatch):
    monkeypatch.setenv("VICHAT_STREAM_EVERY_S", "0")
    assert list(coalesced(iter("abc"))) == [["a"], ["b"], ["c"]]  # 0: every piece on its own
    monkeypatch.setenv("VICHAT_STREAM_EVERY_S", "soon")
    with pytest.raises(SettingsError, match="VICHAT_STREAM_EVERY_S must be a number"):
        list(coalesced(iter("abc")))
