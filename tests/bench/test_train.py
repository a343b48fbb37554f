"""bench.train and its TRL row (bench.trl_peer): the FLOP count against torch's own counter on a real tiny Gemma 3,
TRL's padding-free run against its padded run, and (slow) the real bench at its smallest size on Gemma 3 270M."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
import yaml

from bench import train as bench_train
from bench import trl_peer
from vichat.cli import run

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
RECORDS = [
    {"prompt": "Thủ đô của Việt Nam là gì?", "response": "Thủ đô của Việt Nam là Hà Nội."},
    {"prompt": "Tôi bị ho ba ngày, nên làm gì?", "response": "Bạn nên nghỉ ngơi, uống nhiều nước ấm."},
    {"prompt": "Viết một câu về mùa thu.", "response": "Mùa thu Hà Nội có gió heo may."},
    {"prompt": "2 cộng 3 bằng mấy?", "response": "2 cộng 3 bằng 5."},
]


def _lora_model(folder: Path, r: int):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")
    cfg = LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)


def _counted(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def test_flop_count_is_what_torch_counts_on_a_tiny_gemma(tiny_models):
    """Forward: the projections, LoRA, attention and head of the formula are the matmuls torch runs (eager
    attention computes all L x L scores; the formula counts the causal half). Forward + backward: within the
    layer-0 input gradient the formula leaves in (frozen weights get no gradient, LoRA and attention do)."""
    r, length = 4, 24
    model = _lora_model(tiny_models["gemma"], r)
    config = model.get_base_model().config
    ids = torch.randint(5, config.vocab_size, (1, length), generator=torch.Generator().manual_seed(0))

    with torch.no_grad():
        forward = _counted(lambda: model(input_ids=ids, use_cache=False))
    parts = bench_train.forward_flops(config, length, length, r, TARGETS)
    full_scores = parts["attention"] * length * length / bench_train.attention_pairs(length, None)
    assert forward == pytest.approx(
        parts["projections"] + parts["lora"] + parts["head"] + full_scores, rel=1e-3
    )
    assert bench_train.attention_pairs(length, None) == length * (length + 1) // 2

    model.train()
    trained = _counted(lambda: model(input_ids=ids, labels=ids, use_cache=False).loss.backward())
    training = sum(bench_train.BACKWARD[k] * v for k, v in {**parts, "attention": full_scores}.items())
    assert trained == pytest.approx(training, rel=0.05)
    assert trained != pytest.approx(3 * forward, rel=0.05)  # not a full fine-tune's count


def test_sliding_window_caps_the_pairs():
    assert bench_train.attention_pairs(10, 4) == 4 * 5 // 2 + 6 * 4
    assert bench_train.attention_pairs(4, 10) == 10


def test_unknown_rows_are_refused_before_anything_runs(capsys):
    assert run(bench_train.main, ["--rows", "trl,fast"]) == 2
    err = capsys.readouterr().err
    assert "unknown row(s) fast" in err and "baseline,baseline-bf16,trl,ours" in err
    assert bench_train.parse_rows("ours, trl") == ["trl", "ours"]
    assert bench_train.parse_rows("baseline,baseline-bf16,ours", breakdown=False) == ["baseline", "ours"]


def _peer_preset(tmp_path: Path, base: Path, **overrides) -> list[str]:
    train, val = tmp_path / "train.jsonl", tmp_path / "val.jsonl"
    train.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in RECORDS * 2), encoding="utf-8")
    val.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in RECORDS[:2]), encoding="utf-8")
    cfg = {
        "base": str(base),
        "template": "chat",
        "train_files": [str(train)],
        "validation_files": [str(val)],
        "target_modules": ["q_proj", "v_proj"],
        "lora_dropout": 0.0,
        "max_length": 96,
        "total_batch_size": 4,
        "per_device_train_batch_size": 2,
        "learning_rate": 0.003,
        "num_train_epochs": 1,
        "logging_steps": 1,
        "save_strategy": "no",
        "eval_strategy": "no",
        "report_to": "none",
        "seed": 0,
        "bf16": False,
    }
    cfg.update(overrides)
    path = tmp_path / "preset.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return ["--config", str(path)]


def test_trl_peer_padding_free_trains_what_padded_trains(tmp_path, tiny_models):
    """TRL's padding-free row on Gemma 3 (CPU SDPA, block-diagonal mask from the positions) gives the padded
    run's losses; the prompt-completion rows tokenize to train.dataset's ids; TRL's saved adapter is scored."""
    runs = {}
    for layout in ("padded", "padding-free"):
        out = tmp_path / layout
        argv = _peer_preset(tmp_path, tiny_models["gemma"], padding_free=layout == "padding-free")
        assert run(trl_peer.main, [*argv, "--output_dir", str(out)]) == 0
        runs[layout] = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
        assert (out / "adapter" / "adapter_model.safetensors").is_file()
    padded, flat = runs["padded"], runs["padding-free"]
    assert flat["padding_free"] is True and padded["padding_free"] is False
    assert "padding_free is off" in padded["layout"]
    for m in runs.values():
        assert m["examples"] == m["same_ids"] == 8
        assert m["train_tokens_seen"] == sum(m["example_lengths"])  # real tokens, no padding counted
        assert m["gradient_checkpointing"] is False and m["gradient_accumulation_steps"] == 2
        assert math.isfinite(m["eval_loss"]) and m["eval_loss"] > 0
    assert flat["train_loss"] == pytest.approx(padded["train_loss"], rel=1e-4)
    assert flat["eval_loss"] == pytest.approx(padded["eval_loss"], rel=1e-4)


def test_trl_peer_falls_back_to_padded_batches_when_an_example_is_too_long(tmp_path, tiny_models):
    argv = _peer_preset(tmp_path, tiny_models["gemma"], max_length=80)
    assert run(trl_peer.main, [*argv, "--output_dir", str(tmp_path / "out")]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["padding_free"] is False and "exceeds max_length 80" in metrics["layout"]
    assert max(metrics["example_lengths"]) == 80  # TRL truncated at max_length


ROW = re.compile(
    r"^(?P<name>TRL SFTTrainer|ours)\s+\[[^\]]+\]: (?P<tokens>\d+) tokens in (?P<s>[\d.]+) s = "
    r"(?P<rate>[\d.]+) tokens/s; held-out loss (?P<loss>[\d.]+); train loss [\d.]+; MFU (?P<mfu>[\d.]+)%$",
    re.M,
)


@pytest.mark.slow
def test_smallest_real_bench_prints_every_row_with_finite_numbers(capsys):
    assert run(bench_train.main, ["--examples", "8", "--validation", "4", "--rows", "trl,ours"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^cpu: .+ \(\d+ cores.*\); flags: ", out, re.M)
    peak = re.search(r"^peak: bf16 torch\.matmul 2048\^3 ([\d.]+) GFLOP/s", out, re.M)
    assert peak and float(peak.group(1)) > 0
    # MFU is over the peak of the precision the rows train in (float32 where the CPU has no native bf16,
    # whose emulated bf16 matmul would put every row far above 100%)
    figure = "bf16 figure" if bench_train.native_bf16() else "float32 figure (no native bf16 here)"
    assert f"MFU below is against the {figure}" in out
    rows = {m["name"]: m for m in ROW.finditer(out)}
    assert set(rows) == {"TRL SFTTrainer", "ours"}, out
    for m in rows.values():
        assert int(m["tokens"]) > 0 and float(m["rate"]) > 0 and 0 < float(m["mfu"]) < 100
        assert 0 < float(m["loss"]) < 20
    assert rows["TRL SFTTrainer"]["tokens"] == rows["ours"]["tokens"]  # the same real tokens
    assert re.search(r"tokenized 8/8 examples to the same ids as ours", out)
    assert re.search(r"^TRL [\d.]+ SFTTrainer: completion_only_loss, padding-free", out, re.M)
    last = out.strip().splitlines()[-1]
    assert re.match(
        r"speedup ours/TRL: [\d.]+x \(target >= 1\.5x\); held-out loss ours [\d.]+ vs TRL [\d.]+ ", last
    )


def test_without_trl_the_trl_row_says_how_to_install_it_before_any_row_runs(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "trl" else real(name, *a)
    )
    assert run(bench_train.main, ["--rows", "baseline,trl"]) == 2
    err = capsys.readouterr().err
    assert "pip install trl==1.16.0" in err and "--rows baseline,baseline-bf16,ours" in err
