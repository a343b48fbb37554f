"""Tiny random BLOOM, GPT-J and Gemma 3 models with a small Vietnamese BPE tokenizer, built offline in seconds.

They go through the same loader, templates, LoRA targets and generation as the real models. The tests build
them once per session (tests/conftest.py); ``bench.gpu_check`` builds them on the GPU box it proves.
"""

from __future__ import annotations

from pathlib import Path

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
ARCHS = ("bloom", "gptj", "gemma3")


def build_tokenizer(folder: Path):
    """A 400-token byte-level BPE trained on :data:`CORPUS`, saved in ``folder``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 20, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    fast.save_pretrained(folder)
    return fast


def build_tiny(folder: Path, arch: str, *, specials_never_win: bool = False, sliding_window: int = 8) -> Path:
    """A tiny random model of ``arch`` (bloom | gptj | gemma3) with its own tokenizer, saved in ``folder``.

    ``specials_never_win`` zeroes the special tokens' output rows, so a greedy answer is never empty (a
    Gemma always has it). ``sliding_window``: Gemma 3's local attention window, in tokens.
    """
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {arch!r}")
    folder.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(folder)
    if arch == "gemma3":
        return _save_gemma(folder, tok, sliding_window)
    from transformers import AutoModelForCausalLM, BloomConfig, GPTJConfig

    ids = _token_ids(tok)
    if arch == "bloom":
        config = BloomConfig(hidden_size=64, n_layer=2, n_head=4, **ids)
    else:
        config = GPTJConfig(n_embd=64, n_layer=2, n_head=4, rotary_dim=8, n_positions=512, **ids)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    if specials_never_win:
        _silence_specials(model, tok)
    model.save_pretrained(folder)
    return folder


def build_tiny_gemma(folder: Path, tokenizer_from: Path, sliding_window: int = 8) -> Path:
    """Tiny random Gemma 3 text over the tokenizer saved in ``tokenizer_from``: grouped-query attention,
    sliding and full layers, as the embedded default."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_from)
    tok.save_pretrained(folder)
    return _save_gemma(folder, tok, sliding_window)


def _token_ids(tok) -> dict[str, int]:
    return {
        "vocab_size": len(tok),
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }


def _silence_specials(model, tok) -> None:
    """Special tokens never win the argmax: every greedy answer has visible text."""
    with torch.no_grad():
        model.get_output_embeddings().weight[: len(tok.all_special_ids)] = 0


def _save_gemma(folder: Path, tok, sliding_window: int) -> Path:
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(
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
        **_token_ids(tok),
    )
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(config)
    _silence_specials(model, tok)
    model.save_pretrained(folder)
    return folder


def build_adapter(base_folder: Path, out: Path, seed: int, targets: list[str]) -> Path:
    """A random LoRA adapter (r=8) over ``base_folder`` on ``targets``, large enough to move its output."""
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
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_" in n:
                p.normal_(0, 0.5)
    peft_model.save_pretrained(out, safe_serialization=True)
    return out
