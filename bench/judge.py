"""Judge throughput: 80 verdicts against a local OpenAI-compatible server answering in 200 ms each,
judged sequentially and then concurrently (fresh caches, the real ``openai`` client), and a rerun that
must make zero calls. The last line prints the speedup against the sequential run of the same process.

    python -m bench.judge [--pairs 80] [--latency 0.2] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from eval.client import ChatClient, ClientConfig
from eval.judge import run_judgments
from eval.sets import GENERAL_CATEGORIES, EvalSet, Question
from eval.verdicts import FORWARD, JudgePrompt, JudgmentCache, build_tasks, pending
from testkit.openai_server import Behaviour, FakeOpenAIServer
from vichat.checks import arg

TARGET = 6.0


def synthetic_set(n: int) -> EvalSet:
    categories = list(GENERAL_CATEGORIES)
    questions = tuple(
        Question(f"q{i:03d}", categories[i % len(categories)], f"Câu hỏi số {i}?", f"Trả lời {i} [score=8]")
        for i in range(n)
    )
    return EvalSet("bench", None, questions)


def timed_run(
    tasks, cache_path: Path, client: ChatClient, prompt: JudgePrompt, concurrency: int
) -> tuple[float, int]:
    cache = JudgmentCache(cache_path)
    todo = pending(tasks, cache)
    start = time.perf_counter()
    result = run_judgments(todo, cache, client, "gpt-4", prompt, concurrency=concurrency, progress=False)
    return time.perf_counter() - start, result.called


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=arg("--pairs", minimum=1, maximum=100_000, integer=True), default=80)
    parser.add_argument("--latency", type=arg("--latency", minimum=0, maximum=60), default=0.2)
    parser.add_argument(
        "--concurrency", type=arg("--concurrency", minimum=1, maximum=1024, integer=True), default=8
    )
    args = parser.parse_args(argv)

    eval_set = synthetic_set(args.pairs)
    answers = {
        "reference": {q.id: q.reference for q in eval_set.questions},
        "model": {
            q.id: f"Mô hình trả lời câu {q.id} [score={3 + int(q.id[1:]) % 6}]" for q in eval_set.questions
        },
    }
    prompt = JudgePrompt.load()
    with FakeOpenAIServer(Behaviour(latency=args.latency)) as server, tempfile.TemporaryDirectory() as tmp:
        tasks, _ = build_tasks(
            eval_set, answers, [("reference", "model")], (FORWARD,), "gpt-4", prompt.version,
            endpoint=server.url,
        )  # fmt: skip
        config = ClientConfig(
            base_url=server.url, api_key="sk-bench-local", timeout=30, max_retries=0, retries=0
        )
        client = ChatClient(config)
        seq_s, seq_calls = timed_run(tasks, Path(tmp) / "sequential.jsonl", client, prompt, 1)
        print(f"sequential: {seq_calls} verdicts in {seq_s:.2f}s ({seq_calls / seq_s:.1f}/s)")
        conc_path = Path(tmp) / "concurrent.jsonl"
        conc_s, conc_calls = timed_run(tasks, conc_path, client, prompt, args.concurrency)
        print(
            f"concurrent ({args.concurrency}): {conc_calls} verdicts in {conc_s:.2f}s ({conc_calls / conc_s:.1f}/s)"
        )
        before = server.calls
        rerun_s, rerun_calls = timed_run(tasks, conc_path, client, prompt, args.concurrency)
        print(f"rerun on the concurrent cache: {server.calls - before} calls in {rerun_s:.3f}s")
        if seq_calls != args.pairs or conc_calls != args.pairs or rerun_calls or server.calls != before:
            print("error: a run made the wrong number of calls")
            return 1
    speedup = seq_s / conc_s
    print(f"speedup concurrent/sequential: {speedup:.1f}x (target >= {TARGET:g}x)")
    return 0 if speedup >= TARGET else 1


if __name__ == "__main__":
    from vichat.cli import run

    raise SystemExit(run(main))
