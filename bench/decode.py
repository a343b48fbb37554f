"""Decoding benchmark on CPU: the embedded default (Gemma 3 270M) through each decoding path.

    python -m bench.decode [--new-tokens 64] [--prompts 6] [--skip-starts]

Rows, on the same prompts (the chat template around fixed Vietnamese instructions), greedy, no repetition
penalty, ending at end-of-sequence or after --new-tokens tokens (no stop markers, so every path decodes):
- transformers fp32: ``model.generate`` in float32, the reference path (``fast: off``) and the baseline;
- our default CPU path: vichat.fast (weight formats timed per matrix at start, fused matrices, KV pool);
- llama.cpp on the same GGUF file, on all threads and on one, when llama-cpp-python is installed (skipped
  with a note otherwise), each in a child process: a llama.cpp that crashes on this CPU is a skipped row
  with the signal, not a dead benchmark. The ratio uses its faster setting.

The header names the CPU model and its vector flags; the kernels the engine chose (and their timings) are
printed after the rows, then how often the two-pass int4 head's candidates (its 128 best by the int4
estimate) held the float32 top 20 over the baseline's decode steps.

tokens/s is decode speed after the first token ((tokens - 1) / (total - first), as GenerationStats does);
first token is the time to it from the call (prompt processing included); the first prompt warms up and is
not counted. llama.cpp keeps no KV cache
between prompts here (reset before each), as the other rows keep none. Then the time from a new process
to the first streamed token, with the base's safetensors cache in place (cached start) and with an empty
cache (first start: the GGUF is converted once), and the peak memory of a process serving the base alone
vs the base and two adapters on the fast path. Our path and llama.cpp run in alternating rounds (--rounds,
3 by default): a VM's speed drifts by 20% or more within minutes, and it moves both sides of a round alike.
Last line: our path over llama.cpp, the median of the rounds' ratios (target >= 0.9).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from vichat.paths import resolve

INSTRUCTIONS = [
    "Hãy giới thiệu ngắn gọn về vịnh Hạ Long.",
    "Tôi bị ho ba ngày nay, tôi nên làm gì?",
    "Viết một bài thơ ngắn về mùa thu Hà Nội.",
    "Giải thích vì sao bầu trời có màu xanh.",
    "Liệt kê ba món ăn nổi tiếng của Việt Nam và cách nấu một món.",
    "Làm thế nào để học tiếng Anh hiệu quả khi đi làm?",
    "So sánh xe máy và xe buýt khi đi lại ở Hà Nội.",
    "Tôi bị đau đầu và sốt nhẹ từ hôm qua, tôi nên làm gì?",
]
BASE_KEY = "gemma-270m"
VARIANT = "Gemma-Base"


@dataclass
class Row:
    name: str
    first_s: list[float] = field(default_factory=list)
    decode_s: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)

    def add(self, first: float, total: float, tokens: int) -> None:
        self.first_s.append(first)
        self.decode_s.append(total - first)
        self.tokens.append(tokens)

    @property
    def tokens_per_s(self) -> float:
        return sum(t - 1 for t in self.tokens) / sum(self.decode_s)

    def line(self) -> str:
        return (
            f"{self.name:<34} {self.tokens_per_s:8.1f} tok/s   first token {statistics.mean(self.first_s):6.3f} s"
            f"   ({sum(self.tokens)} tokens, {len(self.tokens)} prompts)"
        )


def settings(new_tokens: int):
    from vichat.generation import GenerationSettings

    return GenerationSettings(max_new_tokens=new_tokens, temperature=0, repetition_penalty=1.0)


def run_reference(base, prompts: list[str], new_tokens: int, head_inputs: list | None = None) -> Row:
    """The baseline row; ``head_inputs`` (if given) collects the LM head's input at each step."""
    from vichat.generation import GenerationStats, stream

    head = base.model.get_output_embeddings()
    hook = None
    if head_inputs is not None:
        hook = head.register_forward_pre_hook(
            lambda m, args: head_inputs.append(args[0][0, -1].detach().clone())
        )
    row = Row("transformers fp32 (baseline)")
    try:
        for prompt in [prompts[0], *prompts]:  # the first one warms up and is not counted
            stats = GenerationStats()
            for _ in stream(base.model, base.tokenizer, prompt, settings(new_tokens), stats=stats):
                pass
            row.add(stats.first_token_s, stats.total_s, stats.new_tokens)
    finally:
        if hook is not None:
            hook.remove()
    return _drop_warmup(row)


def candidate_recall(base, head_inputs: list, k: int = 20) -> str:
    """How often the int4 head's candidates hold the float32 top ``k`` (what top-k sampling reads), over the
    reference's own decode steps: the int4 format's one approximation, measured on this model."""
    import torch

    from vichat.fast.linear import make_linear

    weight = base.model.get_output_embeddings().weight
    try:
        head = make_linear(weight, "int4")
    except (RuntimeError, NotImplementedError, AttributeError) as e:
        return f"int4 head: unavailable here ({str(e)[:80]})"
    with torch.inference_mode():
        x = torch.stack(head_inputs).float()
        exact = (x @ weight.detach().float().T).topk(k, dim=-1).indices
        picked = head.estimate(x).topk(head.candidates, dim=-1).indices
        held = [set(e.tolist()) <= set(c.tolist()) for e, c in zip(exact, picked, strict=True)]
        top1 = [int(e[0]) in set(c.tolist()) for e, c in zip(exact, picked, strict=True)]
    return (
        f"int4 head candidates: the float32 top {k} inside the int4 top {head.candidates} at "
        f"{100 * sum(held) / len(held):.1f}% of {len(held)} reference steps (the top 1 at "
        f"{100 * sum(top1) / len(top1):.1f}%)"
    )


def run_fast(registry, base, prompts: list[str], new_tokens: int) -> Row:
    from vichat.backends import Request
    from vichat.generation import GenerationStats

    decoder = registry.decoder(VARIANT)
    row = Row(f"our default CPU path (fast, {base.fast.precision})")
    for prompt in [prompts[0], *prompts]:
        stats = GenerationStats()
        for _ in decoder.stream([Request(prompt, settings(new_tokens), stats=stats)]):
            pass
        row.add(stats.first_token_s, stats.total_s, stats.new_tokens)
    return _drop_warmup(row)


_LLAMA_CHILD = """
import json, sys, time
from llama_cpp import Llama
gguf, threads, new_tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
prompts = json.loads(sys.stdin.read())
llm = Llama(model_path=gguf, n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)
eos = llm.token_eos()
out = []
for ids in prompts:
    llm.reset()  # no KV cache kept between prompts, as in the other rows
    start, first, count = time.perf_counter(), 0.0, 0
    for token in llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0):
        count += 1
        if count == 1:
            first = time.perf_counter() - start
        if token == eos or count == new_tokens:
            break
    out.append([first, time.perf_counter() - start, count])
print(json.dumps(out))
"""


def run_llama_server(base, prompts: list[str], new_tokens: int) -> list[Row | str]:
    """llama.cpp's own server (its own process), one request at a time, on all threads and on one."""
    import importlib

    import torch

    from bench import llama

    module = base.spec.source.split(":", 1)[1]
    gguf = str(importlib.import_module(module).assemble())
    rows: list[Row | str] = []
    for threads in sorted({torch.get_num_threads(), 1}, reverse=True):
        name = f"llama.cpp server (same GGUF, {threads} thread{'s' * (threads > 1)})"
        try:
            with llama.serving(gguf, "--parallel", "1", "-c", "2048", threads=threads) as url:
                row = Row(name)
                for prompt in [prompts[0], *prompts]:
                    ids = base.tokenizer(prompt)["input_ids"]  # the same token ids as the other rows
                    body = {"prompt": ids, "n_predict": new_tokens, "temperature": 0, "top_k": 1,
                            "repeat_penalty": 1.0, "cache_prompt": False}  # fmt: skip
                    t = llama.complete(url, body)["timings"]
                    first = t["prompt_ms"] / 1000
                    row.add(first, first + t["predicted_ms"] / 1000, int(t["predicted_n"]))
                rows.append(_drop_warmup(row))
        except (RuntimeError, OSError) as e:
            rows.append(f"{name}: skipped, {e}")
    return rows


def run_llama_cpp(base, prompts: list[str], new_tokens: int) -> list[Row | str]:
    """llama.cpp on all threads and on one, each in a child process: a crash is a skipped row, with why.

    Through llama-cpp-python where it is installed, else through a ``llama-server`` binary on PATH."""
    import importlib.util

    import torch

    from bench import llama

    if importlib.util.find_spec("llama_cpp") is None:
        if llama.server_binary() is not None:
            return run_llama_server(base, prompts, new_tokens)
        return ["llama.cpp: skipped, neither llama-cpp-python nor llama-server is installed (README: "
                "'llama.cpp on this CPU')"]  # fmt: skip
    import json

    module = base.spec.source.split(":", 1)[1]
    gguf = str(importlib.import_module(module).assemble())
    ids = [base.tokenizer(p)["input_ids"] for p in [prompts[0], *prompts]]  # the same ids as the other rows
    rows: list[Row | str] = []
    for threads in sorted({torch.get_num_threads(), 1}, reverse=True):
        name = f"llama.cpp (same GGUF, {threads} thread{'s' * (threads > 1)})"
        proc = subprocess.run(
            [sys.executable, "-c", _LLAMA_CHILD, gguf, str(threads), str(new_tokens)],
            input=json.dumps(ids), capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
        if proc.returncode != 0:
            how = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
            tail = (proc.stderr.strip().splitlines() or [""])[-1][:160]
            rows.append(f"{name}: skipped, it crashed ({how}) {tail}".rstrip())
            continue
        row = Row(name)
        for first, total, count in json.loads(proc.stdout.strip().splitlines()[-1]):
            row.add(first, total, count)
        rows.append(_drop_warmup(row))
    return rows


def merge(rows: list[Row]) -> Row:
    """One row over several rounds of the same measurement."""
    out = Row(rows[0].name)
    for row in rows:
        out.first_s += row.first_s
        out.decode_s += row.decode_s
        out.tokens += row.tokens
    return out


def round_ratio(ours: Row, llama: list[Row | str]) -> float:
    """Our tokens/s over llama.cpp's faster thread setting, within one round."""
    return ours.tokens_per_s / max(r.tokens_per_s for r in llama if isinstance(r, Row))


def _drop_warmup(row: Row) -> Row:
    row.first_s, row.decode_s, row.tokens = row.first_s[1:], row.decode_s[1:], row.tokens[1:]
    return row


# ------------------------------------------------------------------------------------ start to first token

_START = """
import time
from dataclasses import replace
from vichat.generation import GenerationSettings
from vichat.registry import Registry
reg = Registry.from_yaml(device="cpu", progress=lambda m: None)
reg.variants[{variant!r}] = replace(reg.variant({variant!r}), fast={mode!r})
it = reg.stream({variant!r}, {instruction!r}, GenerationSettings(max_new_tokens=4, temperature=0))
next(it)
print("FIRST", time.time())
it.close()
"""


def start_to_first_token(mode: str, cache: str | None = None) -> float:
    """Seconds from launching a new Python process to its first streamed piece of a reply."""
    code = _START.format(variant=VARIANT, mode=mode, instruction=INSTRUCTIONS[0])
    env = {**os.environ, **({"VICHAT_CACHE": cache} if cache else {})}
    launched = time.time()
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=resolve(".")
    )
    for line in out.stdout.splitlines():
        if line.startswith("FIRST "):
            return float(line.split()[1]) - launched
    raise RuntimeError(f"start ({mode}) failed:\n{out.stderr[-3000:]}")


_MEMORY = """
import resource
from vichat.generation import GenerationSettings
from vichat.registry import Registry, Variant
reg = Registry.from_yaml(device="cpu", progress=lambda m: None)
names = [{variant!r}]
for i, path in enumerate({adapters!r}):
    reg.add_variant(Variant(f"adapter-{{i}}", {base!r}, "chat", path))
    names.append(f"adapter-{{i}}")
for name in names:
    "".join(reg.stream(name, {instruction!r}, GenerationSettings(max_new_tokens=8, temperature=0)))
assert reg.loaded_base({base!r}).fast is not None
print("PEAK_MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def peak_memory_mb(adapters: list[str]) -> float:
    """Peak memory of a new process that answers on the fast path with the base and each adapter."""
    code = _MEMORY.format(variant=VARIANT, base=BASE_KEY, adapters=adapters, instruction=INSTRUCTIONS[0])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=resolve("."))
    for line in out.stdout.splitlines():
        if line.startswith("PEAK_MB "):
            return float(line.split()[1])
    raise RuntimeError(f"memory run failed:\n{out.stderr[-3000:]}")


def memory() -> str:
    from bench.serving import _adapters  # the shipped Gemma adapters, or two random ones of their shape

    with tempfile.TemporaryDirectory() as tmp:
        adapters = [str(a) for a in _adapters(Path(tmp))]
        alone = peak_memory_mb([])
        shared = peak_memory_mb(adapters)
    return (
        f"peak memory on the fast path: base alone {alone:.0f} MB, base + 2 adapters {shared:.0f} MB "
        f"({shared / alone:.3f}x; target <= 1.15x)"
    )


def starts() -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        first = start_to_first_token("auto", cache=os.path.join(tmp, "cold"))
    cached_fast = start_to_first_token("auto")
    cached_ref = start_to_first_token("off")
    return [
        f"new process to first token, first start (GGUF -> safetensors, our path): {first:6.1f} s",
        f"new process to first token, cached start, our path:                     {cached_fast:6.1f} s",
        f"new process to first token, cached start, transformers fp32:            {cached_ref:6.1f} s",
    ]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.decode", description=__doc__.split("\n\n")[0])
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument(
        "--prompts", type=int, default=6, help=f"how many of the {len(INSTRUCTIONS)} fixed prompts"
    )
    p.add_argument(
        "--skip-starts", action="store_true", help="skip the new-process start and memory measurements"
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="alternate our path and llama.cpp this many times; the ratio is the median of the rounds'",
    )
    args = p.parse_args(argv)

    import torch

    from vichat.prompts import get_template
    from vichat.registry import Registry

    registry = Registry.from_yaml(device="cpu", progress=lambda m: None)
    base = registry.loaded_base(BASE_KEY)
    template = get_template(registry.variant(VARIANT).template)
    prompts = [template.build(i) for i in INSTRUCTIONS[: args.prompts]]
    print(
        f"Gemma 3 270M ({base.spec.source}), {len(prompts)} prompts, {args.new_tokens} new tokens, greedy, "
        f"CPU threads {torch.get_num_threads()}"
    )
    from bench.gpu_check import cpu_info

    cpu = cpu_info()
    print(f"CPU: {cpu['model']}, {cpu['cores']} cores; flags: {' '.join(cpu['flags']) or 'none tracked'}")
    head_inputs: list = []
    reference = run_reference(base, prompts, args.new_tokens, head_inputs)
    # our path and llama.cpp in alternating rounds: a machine whose speed drifts (a VM's neighbours) moves
    # both sides of a round alike, and the median of the rounds' ratios is what is compared
    rounds = []
    for _ in range(max(1, args.rounds)):
        rounds.append(
            (
                run_fast(registry, base, prompts, args.new_tokens),
                run_llama_cpp(base, prompts, args.new_tokens),
            )
        )
    ours = merge([r[0] for r in rounds])
    llama = [  # a setting that crashed in any round is its skip line
        merge(list(rs)) if all(isinstance(x, Row) for x in rs) else next(x for x in rs if isinstance(x, str))
        for rs in zip(*(r[1] for r in rounds), strict=True)
    ]
    print(reference.line())
    print(ours.line())
    for row in llama:
        print(row if isinstance(row, str) else row.line())
    if base.fast.kernels is not None:
        print(f"kernels chosen at engine start (best of timed runs, ms per product; decode steps take 1 to "
              f"{base.fast.kernels.batch} rows, prompts more):")  # fmt: skip
        for line in base.fast.kernels.table():
            print("  " + line)
    print(candidate_recall(base, head_inputs))
    if not args.skip_starts:
        for line in starts():
            print(line)
        print(memory())
    print(
        f"fast engine memory beyond the base: {base.fast.nbytes / 2**20:.0f} MB (one copy per base, "
        "shared by every adapter)"
    )
    speedup = ours.tokens_per_s / reference.tokens_per_s
    measured = [row for row in llama if isinstance(row, Row)]
    if not measured:
        print(f"our path / baseline: {speedup:.2f} (no llama.cpp row, so no llama.cpp ratio; target >= 0.9)")
    else:
        best = max(row.tokens_per_s for row in measured)  # llama.cpp's faster thread setting
        ratios = [round_ratio(o, rows) for o, rows in rounds if any(isinstance(r, Row) for r in rows)]
        print(
            f"our path / llama.cpp: {statistics.median(ratios):.2f}, the median of {len(ratios)} alternating "
            f"rounds ({', '.join(f'{r:.2f}' for r in ratios)}; target >= 0.9; "
            f"baseline/llama.cpp {reference.tokens_per_s / best:.2f})"
        )


if __name__ == "__main__":
    main()
