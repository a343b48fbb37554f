"""A GPU box, proven: the CUDA paths of the project, each run once, small, on one GPU in minutes.

    python -m bench.gpu_check [--out FILE.json] [--quick]

Nothing in CI has a GPU, so nothing else runs these lines. Each row is PASS, FAIL (reason) or SKIPPED (reason):
- tiny BLOOM and GPT-J (random weights, built in seconds by testkit.tiny) loaded in 8-bit through bitsandbytes
  by the project's loader (vichat.loading), answering through vichat.generation, their logits close to float32's;
- one bf16 LoRA step on Gemma 3 270M (the embedded base), through train.lora's model setup and the trainer's
  loss, padded and padding-free (train.padding_free): the same loss within a stated tolerance;
- the fast CPU path (vichat.fast) falling back on CUDA with its reason, as the registry records it;
- bench.decode's transformers path and bench.train's baseline-vs-ours run on CUDA, small.

Without CUDA every CUDA row says SKIPPED (no CUDA device), and the CPU rows still run: the 8-bit request
falling back to float32 (and saying so), the padded = padding-free loss in float32, the fast path applying.
``--quick`` swaps Gemma 3 270M for a tiny random Gemma 3 and skips bench.train (seconds, for the tests).
The header names the device, torch, CUDA, bitsandbytes, the CPU model and its vector flags. Exit status 0
when nothing FAILED, 1 otherwise; ``--out`` also writes the rows as JSON.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import math
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from testkit.tiny import build_tiny
from vichat.cli import run
from vichat.files import atomic_write_json

PASS, FAIL, SKIPPED = "PASS", "FAIL", "SKIPPED"
NO_CUDA = "no CUDA device"
# Tolerances for padded vs padding-free loss (relative): float32 sums in another order; bf16 runs other kernels.
LOSS_RTOL = {torch.float32: 1e-4, torch.bfloat16: 1e-2, torch.float16: 1e-2}
# The 8-bit logits must point the same way as float32's (cosine); int8 rounding alone gives > 0.99.
INT8_MIN_COSINE = 0.9
CPU_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
    "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "bf16", "i8mm",
)  # fmt: skip
PAIRS = [  # prompt/response pairs of different lengths, for the LoRA step
    {"prompt": "Thủ đô của Việt Nam là gì?", "response": "Thủ đô của Việt Nam là Hà Nội."},
    {
        "prompt": "Tôi bị ho và sốt nhẹ hai ngày nay, tôi nên làm gì?",
        "response": "Bạn nên nghỉ ngơi, uống đủ nước, theo dõi nhiệt độ và đi khám nếu sốt cao kéo dài.",
    },
    {"prompt": "Viết một câu về mùa thu Hà Nội.", "response": "Mùa thu Hà Nội có gió heo may và hoa sữa."},
    {
        "prompt": "Giải thích ngắn gọn vì sao bầu trời có màu xanh vào ban ngày.",
        "response": "Ánh sáng mặt trời bị tán xạ bởi không khí, và ánh sáng xanh bị tán xạ mạnh nhất, nên "
        "khi nhìn lên ta thấy bầu trời màu xanh.",
    },
]
QUESTION = "Hà Nội là thủ đô của nước nào?"
GEMMA_KEY, GEMMA_VARIANT = "gemma-270m", "Gemma-Base"


class Skip(Exception):
    """The check cannot run here; the message says why."""


@dataclass
class Row:
    name: str
    device: str  # "cuda" or "cpu": where the check runs
    status: str = SKIPPED
    detail: str = ""
    seconds: float = 0.0

    def line(self) -> str:
        shown = self.detail if self.status == PASS else f"({self.detail})"
        return f"{self.status:<8} {self.device:<5} {self.name:<66} {self.seconds:6.1f} s  {shown}"


# ------------------------------------------------------------------------------------- the environment


def cpu_info() -> dict:
    """The CPU's model name and the vector flags that matter for our kernels (from /proc/cpuinfo)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model") and value.strip():
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "?")()
    return {
        "model": model,
        "cores": os.cpu_count(),
        "flags": [f for f in CPU_FLAGS if f in flags],
        "torch_capability": capability,
    }


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment() -> dict:
    cuda = torch.cuda.is_available()
    env = {
        "device": "cuda:0" if cuda else "cpu",
        "gpu": None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "transformers": _version("transformers"),
        "peft": _version("peft"),
        "bitsandbytes": _version("bitsandbytes"),
        "cpu": cpu_info(),
    }
    if cuda:
        props = torch.cuda.get_device_properties(0)
        env["gpu"] = {
            "name": props.name,
            "memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}",
            "bf16": torch.cuda.is_bf16_supported(),
            "count": torch.cuda.device_count(),
        }
    return env


def header(env: dict) -> list[str]:
    gpu = env["gpu"]
    device = (
        f"device: cuda:0 = {gpu['name']} ({gpu['memory_gib']} GiB, compute capability {gpu['capability']}, "
        f"bf16 {'yes' if gpu['bf16'] else 'no'}; {gpu['count']} GPU(s))"
        if gpu
        else f"device: cpu ({NO_CUDA}: torch {'has no CUDA build' if env['torch_cuda'] is None else 'sees no GPU'})"
    )
    cpu = env["cpu"]
    return [
        device,
        f"python {env['python']}, torch {env['torch']} (CUDA {env['torch_cuda'] or 'none'}, cuDNN "
        f"{env['cudnn'] or 'none'}), transformers {env['transformers']}, peft {env['peft']}, bitsandbytes "
        f"{env['bitsandbytes']}",
        f"cpu: {cpu['model']}, {cpu['cores']} cores; flags {' '.join(cpu['flags']) or 'none of interest'}; "
        f"torch CPU capability {cpu['torch_capability']}",
    ]


# ------------------------------------------------------------------------------------------------ checks


class Context:
    """What the checks share: a scratch folder, the tiny models (built once), the Gemma under test."""

    def __init__(self, folder: Path, quick: bool):
        self.folder, self.quick = folder, quick
        self._tiny: dict[str, Path] = {}
        self.gemma_base = None  # the Gemma the fast-path row loaded on CUDA, reused by bench.decode's row

    def tiny(self, arch: str) -> Path:
        if arch not in self._tiny:
            # special tokens never win: a greedy answer is never empty; Gemma's window is over max_length
            self._tiny[arch] = build_tiny(
                self.folder / f"tiny-{arch}", arch, specials_never_win=True, sliding_window=256
            )
        return self._tiny[arch]

    @property
    def gemma_name(self) -> str:
        return "tiny Gemma 3, --quick" if self.quick else "Gemma 3 270M"

    def gemma_spec(self):
        from vichat.loading import BaseSpec
        from vichat.registry import Registry

        if self.quick:
            return BaseSpec("tiny-gemma", str(self.tiny("gemma3")))
        return Registry.from_yaml().bases[GEMMA_KEY]

    def gemma_registry(self, device: str):
        """A registry holding one variant over the Gemma under test, with the default ``fast: auto``."""
        from vichat.registry import Registry

        if not self.quick:
            return Registry.from_yaml(device=device, progress=_quiet), GEMMA_VARIANT
        import yaml

        path = self.folder / "tiny-models.yaml"
        data = {
            "bases": {"tiny-gemma": {"source": str(self.tiny("gemma3"))}},
            "variants": [{"name": "Tiny-Gemma-Base", "base": "tiny-gemma", "template": "chat"}],
        }
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        return Registry.from_yaml(path, device=device, progress=_quiet), "Tiny-Gemma-Base"


def _quiet(message: str) -> None:
    print(f"  {message}", file=sys.stderr)


def _release() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _answer(model, tokenizer, max_new_tokens: int = 8) -> tuple[str, int]:
    """A greedy answer to a chat-template question through vichat.generation; (text, new tokens)."""
    from vichat.generation import GenerationSettings, GenerationStats, stream
    from vichat.prompts import get_template

    stats = GenerationStats()
    settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=0)
    text = "".join(stream(model, tokenizer, get_template("chat").build(QUESTION), settings, stats=stats))
    return text, stats.new_tokens


def _last_logits(model, tokenizer) -> torch.Tensor:
    ids = tokenizer(QUESTION, return_tensors="pt")["input_ids"]
    device = next(model.parameters()).device
    with torch.no_grad():
        return model(input_ids=ids.to(device)).logits[0, -1].float().cpu()


def eight_bit(ctx: Context, arch: str, device: str) -> str:
    """On CUDA: int8 linear layers, no fallback notice, an answer, logits close to float32's.
    On CPU: the loader falls back to float32 and says so, and the model answers."""
    from vichat.loading import BaseSpec, load_base

    folder = ctx.tiny(arch)
    spec = BaseSpec(f"tiny-{arch}", str(folder), load_in_8bit=True)
    base = load_base(spec, device, progress=_quiet)
    if device == "cpu":
        assert any("8-bit loading needs CUDA" in n for n in base.notices), (
            f"no fallback notice: {base.notices}"
        )
        text, tokens = _answer(base.model, base.tokenizer)
        assert tokens and text, f"no answer ({tokens} new tokens, text {text!r})"
        return f"8-bit asked, float32 used and said ({base.notices[0]!r}); answered {tokens} tokens {text[:30]!r}"
    assert not base.notices, "; ".join(base.notices)  # e.g. bitsandbytes unusable: fell back to float16
    assert getattr(base.model, "is_loaded_in_8bit", False), "the model is not marked loaded in 8-bit"
    import bitsandbytes as bnb

    int8 = [n for n, m in base.model.named_modules() if isinstance(m, bnb.nn.Linear8bitLt)]
    assert int8, "no bitsandbytes Linear8bitLt layer in the model"
    text, tokens = _answer(base.model, base.tokenizer)
    assert tokens and text, f"no answer ({tokens} new tokens, text {text!r})"
    got = _last_logits(base.model, base.tokenizer)
    reference = load_base(BaseSpec(spec.key, spec.source), "cpu", progress=_quiet)
    want = _last_logits(reference.model, reference.tokenizer)
    assert torch.isfinite(got).all(), "non-finite logits in 8-bit"
    cosine = float(torch.nn.functional.cosine_similarity(got, want, dim=0))
    agree = int(got.argmax()) == int(want.argmax())
    del base, reference
    _release()
    assert cosine >= INT8_MIN_COSINE, (
        f"8-bit logits far from float32's: cosine {cosine:.3f} < {INT8_MIN_COSINE}"
    )
    return (
        f"{len(int8)} Linear8bitLt layers; answered {tokens} tokens {text[:30]!r}; last logits vs float32: "
        f"cosine {cosine:.4f} (>= {INT8_MIN_COSINE}), same argmax {'yes' if agree else 'no'}"
    )


def _on(batch: dict, device: str) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def lora_step(ctx: Context, device: str) -> str:
    """Padded and padding-free batches of the same examples give the same loss (and gradients) from the same
    LoRA weights; then one AdamW step. bf16 weights on CUDA (the loader's choice), float32 on CPU."""
    from transformers import DataCollatorWithFlattening, TrainingArguments

    from train import padding_free
    from train.config import ModelArguments
    from train.dataset import IGNORE, PadToLongest, encode_all
    from train.lora import prepare_model
    from train.trainer import ViChatTrainer
    from vichat.prompts import get_template

    max_length = 128
    spec = ctx.gemma_spec()
    # no LoRA dropout: both layouts must run the same function
    args = ModelArguments(base=spec.key, lora_r=8, lora_alpha=16, lora_dropout=0.0)
    torch.manual_seed(0)
    model, tokenizer, targets = prepare_model(spec, args, "cuda:0" if device == "cuda" else "cpu")
    dtype = next(p for p in model.parameters() if not p.requires_grad).dtype
    if device == "cuda":
        assert dtype in (torch.bfloat16, torch.float16), f"the base loaded in {dtype} on CUDA"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    examples, _ = encode_all(PAIRS, tokenizer, get_template("chat"), max_length, False, "bench.gpu_check")
    features = [{"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples]
    training = TrainingArguments(
        output_dir=str(ctx.folder / "lora-step"),
        use_cpu=device == "cpu",
        bf16=device == "cuda" and dtype == torch.bfloat16,
        report_to="none",
    )
    trainer = ViChatTrainer(model=model, args=training)
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()

    def loss_and_grads(batch: dict) -> tuple[float, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        with trainer.accelerator.autocast():
            loss = trainer.compute_loss(model, _on(batch, model.device))
        loss.backward()
        return float(loss.detach()), torch.cat([p.grad.detach().float().flatten() for p in params])

    padded_loss, padded_grads = loss_and_grads(PadToLongest(tokenizer.pad_token_id)(features))
    if not padding_free.enable(model, max_length):
        raise AssertionError(f"padding-free does not apply to {model.config.model_type} at {max_length}")
    flat = DataCollatorWithFlattening(return_flash_attn_kwargs=True, separator_id=IGNORE)(features)
    assert flat["input_ids"].shape == (1, sum(len(e["input_ids"]) for e in examples)), "not one unpadded row"
    free_loss, free_grads = loss_and_grads(flat)
    torch.optim.AdamW(params, lr=3e-4).step()  # with the padding-free gradients
    with torch.no_grad(), trainer.accelerator.autocast():
        after = float(trainer.compute_loss(model, _on(flat, model.device)))
    padding_free.disable(model)

    tolerance = LOSS_RTOL.get(dtype, 1e-2)
    difference = abs(free_loss - padded_loss) / max(abs(padded_loss), 1e-12)
    grads = float((free_grads - padded_grads).norm() / padded_grads.norm().clamp(min=1e-12))
    tokens = sum(1 for e in examples for label in e["labels"] if label != IGNORE)
    for name, value in (
        ("padded loss", padded_loss),
        ("padding-free loss", free_loss),
        ("loss after", after),
    ):
        assert math.isfinite(value), f"{name} is {value}"
    assert torch.isfinite(free_grads).all() and torch.isfinite(padded_grads).all(), "non-finite gradients"
    assert difference <= tolerance, (
        f"padded loss {padded_loss:.6f} vs padding-free {free_loss:.6f}: relative difference "
        f"{difference:.1e} > {tolerance:g} ({str(dtype).removeprefix('torch.')})"
    )
    return (
        f"{str(dtype).removeprefix('torch.')}, LoRA r=8 on {','.join(targets)}, {len(examples)} examples "
        f"({tokens} response tokens): loss padded {padded_loss:.5f} = padding-free {free_loss:.5f} (relative "
        f"{difference:.1e} <= {tolerance:g}); gradients relative {grads:.1e}; after one AdamW step {after:.5f}"
    )


def fast_path(ctx: Context, device: str) -> str:
    """On CUDA the registry falls back from the fast CPU path, records why, and transformers answers.
    On CPU the fast path applies (or the row says why it cannot here)."""
    from vichat.generation import GenerationSettings, GenerationStats

    registry, variant = ctx.gemma_registry("cuda:0" if device == "cuda" else "cpu")
    stats = GenerationStats()
    settings = GenerationSettings(max_new_tokens=8, temperature=0)
    text = "".join(registry.stream(variant, QUESTION, settings, stats=stats))
    note = registry.fast_note(variant)
    base = registry.loaded_base(registry.variant(variant).base)
    ctx.gemma_base = base  # for bench.decode's row
    if device == "cpu":
        if note:
            raise Skip(f"the fast path does not apply on this CPU: {note}")
        assert base.fast is not None, "no fast engine was built, and no reason recorded"
        return f"fast path used ({base.fast.precision} engine); answered {stats.new_tokens} tokens"
    assert note, "the fast path did not fall back on CUDA, and recorded no reason"
    assert base.fast is None, "a fast CPU engine was built for a CUDA base"
    assert "cuda" in note.lower(), f"the reason does not name the device: {note}"
    assert stats.new_tokens >= 1, "transformers did not answer after the fallback"
    return f"fell back with reason {note!r}; transformers answered {stats.new_tokens} tokens {text[:30]!r}"


def bench_decode(ctx: Context, device: str) -> str:
    """bench.decode's transformers row on CUDA. Its main() stays CPU-only as written: it builds the registry
    with device="cpu", and its fast and llama.cpp rows are CPU paths."""
    from bench.decode import INSTRUCTIONS, run_reference
    from vichat.prompts import get_template

    base = ctx.gemma_base
    if base is None or base.device.type != "cuda":
        registry, variant = ctx.gemma_registry("cuda:0")
        base = registry.loaded_base(registry.variant(variant).base)
    prompts = [get_template("chat").build(i) for i in INSTRUCTIONS[:3]]
    row = run_reference(base, prompts, 24)
    assert row.tokens and all(t >= 1 for t in row.tokens), f"no tokens decoded: {row.tokens}"
    ctx.gemma_base = None
    del base
    _release()
    return (
        f"run_reference on {ctx.gemma_name}: {' '.join(row.line().split())}; bench.decode's main() is "
        "CPU-only as written (registry device 'cpu'; its fast and llama.cpp rows are CPU paths)"
    )


def bench_train(ctx: Context, device: str) -> str:
    """bench.train's baseline and ours (train.lora in subprocesses, the gemma-chat preset, bf16) on CUDA."""
    if ctx.quick:
        raise Skip("--quick: bench.train trains Gemma 3 270M in subprocesses")
    from bench import train as bench_train
    from vichat.data import read_jsonl_strict, write_jsonl
    from vichat.paths import REPO_ROOT

    data = REPO_ROOT / "assets" / "data"
    records = (read_jsonl_strict(data / "general_a.jsonl") + read_jsonl_strict(data / "general_b.jsonl"))[::3]
    train_n, val_n = 32, 8  # 4 optimizer steps of 8
    if len(records) < train_n + val_n:
        raise Skip(f"only {len(records)} records in assets/data")
    folder = ctx.folder / "bench-train"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", records[:train_n])
    write_jsonl(folder / "val.jsonl", records[train_n : train_n + val_n])
    results = {}
    for kind in ("baseline", "ours"):
        metrics = bench_train.run(kind, folder / "train.jsonl", folder / "val.jsonl", folder / kind)
        report = (folder / kind / "report.md").read_text(encoding="utf-8")
        gpu = torch.cuda.get_device_name(0)
        assert gpu in report, f"{kind}: report.md does not name {gpu}: it did not train on the GPU"
        assert math.isfinite(metrics["eval_loss"]), f"{kind}: held-out loss {metrics['eval_loss']}"
        results[kind] = metrics
    rate = {k: m["train_tokens_seen"] / m["train_runtime"] for k, m in results.items()}
    return (
        f"{train_n} examples, 1 epoch: baseline {rate['baseline']:.0f} tokens/s (held-out loss "
        f"{results['baseline']['eval_loss']:.4f}), ours {rate['ours']:.0f} tokens/s (held-out loss "
        f"{results['ours']['eval_loss']:.4f}, padding-free {results['ours'].get('padding_free')}); "
        f"speedup {rate['ours'] / rate['baseline']:.2f}x"
    )


def plan(ctx: Context) -> list[tuple[str, str, Callable[[], str]]]:
    """(row name, device, check) in the order they run."""
    gemma = ctx.gemma_name
    rows = [
        ("tiny BLOOM, 8-bit asked: float32 fallback said, answering", "cpu", lambda: eight_bit(ctx, "bloom", "cpu")),
        ("tiny GPT-J, 8-bit asked: float32 fallback said, answering", "cpu", lambda: eight_bit(ctx, "gptj", "cpu")),
        ("LoRA step, tiny Gemma 3 fp32: padded = padding-free loss", "cpu", lambda: lora_step(_tiny(ctx), "cpu")),
    ]  # fmt: skip
    if not ctx.quick:
        rows.append(
            ("LoRA step, Gemma 3 270M fp32: padded = padding-free loss", "cpu", lambda: lora_step(ctx, "cpu"))
        )
    rows += [
        (f"fast CPU path applies ({gemma})", "cpu", lambda: fast_path(ctx, "cpu")),
        ("tiny BLOOM in 8-bit (bitsandbytes), answering", "cuda", lambda: eight_bit(ctx, "bloom", "cuda")),
        ("tiny GPT-J in 8-bit (bitsandbytes), answering", "cuda", lambda: eight_bit(ctx, "gptj", "cuda")),
        (f"bf16 LoRA step, {gemma}: padded = padding-free loss", "cuda", lambda: lora_step(ctx, "cuda")),
        (f"fast CPU path falls back with its reason ({gemma})", "cuda", lambda: fast_path(ctx, "cuda")),
        (f"bench.decode transformers path ({gemma})", "cuda", lambda: bench_decode(ctx, "cuda")),
        ("bench.train baseline vs ours (Gemma 3 270M, 32 examples)", "cuda", lambda: bench_train(ctx, "cuda")),
    ]  # fmt: skip
    return rows


def _tiny(ctx: Context) -> Context:
    """A context over the same folder whose Gemma is the tiny one (the CPU row that always runs)."""
    tiny = Context(ctx.folder, quick=True)
    tiny._tiny = ctx._tiny
    return tiny


def run_check(name: str, device: str, check: Callable[[], str]) -> Row:
    row = Row(name, device)
    if device == "cuda" and not torch.cuda.is_available():
        row.detail = NO_CUDA
        return row
    start = time.perf_counter()
    try:
        row.detail, row.status = check(), PASS
    except Skip as e:
        row.detail = str(e)
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # SystemExit too: bench.train stops that way when a run fails
        row.status = FAIL
        row.detail = f"{type(e).__name__}: {' '.join(str(e).split())[:600]}"
        print(f"--- {name} failed:\n{traceback.format_exc()}", file=sys.stderr)
    finally:
        row.seconds = time.perf_counter() - start
        _release()
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="also write the environment and rows here as JSON")
    parser.add_argument(
        "--quick", action="store_true", help="a tiny random Gemma 3 instead of Gemma 3 270M; no bench.train"
    )
    args = parser.parse_args(argv)
    env = environment()
    for line in header(env):
        print(line, flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="vichat-gpu-check-") as folder:
        ctx = Context(Path(folder), args.quick)
        for name, device, check in plan(ctx):
            row = run_check(name, device, check)
            print(row.line(), flush=True)
            rows.append(row)
    counts = {s: sum(r.status == s for r in rows) for s in (PASS, FAIL, SKIPPED)}
    print(f"{counts[PASS]} passed, {counts[FAIL]} failed, {counts[SKIPPED]} skipped")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.out, {"environment": env, "rows": [asdict(r) for r in rows], "counts": counts})
        print(f"rows written to {args.out}")
    return 1 if counts[FAIL] else 0


if __name__ == "__main__":
    raise SystemExit(run(main))
