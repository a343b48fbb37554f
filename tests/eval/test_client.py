"""The chat client's output limit: ``max_completion_tokens`` for models that refuse ``max_tokens``.

Against the stand-in server on 127.0.0.1 answering as OpenAI does for its o-series and GPT-5 models (HTTP 400,
``unsupported_parameter``), and as a server that knows only ``max_tokens`` (vLLM, llama.cpp) does.
"""

import pytest

from eval.client import ChatClient, ClientConfig, JudgeRequestError, needs_max_completion_tokens
from eval.judge import main
from vichat.cli import run

QUESTION = [{"role": "user", "content": "Xin chào?"}]


def _limits(server) -> list[tuple[str, ...]]:
    """Which limit names each request carried."""
    names = ("max_tokens", "max_completion_tokens")
    return [tuple(n for n in names if n in r["body"]) for r in server.requests]


@pytest.mark.parametrize(
    "model",
    ["o1", "o1-mini", "o3", "o3-pro", "o4-mini", "gpt-5", "gpt-5-mini", "gpt-5.1", "openai/o3", "GPT-5"],
)
def test_families_that_refuse_max_tokens_are_known_by_name(model):
    assert needs_max_completion_tokens(model)


@pytest.mark.parametrize(
    "model", ["gpt-4", "gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-3.5-turbo", "bloomz-chat", "omni", "o", ""]
)
def test_other_models_keep_max_tokens(model):
    assert not needs_max_completion_tokens(model)


def test_known_family_is_asked_with_max_completion_tokens_first(server, config):
    server.behaviour.refuse_max_tokens = True
    reply = ChatClient(config).complete("o3-mini", QUESTION, max_tokens=64)
    assert reply.text.startswith("Trả lời mẫu")
    assert server.calls == 1 and _limits(server) == [("max_completion_tokens",)]
    assert server.requests[0]["body"]["max_completion_tokens"] == 64


def test_refusal_switches_the_model_once_and_is_remembered(server, key):
    server.behaviour.refuse_max_tokens = {"judge-next"}  # a name no rule knows
    config = ClientConfig(base_url=server.url, api_key=key, timeout=2.0, max_retries=0, retries=0)
    client = ChatClient(config)  # no retries at all: the resend is not one
    assert client.complete("judge-next", QUESTION, max_tokens=32).text
    assert _limits(server) == [("max_tokens",), ("max_completion_tokens",)]
    assert server.requests[1]["body"]["max_completion_tokens"] == 32
    assert client.limit_name("judge-next") == "max_completion_tokens"
    client.complete("judge-next", QUESTION, max_tokens=32)
    assert server.calls == 3 and _limits(server)[2] == ("max_completion_tokens",)  # remembered
    client.complete("gpt-4o", QUESTION, max_tokens=32)  # per model: another one is not switched
    assert _limits(server)[3] == ("max_tokens",)
    assert ChatClient(config).limit_name("judge-next") == "max_tokens"  # per client


def test_no_limit_sends_neither_name(server, config):
    server.behaviour.refuse_max_tokens = True
    ChatClient(config).complete("judge-next", QUESTION)
    assert server.calls == 1 and _limits(server) == [()]


def test_server_that_knows_only_max_tokens_always_gets_it(server, config):
    server.behaviour.only_max_tokens = True  # vLLM / llama.cpp style
    client = ChatClient(config)
    for _ in range(2):
        assert client.complete("bloomz-chat", QUESTION, max_tokens=16).text
    assert _limits(server) == [("max_tokens",), ("max_tokens",)]


def test_other_bad_requests_never_switch_the_name(server, config):
    server.script("400")  # context length exceeded: a plain 400, naming no parameter
    client = ChatClient(config)
    with pytest.raises(JudgeRequestError, match="HTTP 400"):
        client.complete("bloomz-chat", QUESTION, max_tokens=16)
    assert server.calls == 1
    client.complete("bloomz-chat", QUESTION, max_tokens=16)
    assert _limits(server) == [("max_tokens",), ("max_tokens",)]
    assert client.limit_name("bloomz-chat") == "max_tokens"


def test_a_server_refusing_both_names_is_one_clear_error_not_a_loop(server, config):
    server.behaviour.refuse_max_tokens = server.behaviour.only_max_tokens = True
    with pytest.raises(JudgeRequestError, match="HTTP 400.*max_completion_tokens"):
        ChatClient(config).complete("judge-next", QUESTION, max_tokens=16)
    assert server.calls == 2


def test_judge_runs_against_a_model_that_refuses_max_tokens(judge_argv, server, capsys):
    server.behaviour.refuse_max_tokens = True
    assert run(main, judge_argv("--variants", "A", "--single-order", "--concurrency", "1")) == 0
    assert "4/4 questions scored" in capsys.readouterr().out
    assert server.calls == 5  # one refusal, then every verdict asked with max_completion_tokens
    assert _limits(server)[1:] == [("max_completion_tokens",)] * 4
    assert server.requests[1]["body"]["max_completion_tokens"] == 1024
