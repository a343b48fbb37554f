"""Shared fixtures: tiny random BLOOM, GPT-J (and Gemma 3) models with a small Vietnamese BPE tokenizer, built offline.

They go through the same loader, templates, LoRA targets and generation as the real models, in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

CORPUS = [
    "Hãy viết một phản hồi thích hợp cho chỉ dẫn dưới đây.",
    "Nếu bạn là bác sĩ, vui lòng trả lời các câu hỏi y tế dựa trên mô tả của bệnh nhân.",
    "### Instruction:",
    "### Response:",
    "Hà Nội là thủ đô của Việt Nam. Thành phố Hồ Chí Minh là thành phố lớn nhất.",
    "Tôi bị đau đầu và sốt nhẹ từ hôm qua, tôi nên làm gì?",
    "Bạn nên nghỉ ngơi, uống nhiều nước và đi khám bác sĩ nếu sốt cao kéo dài.",
    "Viết một bài thơ ngắn về mùa thu. Giải thích vì sao bầu trời có màu xanh.",
    "def add(a, b): return a + b  # Python 1 2 3 4 5 6 7 8 9 0",
]


def build_tokenizer(folder: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS * 20, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    fast.save_pretrained(folder)
    return fast


def build_tiny(folder: Path, arch: str) -> Path:
    from transformers import AutoModelForCausalLM, BloomConfig, GPTJConfig

    folder.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(folder)
    common = {
        "vocab_size": len(tok),
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    if arch == "bloom":
        cfg = BloomConfig(hidden_size=64, n_layer=2, n_head=4, **common)
    else:
        cfg = GPTJConfig(n_embd=64, n_layer=2, n_head=4, rotary_dim=8, n_positions=512, **common)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(folder)
    return folder


def build_tiny_gemma(folder: Path, tokenizer_from: Path, sliding_window: int = 8) -> Path:
    """Tiny random Gemma 3 text: grouped-query attention, sliding and full layers, as the embedded default."""
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    tok = AutoTokenizer.from_pretrained(tokenizer_from)
    tok.save_pretrained(folder)
    cfg = Gemma3TextConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        sliding_window=sliding_window,
        layer_types=["sliding_attention", "full_attention"] * 2,
        max_position_embeddings=512,
        query_pre_attn_scalar=16,
        initializer_range=0.2,
        tie_word_embeddings=False,  # a random tied model just repeats its input; the real Gemma is tied
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(cfg)
    with torch.no_grad():  # special tokens never win: every answer has visible text
        model.lm_head.weight[: len(tok.all_special_ids)] = 0
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_gemma_builder():
    return build_tiny_gemma


def build_adapter(base_folder: Path, out: Path, seed: int, targets: list[str]) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_folder)
    cfg = LoraConfig(
        r=8,
        lora_alpha=16,
        lora_dropout=0.05,
        target_modules=targets,
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, cfg)
    with torch.no_grad():  # random, large enough to move the tiny model's output
        for n, p in peft_model.named_parameters():
            if "lora_" in n:
                p.normal_(0, 0.5)
    peft_model.save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    from vichat.loading import lora_targets

    out = {}
    for arch in ("bloom", "gptj"):
        base = build_tiny(root / arch, arch)
        out[arch] = base
        out[f"{arch}-a"] = build_adapter(base, root / f"{arch}-adapter-a", 1, lora_targets(arch))
        out[f"{arch}-b"] = build_adapter(base, root / f"{arch}-adapter-b", 2, lora_targets(arch))
    # a base only, for the padding-free training path: a window wider than any tiny example
    out["gemma"] = build_tiny_gemma(root / "gemma", out["bloom"], sliding_window=128)
    return out


@pytest.fixture()
def tiny_models_yaml(tiny_models, tmp_path) -> Path:
    """A variant file over the tiny models: a base and two adapters (template chat / doctor) per arch."""
    import yaml

    data = {"bases": {}, "variants": []}
    for arch in ("bloom", "gptj"):
        data["bases"][arch] = {"source": str(tiny_models[arch]), "load_in_8bit": True}
        data["variants"] += [
            {"name": f"{arch}-base", "base": arch, "template": "chat"},
            {
                "name": f"{arch}-chat",
                "base": arch,
                "template": "chat",
                "adapter": str(tiny_models[f"{arch}-a"]),
            },
            {
                "name": f"{arch}-doctor",
                "base": arch,
                "template": "doctor",
                "adapter": str(tiny_models[f"{arch}-b"]),
            },
        ]
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture()
def tiny_registry(tiny_models_yaml):
    from vichat.registry import Registry

    return Registry.from_yaml(tiny_models_yaml, device="cpu", progress=lambda m: None)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def fake_server():
    """``fake_server(latency_s=..., script=[...], ...)``: a stand-in translator on 127.0.0.1, stopped after the test."""
    from train.fake_translate_server import FakeTranslateServer, ServerSettings

    started: list = []

    def start(**settings):
        server = FakeTranslateServer(ServerSettings(**settings)).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
