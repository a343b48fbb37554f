"""Translation throughput: concurrent requests against one at a time, on a local stand-in service.

    python -m bench.translate [--texts 200] [--latency 0.1] [--concurrency 16]

The same texts (prompt and response of ``texts / 2`` records) go through ``train.translate``
against ``testkit.translate_server`` on 127.0.0.1, which waits ``--latency`` seconds per
request like a remote service: first with concurrency 1, then with ``--concurrency``, each
with a fresh cache. A rerun of the concurrent job must then send zero requests (everything
is cached). The last line is the speedup, measured in this run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from testkit.translate_server import FakeTranslateServer, ServerSettings
from train.translate import TranslateSettings, translate_file
from vichat.checks import arg
from vichat.cli import run

TARGET_SPEEDUP = 5.0


@dataclass
class BenchArgs:
    texts: int = 200
    latency: float = 0.1
    concurrency: int = 16


def write_input(path: Path, texts: int) -> None:
    """``texts`` distinct English texts as prompt/response records."""
    with path.open("w", encoding="utf-8") as stream:
        for index in range((texts + 1) // 2):
            record = {
                "id": f"bench-{index}",
                "prompt": f"Question {index}: how do plants turn sunlight into energy?",
                "response": f"Answer {index}: plants use photosynthesis to make sugar from light, water and air.",
            }
            stream.write(json.dumps(record) + "\n")


def timed_run(
    server: FakeTranslateServer, source: Path, out: Path, cache: Path, concurrency: int
) -> tuple[float, int]:
    """Seconds taken and requests the server received for one translation run."""
    settings = TranslateSettings(
        url=server.url, cache_dir=str(cache), concurrency=concurrency, progress=False
    )
    server.reset()
    start = time.perf_counter()
    stats = translate_file(source, out, settings)
    elapsed = time.perf_counter() - start
    if stats.failed:
        raise RuntimeError(
            f"{stats.failed} records failed during the benchmark (a bug: the stand-in never fails)"
        )
    return elapsed, server.request_count


def measure(args: BenchArgs) -> float:
    with (
        tempfile.TemporaryDirectory(prefix="vichat-bench-") as folder,
        FakeTranslateServer(ServerSettings(latency_s=args.latency)) as server,
    ):
        root = Path(folder)
        source = root / "in.jsonl"
        write_input(source, args.texts)
        print(
            f"{args.texts} texts, stand-in service at {server.url} answering in {args.latency * 1000:.0f} ms"
        )
        sequential, seq_requests = timed_run(server, source, root / "seq.jsonl", root / "seq-cache", 1)
        print(f"sequential (concurrency 1): {sequential:.2f} s, {seq_requests} requests")
        concurrent, con_requests = timed_run(
            server, source, root / "con.jsonl", root / "con-cache", args.concurrency
        )
        print(f"concurrent (concurrency {args.concurrency}): {concurrent:.2f} s, {con_requests} requests")
        same = (root / "seq.jsonl").read_bytes() == (root / "con.jsonl").read_bytes()
        print(f"outputs identical: {same}")
        rerun, rerun_requests = timed_run(
            server, source, root / "con.jsonl", root / "con-cache", args.concurrency
        )
        print(f"rerun (cached): {rerun:.2f} s, {rerun_requests} requests (must be 0)")
    speedup = sequential / concurrent
    print(f"speedup concurrent/sequential: {speedup:.1f}x (target >= {TARGET_SPEEDUP:g}x)")
    return speedup


def main(argv: Sequence[str] | None = None) -> int:
    defaults = BenchArgs()
    parser = argparse.ArgumentParser(prog="python -m bench.translate", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--texts", type=arg("--texts", minimum=2, maximum=1_000_000, integer=True), default=defaults.texts
    )
    parser.add_argument(
        "--latency",
        type=arg("--latency", minimum=0, maximum=60),
        default=defaults.latency,
        help="seconds per request",
    )
    parser.add_argument(
        "--concurrency",
        type=arg("--concurrency", minimum=1, maximum=256, integer=True),
        default=defaults.concurrency,
    )
    args = BenchArgs(**vars(parser.parse_args(argv)))
    measure(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
