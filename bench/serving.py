"""Serving benchmark: one base shared by its adapters vs merged copies, adapter switch, cold vs cached load.

    python -m bench.serving

Each scenario runs in its own process so peak memory (max RSS) is its own. Uses the embedded default
(Gemma 3 270M) and the shipped Gemma adapters, or random LoRA adapters of the same shape if those are absent.
Last line: peak memory of one base + two adapters over the base alone (target <= 1.15x).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vichat.paths import resolve

PROMPT = "Hãy giới thiệu ngắn gọn về vịnh Hạ Long."


def _adapters(tmp: Path) -> list[Path]:
    shipped = [resolve("assets/adapters/gemma-chat"), resolve("assets/adapters/gemma-doctor")]
    if all((p / "adapter_model.safetensors").is_file() for p in shipped):
        return shipped
    import torch
    from peft import LoraConfig, get_peft_model

    from vichat.registry import Registry

    base = Registry.from_yaml(progress=lambda m: None).loaded_base("gemma-270m")
    out = []
    for i in range(2):
        torch.manual_seed(i)
        cfg = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        model = get_peft_model(base.model, cfg, adapter_name=f"a{i}")
        model.save_pretrained(tmp / f"a{i}", selected_adapters=[f"a{i}"])
        model.unload()
        base.model = model.get_base_model()
        out.append(tmp / f"a{i}" / f"a{i}" if (tmp / f"a{i}" / f"a{i}").exists() else tmp / f"a{i}")
    return out


def scenario(name: str, adapters: list[str]) -> dict:
    """Runs inside a child process; returns its measurements."""
    import torch

    from vichat.generation import GenerationSettings, generate_batch
    from vichat.loading import BaseSpec, load_base
    from vichat.registry import Registry

    s = GenerationSettings(max_new_tokens=8, temperature=0)
    reg = Registry.from_yaml(progress=lambda m: None, device="cpu")
    spec: BaseSpec = reg.bases["gemma-270m"]
    t0 = time.perf_counter()
    base = load_base(spec, "cpu", progress=lambda m: None)
    result = {"load_s": time.perf_counter() - t0, "from_cache": base.from_cache}
    prompt = reg.template("Gemma-Base").build(PROMPT)
    if name == "base":
        generate_batch(base.model, base.tokenizer, [prompt], s)
    elif name == "shared":
        t = time.perf_counter()
        for i, a in enumerate(adapters):
            base.add_adapter(f"a{i}", Path(a))
        result["adapter_load_s"] = (time.perf_counter() - t) / len(adapters)
        switches = []
        for _ in range(3):
            for name_ in ["a0", "a1", None]:
                t = time.perf_counter()
                with base.use(name_) as model:
                    switches.append(time.perf_counter() - t)
                    generate_batch(model, base.tokenizer, [prompt], s)
        result["switch_s"] = max(switches)
    elif name == "merged":
        from peft import PeftModel

        models = []
        for i, a in enumerate(adapters):
            copy = base if i == 0 else load_base(spec, "cpu", progress=lambda m: None)
            merged = PeftModel.from_pretrained(copy.model, a).merge_and_unload()
            generate_batch(merged, base.tokenizer, [prompt], s)
            models.append(merged)
    del torch
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def run_child(name: str, adapters: list[Path], env: dict | None = None) -> dict:
    code = (
        "import json,sys; from bench.serving import scenario; "
        f"print('RESULT', json.dumps(scenario({name!r}, {[str(a) for a in adapters]!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=resolve("."),
    )
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"scenario {name} failed:\n{out.stderr[-3000:]}")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        adapters = _adapters(tmp)
        cold = run_child("base", adapters, {"VICHAT_CACHE": str(tmp / "cold-cache")})
        base = run_child("base", adapters)
        shared = run_child("shared", adapters)
        merged = run_child("merged", adapters)
    print(f"load, first start (GGUF -> safetensors cache): {cold['load_s']:.1f} s")
    print(
        f"load, cached start:                          {base['load_s']:.1f} s "
        f"({cold['load_s'] / base['load_s']:.1f}x faster)"
    )
    print(f"peak memory, one base alone:                 {base['peak_rss_mb']:.0f} MB")
    print(f"peak memory, one base + 2 adapters:          {shared['peak_rss_mb']:.0f} MB")
    print(f"peak memory, two merged copies:              {merged['peak_rss_mb']:.0f} MB")
    print(f"adapter load onto the base:                  {shared['adapter_load_s'] * 1000:.0f} ms")
    print(f"adapter switch (worst of 9):                 {shared['switch_s'] * 1000:.3f} ms")
    ratio = shared["peak_rss_mb"] / base["peak_rss_mb"]
    print(
        f"peak memory base+2 adapters / base alone: {ratio:.3f}x (target <= 1.15x; "
        f"two merged copies: {merged['peak_rss_mb'] / base['peak_rss_mb']:.2f}x)"
    )


if __name__ == "__main__":
    main()
