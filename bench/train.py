"""Training benchmark on Gemma 3 270M, same data and steps: our LoRA trainer vs TRL's SFTTrainer and a baseline.

    python -m bench.train [--examples 72] [--validation 16] [--rows baseline,baseline-bf16,trl,ours]

Rows, each one epoch over the same examples with the same preset (train/configs/gemma-chat.yaml: LoRA r=16 on all
7 projections, batch 8 as 4 x 2, the same learning rate, schedule and seed), each in its own process:
- baseline fp32 (what Alpaca-LoRA does with the HF Trainer): random order, padding to the longest in each batch
  (rounded up to 8), logits and loss on every token (prompt included), float32 (the Trainer's default on a CPU);
- baseline bf16: the same with bf16 autocast, which splits our speedup into what precision gives and what the
  trainer gives (left out with --no-breakdown);
- TRL SFTTrainer (bench.trl_peer): the peer a user would pick instead, with its best settings here: bf16,
  completion-only loss on a prompt-completion dataset built with our template and EOS, padding-free, no gradient
  checkpointing, the same LoRA config, the very same base weights (vichat.loading);
- ours (train.lora): padding-free rows (one row per micro-batch, attention per example), logits only where a
  response label is, loss on the response, bf16 autocast where the CPU has native bf16.
tokens/s counts the real (unpadded) tokens of the training data. Held-out loss: response tokens only, the same
validation set, scored by the same code (train.trainer.ViChatTrainer.evaluate) on every row's adapter.

MFU (model FLOPs utilisation) = the model FLOPs a row's training needed / its train_runtime, over the FLOP/s of
a bf16 torch.matmul (2048^3, the best of 5 before and 5 after the runs) measured in the same run, in this
process, on the same threads as the runs; on a CPU without native bf16 (every row then trains in float32, and
bf16 is emulated at a few hundred MFLOP/s), over a float32 matmul's instead. Model FLOPs are counted per
example from the model's config (``forward_flops``, ``train_flops``): matmuls only, 2 per multiply-add. The frozen projections and the frozen
tied head need a forward and the gradient of their input, 2x forward (not the 3x of a full fine-tune: frozen
weights get no gradient); the LoRA matrices and attention (QK^T, PV over the causal pairs) also need their
weight/operand gradients, 3x forward; the head counts only at the positions that carry a label (the response
for TRL and ours, every token for the baseline). Gemma 3 270M, LoRA r=16 on all 7 projections, per token of an
example of length L with n labelled targets: 2 x 2 x 100.3M + 3 x 2 x 3.8M + 3 x 4 x 4 heads x 256 x pairs/L
(pairs summed over the 18 layers) + 2 x 2 x 640 x 262144 x n/L; tests/bench/test_train.py checks the count
against torch's FLOP counter on a real (tiny) Gemma 3.
The header names the CPU model and its vector flags (avx2, avx512f, avx512_bf16, amx_bf16, ...).
Last lines: ours/TRL and ours/baseline speedups (targets 1.5x and 2x), with the held-out loss differences.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from vichat.cli import run as run_cli
from vichat.data import read_jsonl_strict, write_jsonl
from vichat.errors import DataError, SettingsError
from vichat.paths import REPO_ROOT

PRESET = REPO_ROOT / "train" / "configs" / "gemma-chat.yaml"
DATA = ("general_a.jsonl", "general_b.jsonl")
ROWS = ("baseline", "baseline-bf16", "trl", "ours")
LABELS = {
    "baseline": "baseline fp32",
    "baseline-bf16": "baseline bf16",
    "trl": "TRL SFTTrainer",
    "ours": "ours",
}
TARGETS = {"trl": 1.5, "baseline": 2.0}  # ours / row, tokens/s
PEAK_N = 2048


# ------------------------------------------------------------------------------------------- the runs


def train_args(train: Path, val: Path, out: Path) -> list[str]:
    """The command line every row trains with (train.lora's; bench.trl_peer parses the same)."""
    return [
        "--config",
        str(PRESET),
        "--train_files",
        str(train),
        "--validation_files",
        str(val),
        "--output_dir",
        str(out),
        "--num_train_epochs",
        "1",
        "--save_strategy",
        "no",
        "--eval_strategy",
        "no",
        "--logging_steps",
        "1",
        "--warmup_steps",
        "0",
    ]


def run(kind: str, train: Path, val: Path, out: Path) -> dict:
    """One row in its own process: its metrics.json, with the wall time added."""
    module = "bench.trl_peer" if kind == "trl" else "train.lora"
    args = [sys.executable, "-m", module, *train_args(train, val, out)]
    if kind.startswith("baseline"):
        args += ["--baseline", "true", "--bf16", "true" if kind == "baseline-bf16" else "false"]
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} run failed:\n{proc.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["wall_s"] = time.perf_counter() - start
    return metrics


def parse_rows(text: str, breakdown: bool = True) -> list[str]:
    wanted = [r.strip() for r in text.split(",") if r.strip()]
    unknown = [r for r in wanted if r not in ROWS]
    if unknown or not wanted:
        raise SettingsError(
            f"--rows {text!r}: {'unknown row(s) ' + ', '.join(unknown) if unknown else 'no row'}; "
            f"choose among {','.join(ROWS)}"
        )
    return [r for r in ROWS if r in wanted and (breakdown or r != "baseline-bf16")]


# ---------------------------------------------------------------------------------------- the machine


def cpu_line() -> str:
    from bench.gpu_check import cpu_info

    info = cpu_info()
    flags = " ".join(info["flags"]) or "none of the tracked ones"
    return (
        f"cpu: {info['model']} ({info['cores']} cores, torch capability {info['torch_capability']}, "
        f"{torch.get_num_threads()} torch threads); flags: {flags}"
    )


def matmul_flops(dtype: torch.dtype, n: int = PEAK_N, repeats: int = 5, budget_s: float = 20.0) -> float:
    """FLOP/s of an n x n x n torch.matmul in ``dtype``: best of ``repeats`` (fewer past ``budget_s``)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(dtype)
    b = torch.randn(n, n, generator=gen).to(dtype)
    torch.matmul(a, b)  # warm-up: thread pool, packing buffers
    best, start = math.inf, time.perf_counter()
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t0)
        if time.perf_counter() - start > budget_s:
            break
    return 2 * n**3 / best


def native_bf16() -> bool:
    from train.config import _cpu_has_bf16

    return torch.cuda.is_available() or _cpu_has_bf16()


# ------------------------------------------------------------------------------------------ FLOP count


def attention_pairs(length: int, window: int | None) -> int:
    """(query, key) pairs a causal layer needs for one example; a sliding window caps the keys per query."""
    if window is None or length <= window:
        return length * (length + 1) // 2
    return window * (window + 1) // 2 + (length - window) * window


def projection_shapes(config) -> dict[str, tuple[int, int]]:
    """(d_in, d_out) of each projection of one decoder layer (Gemma / Llama family)."""
    h, inter = config.hidden_size, config.intermediate_size
    heads, kv = config.num_attention_heads, getattr(config, "num_key_value_heads", config.num_attention_heads)
    head_dim = getattr(config, "head_dim", None) or h // heads
    return {
        "q_proj": (h, heads * head_dim),
        "k_proj": (h, kv * head_dim),
        "v_proj": (h, kv * head_dim),
        "o_proj": (heads * head_dim, h),
        "gate_proj": (h, inter),
        "up_proj": (h, inter),
        "down_proj": (inter, h),
    }


def forward_flops(config, length: int, head_positions: int, lora_r: int, targets: Sequence[str]) -> dict:
    """Forward matmul FLOPs of one example of ``length`` tokens, by part (2 FLOPs per multiply-add).

    projections: the frozen q/k/v/o/gate/up/down weights of every layer; lora: the A and B matrices on
    ``targets``; attention: QK^T and PV over the causal pairs (sliding layers capped by the window); head: the
    output projection (hidden x vocab) at ``head_positions`` positions. Norms, rotary, softmax, activations
    (elementwise) are not counted.
    """
    shapes = projection_shapes(config)
    unknown = [t for t in targets if t not in shapes]
    if unknown:
        raise SettingsError(
            f"no FLOP count for LoRA target(s) {', '.join(unknown)} (known: {', '.join(shapes)})"
        )
    layers = config.num_hidden_layers
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kinds = getattr(config, "layer_types", None) or ["full_attention"] * layers
    window = getattr(config, "sliding_window", None)
    pairs = sum(attention_pairs(length, window if kind == "sliding_attention" else None) for kind in kinds)
    return {
        "projections": 2 * length * layers * sum(i * o for i, o in shapes.values()),
        "lora": 2 * length * layers * lora_r * sum(sum(shapes[t]) for t in targets),
        "attention": 2 * 2 * heads * head_dim * pairs,
        "head": 2 * head_positions * config.hidden_size * config.vocab_size,
    }


# training = forward + backward: frozen parts need the input gradient only, trainable ones the weight gradient too
BACKWARD = {"projections": 2, "lora": 3, "attention": 3, "head": 2}


def train_flops(config, lengths: Sequence[int], labelled: Sequence[int], lora_r: int, targets) -> float:
    """Model FLOPs of one training pass over examples of ``lengths`` with ``labelled`` scored targets each."""
    total = 0
    for length, scored in zip(lengths, labelled, strict=True):
        parts = forward_flops(config, length, scored, lora_r, targets)
        total += sum(BACKWARD[k] * v for k, v in parts.items())
    return float(total)


def data_shape(
    tokenizer, records: list[dict], max_length: int, every_token: bool
) -> tuple[list[int], list[int]]:
    """(length, labelled targets) per example as train.lora encodes them (every_token: the baseline's labels)."""
    from train.dataset import IGNORE, encode_all
    from vichat.prompts import get_template

    encoded, _ = encode_all(records, tokenizer, get_template("chat"), max_length, every_token, "train_files")
    lengths = [len(e["input_ids"]) for e in encoded]
    return lengths, [sum(x != IGNORE for x in e["labels"][1:]) for e in encoded]


def base_files(preset):
    """The preset base's tokenizer and config, from where vichat.loading loads it (no model weights)."""
    from transformers import AutoConfig, AutoTokenizer

    from train.lora import resolve_base
    from vichat.loading import GGUF_PREFIX, converted_gguf
    from vichat.paths import resolve

    spec = resolve_base(preset)
    if spec.kind == "gguf-package":
        module = spec.source[len(GGUF_PREFIX) :]
        where, _ = converted_gguf(module, progress=lambda m: print(m, file=sys.stderr))
    else:
        where = resolve(spec.source) if spec.kind == "local" else spec.source
    return AutoTokenizer.from_pretrained(where), AutoConfig.from_pretrained(where)


# -------------------------------------------------------------------------------------------- the bench


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--examples", type=int, default=72, help="training examples (9 optimizer steps of 8)")
    p.add_argument("--validation", type=int, default=16)
    p.add_argument(
        "--rows", default=",".join(ROWS), help=f"rows to run, comma-separated, of {','.join(ROWS)}"
    )
    p.add_argument("--no-breakdown", action="store_true", help="skip the baseline-with-bf16 row")
    args = p.parse_args(argv)
    kinds = parse_rows(args.rows, breakdown=not args.no_breakdown)
    if "trl" in kinds:
        from bench.trl_peer import check_trl

        check_trl()  # before any row runs
    if args.examples < 1 or args.validation < 1:
        raise SettingsError("--examples and --validation must be at least 1")
    records: list[dict] = []
    for name in DATA:
        records += read_jsonl_strict(REPO_ROOT / "assets" / "data" / name)
    records = records[::3]  # a spread over the categories (short math answers and long advice alike)
    if len(records) < args.examples + args.validation:
        raise DataError(
            f"only {len(records)} examples in {', '.join(DATA)} (every third): lower --examples/--validation "
            f"(asked {args.examples} + {args.validation})"
        )
    train_records = records[: args.examples]

    from train.config import parse
    from vichat.loading import lora_targets

    model_args, data_args, _, _ = parse(["--config", str(PRESET)])
    tokenizer, config = base_files(model_args)
    targets = model_args.target_modules or lora_targets(config.model_type)
    print(cpu_line(), flush=True)
    before = {dtype: matmul_flops(dtype) for dtype in (torch.bfloat16, torch.float32)}
    print(
        f"peak before the runs: bf16 torch.matmul {PEAK_N}^3 {before[torch.bfloat16] / 1e9:.1f} GFLOP/s "
        f"(float32 {before[torch.float32] / 1e9:.1f} GFLOP/s), best of 5",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_jsonl(tmp / "train.jsonl", train_records)
        write_jsonl(tmp / "val.jsonl", records[args.examples : args.examples + args.validation])
        results = {kind: run(kind, tmp / "train.jsonl", tmp / "val.jsonl", tmp / kind) for kind in kinds}
    # measured again after the runs: a peak taken while something else held the cores would inflate every MFU
    bf16_peak, fp32_peak = (max(before[d], matmul_flops(d)) for d in (torch.bfloat16, torch.float32))
    # MFU is against the peak of the precision the rows train in: bf16 where the CPU has it natively; without it
    # every row trains in float32, and a bf16 matmul is emulated at a small fraction of float32's speed
    bf16_native = native_bf16()
    peak = bf16_peak if bf16_native else fp32_peak
    print(
        f"peak: bf16 torch.matmul {PEAK_N}^3 {bf16_peak / 1e9:.1f} GFLOP/s (float32 {fp32_peak / 1e9:.1f} "
        f"GFLOP/s), best of 5 before and 5 after the runs, {torch.get_num_threads()} threads; MFU below is "
        + ("against the bf16 figure" if bf16_native else "against the float32 figure (no native bf16 here)"),
        flush=True,
    )

    precision = "bf16" if bf16_native else "fp32 (no native bf16)"
    shapes = {
        every: data_shape(tokenizer, train_records, data_args.max_length, every) for every in (False, True)
    }
    for kind, m in results.items():
        if kind == "trl":
            lengths, labelled = m["example_lengths"], m["labelled_targets"]
        else:
            lengths, labelled = shapes[kind.startswith("baseline")]
        m["flops"] = train_flops(config, lengths, labelled, model_args.lora_r, targets)
        m["rate"] = m["train_tokens_seen"] / m["train_runtime"]
        m["mfu"] = m["flops"] / m["train_runtime"] / peak
    per_token = {k: m["flops"] / m["train_tokens_seen"] for k, m in results.items()}
    print(
        "model FLOPs (matmuls, 2 per multiply-add): 2 x forward for the frozen projections and the tied head "
        "(input gradient only), 3 x forward for LoRA and attention; head only where a label is; per token: "
        + ", ".join(f"{LABELS[k]} {v / 1e6:.0f} M" for k, v in per_token.items()),
        flush=True,
    )
    for kind, m in results.items():
        row_precision = "fp32" if kind == "baseline" else precision
        print(
            f"{LABELS[kind]:15s} [{row_precision}]: {m['train_tokens_seen']} tokens in {m['train_runtime']:.1f} s "
            f"= {m['rate']:.0f} tokens/s; held-out loss {m['eval_loss']:.4f}; train loss {m['train_loss']:.4f}; "
            f"MFU {100 * m['mfu']:.2f}%",
            flush=True,
        )
    if "trl" in results:
        t = results["trl"]
        print(
            f"TRL {t['trl_version']} SFTTrainer: completion_only_loss, {t['layout']}; bf16 {t['bf16']}, gradient "
            f"checkpointing {t['gradient_checkpointing']}, batch {t['effective_batch']} = "
            f"{t['per_device_train_batch_size']} x {t['gradient_accumulation_steps']}; tokenized "
            f"{t['same_ids']}/{t['examples']} examples to the same ids as ours"
        )
    if {"baseline", "baseline-bf16", "ours"} <= results.keys():
        precision_gain = results["baseline-bf16"]["rate"] / results["baseline"]["rate"]
        print(
            f"of which: bf16 autocast {precision_gain:.2f}x, our trainer (padding-free, response-only logits) "
            f"{results['ours']['rate'] / results['baseline-bf16']['rate']:.2f}x"
        )
    if "ours" in results:
        ours = results["ours"]
        for kind, name in (("trl", "TRL"), ("baseline", "baseline")):
            if kind not in results:
                continue
            other = results[kind]
            delta = ours["eval_loss"] - other["eval_loss"]
            print(
                f"speedup ours/{name}: {ours['rate'] / other['rate']:.2f}x (target >= {TARGETS[kind]:g}x); "
                f"held-out loss ours {ours['eval_loss']:.4f} vs {name} {other['eval_loss']:.4f} ({delta:+.4f})",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
