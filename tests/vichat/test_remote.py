"""A variant served by an OpenAI-compatible completions server: a real HTTP server on 127.0.0.1."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from vichat.errors import VariantUnavailableError, ViChatError
from vichat.generation import GenerationSettings, GenerationStats
from vichat.registry import Endpoint, Registry

REPLY = "Hà Nội là thủ đô của Việt Nam.\n### Instruction:\nbỏ phần này"


class CompletionsHandler(BaseHTTPRequestHandler):
    requests: list = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(
            {"path": self.path, "body": body, "auth": self.headers.get("Authorization")}
        )
        if body["model"] == "broken":
            self.send_response(500)
            self.end_headers()
            return
        if body["model"] == "echo-key":  # a server that puts the key it got into its error message
            data = json.dumps({"error": {"message": f"bad key {self.headers.get('Authorization')}"}}).encode()
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        if not body.get("stream"):
            payload = {
                "id": "c1",
                "object": "text_completion",
                "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "text": REPLY, "finish_reason": "stop", "logprobs": None}],
            }
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        words = REPLY.split(" ")
        for i, w in enumerate(words):
            piece = w if i == 0 else " " + w
            chunk = {
                "id": "c1",
                "object": "text_completion",
                "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "text": piece, "finish_reason": None, "logprobs": None}],
            }
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")


@pytest.fixture()
def server():
    CompletionsHandler.requests = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), CompletionsHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


def _registry(tmp_path, url, model="vichat-chat", key_env="VICHAT_TEST_KEY"):
    data = {
        "bases": {},
        "variants": [
            {
                "name": "Remote-Chat",
                "base": "bloomz",
                "backend": "openai",
                "template": "doctor",
                "endpoint": {"base_url": url, "model": model, "api_key_env": key_env},
            }
        ],
    }
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(data))
    return Registry.from_yaml(tmp_path / "m.yaml")


def test_remote_stream_and_batch(server, tmp_path, monkeypatch):
    monkeypatch.setenv("VICHAT_TEST_KEY", "sk-secret-value")
    reg = _registry(tmp_path, server)
    settings = GenerationSettings(max_new_tokens=64, seed=3)
    stats = GenerationStats()
    pieces = list(reg.stream("Remote-Chat", "Tôi bị ho", settings, stats=stats))
    assert len(pieces) > 2
    assert "".join(pieces).strip() == "Hà Nội là thủ đô của Việt Nam."
    assert stats.stopped_by == "stop"
    assert reg.generate_batch("Remote-Chat", ["Tôi bị ho"], settings) == ["Hà Nội là thủ đô của Việt Nam."]
    req = CompletionsHandler.requests[0]
    assert req["path"] == "/v1/completions"
    assert req["body"]["prompt"].startswith("Nếu bạn là bác sĩ") and "Tôi bị ho" in req["body"]["prompt"]
    assert req["body"]["max_tokens"] == 64 and req["body"]["top_k"] == 20
    assert req["body"]["repetition_penalty"] == 1.2 and req["body"]["seed"] == 3
    assert req["auth"] == "Bearer sk-secret-value"


def test_remote_errors_are_clear(server, tmp_path):
    reg = _registry(tmp_path, server, model="broken")
    with pytest.raises(VariantUnavailableError, match="HTTP 500") as e:
        reg.generate("Remote-Chat", "Tôi bị ho")
    assert "sk-" not in str(e.value)
    reg = _registry(tmp_path, "http://127.0.0.1:9/v1")
    with pytest.raises(VariantUnavailableError, match="cannot be reached"):
        reg.generate("Remote-Chat", "Tôi bị ho")


def test_the_key_never_shows_in_errors(server, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("VICHAT_TEST_KEY", "sk-very-secret-value")
    reg = _registry(tmp_path, server, model="echo-key")
    with caplog.at_level("DEBUG"), pytest.raises(VariantUnavailableError, match="HTTP 401") as e:
        reg.generate("Remote-Chat", "Tôi bị ho")
    assert CompletionsHandler.requests[-1]["auth"] == "Bearer sk-very-secret-value"  # the server did get it
    assert "very-secret" not in str(e.value) and "very-secret" not in caplog.text


@pytest.mark.parametrize(
    "name",
    ["PATH", "HOME", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "GITHUB_TOKEN", "DJANGO_SECRET_KEY",
     "DB_PASSWORD_KEY", "VICHAT_TRAIN_SECRET", "lower_api_key", "HF_TOKEN", "BAD-NAME_KEY", ""],
)  # fmt: skip
def test_api_key_env_must_name_an_api_key(server, tmp_path, monkeypatch, name):
    if name:
        monkeypatch.setenv(name, "the-secret-value")
    with pytest.raises(ViChatError, match="api_key_env") as e:
        _registry(tmp_path, server, key_env=name)
    assert "the-secret-value" not in str(e.value) and str(tmp_path / "m.yaml") in str(e.value)
    assert CompletionsHandler.requests == []  # refused when the file is read, before any request


def test_hub_token_goes_only_to_hugging_face_hosts(tmp_path):
    reg = _registry(tmp_path, "https://abc.us-east-1.aws.endpoints.huggingface.cloud/v1", key_env="HF_TOKEN")
    assert reg.variant("Remote-Chat").endpoint.api_key_env == "HF_TOKEN"
    for fine in ("VLLM_API_KEY", "OPENAI_API_KEY", "TGI_TOKEN", "MY_SERVER_KEY"):
        assert _registry(tmp_path, "http://127.0.0.1:8000/v1", key_env=fine).names() == ["Remote-Chat"]


def test_endpoints_in_code_are_checked_too():
    with pytest.raises(ViChatError, match="api_key_env 'HOME'"):
        Endpoint("http://127.0.0.1:8000/v1", "m", api_key_env="HOME")


def test_remote_requests_stream_together_concurrently(server, tmp_path):
    """Compare on a remote variant: both requests are in flight at once and both answers arrive whole."""
    reg = _registry(tmp_path, server)
    items = [("Remote-Chat", "Tôi bị ho"), ("Remote-Chat", "Tôi bị sốt")]
    texts = ["", ""]
    seen_order = []
    for i, piece in reg.stream_together(items, GenerationSettings(max_new_tokens=32)):
        texts[i] += piece
        seen_order.append(i)
    assert [t.strip() for t in texts] == ["Hà Nội là thủ đô của Việt Nam."] * 2
    prompts = {r["body"]["prompt"] for r in CompletionsHandler.requests[-2:]}
    assert any("Tôi bị ho" in p for p in prompts) and any("Tôi bị sốt" in p for p in prompts)
    assert set(seen_order) == {0, 1}
    batch = reg.generate_batch("Remote-Chat", ["a", "b", "c"], GenerationSettings(max_new_tokens=8))
    assert batch == ["Hà Nội là thủ đô của Việt Nam."] * 3
