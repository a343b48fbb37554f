"""Padding-free batches: one row per micro-batch gives what separate, unpadded examples give."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorWithFlattening, TrainingArguments

from train import padding_free
from train.dataset import IGNORE, PadToLongest, encode
from train.trainer import ViChatTrainer
from vichat.prompts import get_template

PAIRS = [
    {"prompt": "Thủ đô của Việt Nam là gì?", "response": "Hà Nội."},
    {"prompt": "Tôi bị đau đầu và sốt nhẹ từ hôm qua, tôi nên làm gì?", "response": "Bạn nên nghỉ ngơi."},
    {
        "prompt": "Viết một bài thơ ngắn về mùa thu.",
        "response": "Mùa thu Hà Nội có gió heo may, lá vàng rơi.",
    },
]


@pytest.fixture()
def gemma(tiny_models):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_models["gemma"])
    tok = AutoTokenizer.from_pretrained(tiny_models["gemma"])
    examples = [encode(p, tok, get_template("chat"), 96, False) for p in PAIRS]
    return model.eval(), tok, [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]


def flattened(examples):
    return DataCollatorWithFlattening(return_flash_attn_kwargs=True, separator_id=IGNORE)(examples)


def test_one_row_gives_the_logits_of_separate_examples(gemma):
    model, _, examples = gemma
    with torch.no_grad():
        separate = torch.cat([model(input_ids=torch.tensor([e["input_ids"]])).logits[0] for e in examples])
        assert padding_free.enable(model, 96)
        batch = flattened(examples)
        assert batch["input_ids"].shape == (1, sum(len(e["input_ids"]) for e in examples))  # not one pad
        row = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[0]
        torch.testing.assert_close(row, separate, rtol=1e-4, atol=1e-4)
        # without the bounds (a padded probe, generation) the same attention is plain SDPA with its mask
        padded = PadToLongest(0)(examples)
        out = model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"]).logits
        for i, e in enumerate(examples):
            n = len(e["input_ids"])
            torch.testing.assert_close(
                out[i, :n], separate[sum(len(x["input_ids"]) for x in examples[:i]) :][:n]
            )
    padding_free.disable(model)
    assert model.config._attn_implementation == "sdpa"


def test_attention_does_not_cross_examples(gemma):
    model, _, examples = gemma
    assert padding_free.enable(model, 96)
    with torch.no_grad():
        first = model(**{k: v for k, v in flattened(examples).items() if k != "labels"}).logits[0]
        changed = [examples[0], {"input_ids": [5] * 20, "labels": [IGNORE] * 20}, examples[2]]
        second = model(**{k: v for k, v in flattened(changed).items() if k != "labels"}).logits[0]
    n0 = len(examples[0]["input_ids"])
    n2 = len(examples[2]["input_ids"])
    torch.testing.assert_close(first[:n0], second[:n0])
    torch.testing.assert_close(first[-n2:], second[-n2:], rtol=1e-4, atol=1e-4)


def test_trainer_loss_is_the_same_padded_or_padding_free(gemma, tmp_path):
    model, _, examples = gemma
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    trainer = ViChatTrainer(model=model, args=args)
    model.eval()
    with torch.no_grad():
        padded = trainer.compute_loss(model, PadToLongest(0)(examples))
        assert padding_free.enable(model, 96)
        row = trainer.compute_loss(model, flattened(examples))
    response_tokens = sum(sum(1 for x in e["labels"] if x != IGNORE) for e in examples)
    assert response_tokens > 10
    torch.testing.assert_close(row, padded, rtol=1e-5, atol=1e-5)


def test_architectures_without_it_keep_padded_batches(tiny_models):
    for arch in ("bloom", "gptj"):
        model = AutoModelForCausalLM.from_pretrained(tiny_models[arch])
        assert not padding_free.enable(model, 96)
        assert model.config._attn_implementation != padding_free.NAME


def test_a_max_length_beyond_the_sliding_window_keeps_padded_batches(gemma):
    model, _, _ = gemma
    window = model.config.sliding_window
    assert not padding_free.enable(model, window + 1)  # per-span causal attention would ignore the window
    assert model.config._attn_implementation == "sdpa"
    assert padding_free.enable(model, window)
    batch = flattened([{"input_ids": [7] * (window + 8), "labels": [IGNORE] * (window + 8)}])
    with pytest.raises(ValueError, match="longer than the sliding window"):  # the guard behind enable()
        model(**{k: v for k, v in batch.items() if k != "labels"})
