"""Every UI handler over the bad-input corpus, called directly (no browser), on the tiny models.

Each case must end in a message: a ``gr.Error`` whose text says what is wrong (never another exception, which
the page would show as "Error" with a traceback in the log), or, for an upload, the bad lines listed. No input
file may be lost or changed. Categories: uploads (tests/reliability/corpus.py BAD_JSONL), bad numbers
(BAD_NUMBERS) in every numeric setting of every tab, empty / huge / non-text prompts and histories, and the
public mode's refusals (an arbitrary judge URL, a tokenizer path, training without the owner's secret, an
eval-set path, the rate limit).
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pytest
import yaml

from tests.reliability.corpus import BAD_JSONL, BAD_NUMBERS, write_corpus
from ui.chat import ChatHandlers
from ui.common import Cancellations
from ui.compare import CompareHandlers
from ui.datasets import ALL, UPLOADED, DatasetBrowser
from ui.judge import JudgeRunner
from ui.public import Guard, Policy
from ui.train import TrainHandlers, TrainJobs
from vichat.paths import ASSETS, REPO_ROOT
from vichat.registry import Registry

KEY = "sk-test-" + "K3Y" * 8
GOOD = {"max_new_tokens": 4, "temperature": 0.0, "top_k": 20, "repetition_penalty": 1.2, "seed": 1}
FIELDS = list(GOOD)
ALWAYS_BAD = ["nan", "NaN", "inf", "-inf", "-1", "-5", "1e309", "abc"]  # "0" and "" are fine for some
assert set(ALWAYS_BAD) <= set(BAD_NUMBERS)
PRESET = REPO_ROOT / "train" / "configs" / "gemma-chat.yaml"
SAMPLE = "assets/data/general_a.jsonl"


@pytest.fixture(scope="module")
def registry(tiny_models, tmp_path_factory) -> Registry:
    folder = tmp_path_factory.mktemp("ui-reliability")
    data = {
        "bases": {"bloom": {"source": str(tiny_models["bloom"])}},
        "variants": [
            {"name": "bloom-base", "base": "bloom", "template": "chat"},
            {
                "name": "bloom-chat",
                "base": "bloom",
                "template": "chat",
                "adapter": str(tiny_models["bloom-a"]),
            },
        ],
    }
    path = folder / "models.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return Registry.from_yaml(path, device="cpu", progress=lambda m: None)


def public_guard(**env) -> Guard:
    return Guard(Policy.from_env(environ={"SPACE_ID": "someone/vichat", **env}))


def req(session: str = "s") -> gr.Request:
    return gr.Request(session_hash=session)


def expect_message(call, *contains: str) -> str:
    """Run ``call``; it must raise gr.Error (nothing else) with a clear text holding each of ``contains``."""
    with pytest.raises(gr.Error) as caught:
        result = call()
        if hasattr(result, "__next__"):  # a streaming handler: the refusal comes with the first step
            next(result)
    text = caught.value.message
    assert len(text) > 15 and "Traceback" not in text, text
    for word in contains:
        assert word.lower() in text.lower(), text
    return text


def settings_with(field: str, value) -> list:
    return [value if f == field else GOOD[f] for f in FIELDS]


# --------------------------------------------------------------------------------------------- uploads


@pytest.mark.parametrize("mode", ["local", "public"])
@pytest.mark.parametrize("name", list(BAD_JSONL))
def test_a_bad_upload_lists_its_bad_lines_and_changes_nothing(registry, tmp_path, unchanged, name, mode):
    corpus = write_corpus(tmp_path / "corpus", [name])
    guard = public_guard() if mode == "public" else Guard()
    browser = DatasetBrowser(registry, tmp_path / "runs", guard)
    with unchanged(tmp_path / "corpus"):
        out = browser.show(UPLOADED, str(corpus[name]), "", ALL, 0, 0, "whitespace", 10, 1, req())
        guard.close_session("s")  # the corpus is not in Gradio's upload cache: never deleted
    table, page, where, errors, stats, _, _ = out
    assert errors.startswith(f"**{name}.jsonl: ") and ("bad line" in errors or "no records" in errors), errors
    assert "Traceback" not in errors and where.endswith("page 1 of 1")


def test_every_upload_mistake_names_the_line(registry, tmp_path):
    paths = write_corpus(tmp_path / "corpus")
    browser = DatasetBrowser(registry, tmp_path / "runs")
    for name, path in paths.items():
        errors = browser.show(UPLOADED, str(path), "", ALL, 0, 0, "whitespace", 10, 1)[3]
        if name not in ("empty_file", "blank_lines"):
            assert "- line " in errors, (name, errors)


def test_a_missing_or_odd_upload_value_gets_a_message(registry, tmp_path):
    browser = DatasetBrowser(registry, tmp_path)
    for value in (None, "", 5, ["a"], {"path": "/etc/passwd"}):
        expect_message(
            lambda v=value: browser.show(UPLOADED, v, "", ALL, 0, 0, "whitespace", 10, 1), "upload"
        )
    expect_message(lambda: browser.show(UPLOADED, str(tmp_path / "gone.jsonl"), "", ALL, 0, 0, "whitespace", 10, 1),
                   "upload it again")  # fmt: skip
    for name in ("../../etc/passwd", "/etc/passwd", None, 3):
        expect_message(
            lambda n=name: browser.show(n, None, "", ALL, 0, 0, "whitespace", 10, 1), "no such dataset"
        )


# ------------------------------------------------------------------------------------------ bad numbers


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("bad", ALWAYS_BAD)
def test_chat_and_compare_refuse_a_bad_setting_by_name(registry, field, bad):
    chat = ChatHandlers(registry, Cancellations())
    compare = CompareHandlers(registry, Cancellations())
    values = settings_with(field, bad)
    expect_message(lambda: chat.respond("Xin chào", [], "bloom-chat", *values, req()), field)
    expect_message(lambda: compare.compare("Xin chào", "bloom-base", "bloom-chat", *values, req()), field)
    checks = chat.validate("Xin chào", [], "bloom-chat", *values)
    assert [c["is_valid"] for c in checks] == [True, True, True, *(f != field for f in FIELDS)]
    assert field in checks[3 + FIELDS.index(field)]["message"]


@pytest.mark.parametrize("bad", BAD_NUMBERS)
def test_the_datasets_numbers_are_checked(registry, tmp_path, bad):
    browser = DatasetBrowser(registry, tmp_path)
    fields = {"min tokens": 4, "max tokens": 5, "rows per page": 7, "page": 8}
    for label, index in fields.items():
        args = [SAMPLE, None, "", ALL, 0, 0, "whitespace", 10, 1]
        args[index] = bad
        if bad in ALWAYS_BAD:
            expect_message(lambda a=args: browser.show(*a), label)
        else:  # "0" and "": no bound, the first page, the default size, or a message
            try:
                assert " records · page " in browser.show(*args)[2]
            except gr.Error as e:
                assert label in e.message, e.message
        for handler in (browser.previous, browser.next):
            if index == 8 and bad in ALWAYS_BAD:
                expect_message(lambda a=args, h=handler: h(*a), "page")


@pytest.mark.parametrize("bad", BAD_NUMBERS)
def test_the_judge_numbers_are_checked_before_any_work(registry, tmp_path, bad, unchanged):
    runner = JudgeRunner(registry, tmp_path / "eval")
    expect_message(
        lambda: runner.check_run(["bloom-chat"], "general", bad, "", "gpt-4", KEY, False, ""), "questions"
    )
    expect_message(lambda: runner.answer(["bloom-chat"], "general", bad, False, progress=lambda *a, **k: None),
                   "questions")  # fmt: skip
    assert runner.estimate(["bloom-chat"], "general", bad, "gpt-4", False, "").startswith(
        "estimate unavailable"
    )
    price = f"{bad},1"
    if bad not in ("0", ""):  # "0,1" is a price; ",1" is malformed either way
        expect_message(
            lambda: runner.check_run(["bloom-chat"], "general", 1, "", "gpt-4", KEY, False, price), "price"
        )
        assert "price" in runner.estimate(["bloom-chat"], "general", 1, "gpt-4", False, price)
    assert not (tmp_path / "eval" / "answers").exists()  # nothing answered, nothing judged


@pytest.mark.parametrize("bad", BAD_NUMBERS)
def test_the_train_numbers_are_checked_before_a_run_starts(registry, tmp_path, bad, monkeypatch, unchanged):
    def no_start(*a, **k):
        raise AssertionError("a training run started on bad input")

    monkeypatch.setattr(TrainJobs, "start", no_start)
    handlers = TrainHandlers(registry, tmp_path / "app-train", {"gemma-chat.yaml": PRESET})
    with unchanged(PRESET):
        expect_message(lambda: handlers.start("gemma-chat.yaml", bad, "Mine", "", None, req()), "max steps")
        for flag in (
            "learning_rate",
            "per_device_train_batch_size",
            "max_length",
            "total_batch_size",
            "num_train_epochs",
        ):
            extra = f"--{flag} {bad}"
            expect_message(lambda e=extra: handlers.start("gemma-chat.yaml", 5, "Mine", e, None, req()),
                           "--" if bad == "" else flag)  # fmt: skip
    assert not (tmp_path / "app-train").exists()


def test_the_train_tab_refuses_other_bad_fields(registry, tmp_path, monkeypatch):
    monkeypatch.setattr(TrainJobs, "start", lambda *a, **k: pytest.fail("started"))
    handlers = TrainHandlers(registry, tmp_path / "app-train", {"gemma-chat.yaml": PRESET})
    start = handlers.start
    expect_message(lambda: start("nope.yaml", 5, "Mine", "", None, req()), "preset")
    expect_message(lambda: start(None, 5, "Mine", "", None, req()), "preset")
    for name in ("", "../x", "a/b", "x" * 65, None, 5):
        expect_message(lambda n=name: start("gemma-chat.yaml", 5, n, "", None, req()), "variant name")
    expect_message(lambda: start("gemma-chat.yaml", 5, "bloom-chat", "", None, req()), "exists already")
    for extra in (
        "--output_dir /etc",
        "--train_files /etc/passwd",
        "--lr_scheduler_type nope",
        "'unclosed",
        5,
    ):
        expect_message(lambda e=extra: start("gemma-chat.yaml", 5, "Mine", e, None, req()), "extra arguments"
                       if extra != "--lr_scheduler_type nope" else "lr_scheduler_type")  # fmt: skip


# --------------------------------------------------------------------------------------------- prompts


PROMPTS = {
    "": "empty",
    "   \n\t": "empty",
    None: "empty",
    5: "empty",
    "x" * 20_000: "16,000",
    "chữ " * 5000: "limit",
}


@pytest.mark.parametrize("prompt", list(PROMPTS), ids=["empty", "blank", "none", "number", "huge", "huge-vi"])
def test_empty_and_huge_prompts_get_a_message(registry, prompt):
    chat = ChatHandlers(registry, Cancellations())
    compare = CompareHandlers(registry, Cancellations())
    values = list(GOOD.values())
    expect_message(lambda: chat.respond(prompt, [], "bloom-chat", *values, req()), PROMPTS[prompt])
    expect_message(
        lambda: compare.compare(prompt, "bloom-base", "bloom-chat", *values, req()), PROMPTS[prompt]
    )
    assert chat.validate(prompt, [], "bloom-chat", *values)[0]["is_valid"] is False


def test_a_malformed_history_or_variant_gets_a_message(registry):
    chat = ChatHandlers(registry, Cancellations())
    values = list(GOOD.values())
    for history in (
        "text",
        [1, 2],
        [{"role": "hacker", "content": "x"}],
        [{"content": "x"}],
        {"role": "user"},
    ):
        expect_message(lambda h=history: chat.respond("Xin chào", h, "bloom-chat", *values, req()), "history")
    for variant in ("nope", None, "", 5):
        expect_message(lambda v=variant: chat.respond("Xin chào", [], v, *values, req()), "variant")
    compare = CompareHandlers(registry, Cancellations())
    expect_message(
        lambda: compare.compare("Xin chào", "bloom-chat", "bloom-chat", *values, req()), "different"
    )


def test_a_long_history_is_folded_not_refused(registry):
    chat = ChatHandlers(registry, Cancellations())
    history = [{"role": r, "content": "lịch sử " * 2000} for r in ("user", "assistant")] * 20
    steps = list(chat.respond("Xin chào", history, "bloom-chat", *GOOD.values(), req()))
    assert "tokens/s" in steps[-1][2] and len(steps[-1][3]) < 20_000


# ---------------------------------------------------------------------------------- public refusals


URLS = ["http://127.0.0.1:1/v1", "http://169.254.169.254/latest/meta-data", "http://localhost:8080",
        "file:///etc/passwd", "gopher://127.0.0.1:25", "https://api.openai.com.evil.example/v1", "not a url"]  # fmt: skip


@pytest.mark.parametrize("url", URLS)
def test_public_judge_refuses_any_other_endpoint(registry, tmp_path, url):
    runner = JudgeRunner(registry, tmp_path / "eval", public_guard())
    args = (["bloom-chat"], "general", 1, url, "gpt-4", KEY, False, "")
    expect_message(lambda: runner.check_run(*args), "fixed on this public app", "https://api.openai.com/v1")
    expect_message(lambda: runner.score(*args, progress=lambda *a, **k: None), "fixed on this public app")
    assert "fixed on this public app" in runner.estimate(
        ["bloom-chat"], "general", 1, "gpt-4", False, "", url
    )


@pytest.mark.parametrize("mode", ["local", "public"])
def test_an_eval_set_path_is_refused(registry, tmp_path, mode):
    runner = JudgeRunner(registry, tmp_path / "eval", public_guard() if mode == "public" else None)
    for name in ("/etc/passwd", "../assets/eval/general.jsonl", str(ASSETS / "eval" / "general.jsonl"), None):
        expect_message(
            lambda n=name: runner.check_run(["bloom-chat"], n, 1, "", "gpt-4", "", False, ""), "eval set"
        )


TOKENIZER_PROBES = ["/etc", "/etc/passwd", "/root/.cache/huggingface", "../..", "~/.ssh", "/nonexistent", "gpt2",
                    "bigscience/bloomz-7b1-mt", "tokenizer of nope", "x" * 5000]  # fmt: skip


@pytest.mark.parametrize("probe", TOKENIZER_PROBES, ids=range(len(TOKENIZER_PROBES)))
def test_public_tokenizer_field_takes_only_the_bases(registry, tmp_path, probe):
    browser = DatasetBrowser(registry, tmp_path, public_guard())
    text = expect_message(lambda: browser.show(SAMPLE, None, "", ALL, 0, 0, probe, 10, 1))
    assert "whitespace" in text or "not a base" in text
    assert not any(word in text for word in ("No such file", "Permission", "exists", "OSError"))


@pytest.mark.parametrize("probe", TOKENIZER_PROBES[:6], ids=range(6))
def test_local_tokenizer_paths_are_checked_without_probing(registry, tmp_path, probe):
    browser = DatasetBrowser(registry, tmp_path)
    expect_message(lambda: browser.show(SAMPLE, None, "", ALL, 0, 0, probe, 10, 1), "not a tokenizer folder")


@pytest.mark.parametrize("secret", [None, "", "wrong", "OWNER", " owner-x"])
def test_public_training_needs_the_owner_secret(registry, tmp_path, secret, monkeypatch):
    monkeypatch.setattr(TrainJobs, "start", lambda *a, **k: pytest.fail("started"))
    off = TrainHandlers(registry, tmp_path / "t", {"gemma-chat.yaml": PRESET}, guard=public_guard())
    expect_message(lambda: off.start("gemma-chat.yaml", 5, "Mine", "", secret, req()), "training is off")
    on = TrainHandlers(
        registry, tmp_path / "t", {"gemma-chat.yaml": PRESET}, guard=public_guard(VICHAT_TRAIN_SECRET="owner")
    )
    expect_message(lambda: on.start("gemma-chat.yaml", 5, "Mine", "", secret, req()), "owner's secret")
    assert not (tmp_path / "t").exists()


def test_the_public_rate_limit_is_a_message(registry):
    guard = Guard(Policy(public=True, generations_per_minute=1))
    chat = ChatHandlers(registry, Cancellations(), guard)
    assert list(chat.respond("Xin chào", [], "bloom-chat", *GOOD.values(), req("v")))
    expect_message(lambda: chat.respond("Xin chào", [], "bloom-chat", *GOOD.values(), req("v")), "rate limit",
                   "try again in")  # fmt: skip
    guard.close_session("v")  # a closed session's window goes with it
    assert list(chat.respond("Xin chào", [], "bloom-chat", *GOOD.values(), req("v")))


def test_nothing_under_the_inputs_changed(registry, tmp_path, unchanged):
    """The whole corpus through every upload path at once, with the sample data and presets watched."""
    corpus = write_corpus(tmp_path / "corpus")
    browser = DatasetBrowser(registry, tmp_path)
    with unchanged(tmp_path / "corpus", ASSETS / "data", Path(PRESET)):
        for path in corpus.values():
            for tok in ("whitespace", "tokenizer of bloom"):
                browser.show(UPLOADED, str(path), "chữ", ALL, 0, 0, tok, 50, 1)
