"""Translation at real scale: thousands of real records through the cache and journal, killed and resumed.

    python -m bench.translate_scale --from runs/data/genmedgpt.en.jsonl runs/data/alpaca.en.jsonl \\
        [--latency 0.005] [--concurrency 8] [--kill-at 0.5]

The records (collected with ``train.collect``, e.g. GenMedGPT-5k and Alpaca-5k in English) go through
``python -m train.translate`` in a subprocess against ``testkit.translate_server`` on 127.0.0.1. When
the journal holds ``--kill-at`` of the records, the process is killed with SIGKILL (no chance to tidy up),
then the same command runs again and resumes. The stand-in logs every text it receives, so the run checks
what a user cares about: no record lost (the output holds every input record, in order, translated), and
no text translated twice except those that were in flight at the kill. It prints the wall time of both runs
and the peak memory of the translate process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from testkit.translate_server import FakeTranslateServer, ServerSettings
from train.translate import JOURNAL_SUFFIX
from vichat.checks import arg
from vichat.cli import run
from vichat.data import read_jsonl_strict
from vichat.errors import ViChatError

REPO = Path(__file__).resolve().parent.parent


def cpu_line() -> str:
    model, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "unknown CPU":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    simd = sorted(f for f in flags if f.startswith(("avx2", "avx512f", "amx")))
    return f"{model}, {os.cpu_count()} cores, {' '.join(simd) or 'no AVX2'}"


def journal_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def translate_cmd(source: Path, out: Path, cache: Path, url: str, concurrency: int) -> list[str]:
    return [
        sys.executable, "-m", "train.translate", str(source), str(out), "--url", url,
        "--cache", str(cache), "--concurrency", str(concurrency), "--no-progress",
    ]  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.translate_scale", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--from", dest="sources", nargs="+", required=True, metavar="JSONL")
    parser.add_argument("--latency", type=arg("--latency", minimum=0, maximum=5), default=0.005)
    parser.add_argument(
        "--concurrency", type=arg("--concurrency", minimum=1, maximum=64, integer=True), default=8
    )
    parser.add_argument("--kill-at", type=arg("--kill-at", above=0, below=1), default=0.5)
    args = parser.parse_args(argv)

    records = [r for path in args.sources for r in read_jsonl_strict(path)]
    if not records:
        raise ViChatError("no records in the given files")
    print(f"CPU: {cpu_line()}")
    work = Path(tempfile.mkdtemp(prefix="vichat-translate-scale-"))
    source, out, cache = work / "in.jsonl", work / "out.jsonl", work / "cache"
    with source.open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write(
                json.dumps({k: r[k] for k in ("id", "prompt", "response") if k in r}, ensure_ascii=False)
                + "\n"
            )
    journal = out.with_name(out.name + JOURNAL_SUFFIX)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with FakeTranslateServer(ServerSettings(latency_s=args.latency)) as server:
        cmd = translate_cmd(source, out, cache, server.url, args.concurrency)
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        target = int(len(records) * args.kill_at)
        while proc.poll() is None and journal_lines(journal) < target:
            time.sleep(0.05)
        if proc.poll() is not None:
            raise ViChatError(f"translate ended before the kill: {proc.stderr.read().decode()[-500:]}")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        first_s = time.perf_counter() - start
        journaled = journal_lines(journal)
        before_kill = Counter(server.texts)
        print(f"run 1: killed after {first_s:.1f} s with {journaled} of {len(records)} records journaled")

        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        second_s = time.perf_counter() - start
        if done.returncode != 0:
            raise ViChatError(f"the resumed run failed ({done.returncode}): {done.stderr[-800:]}")
        after = Counter(server.texts)
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

        # the reference: the same records translated in one uninterrupted run, with a fresh cache
        reference_out = work / "reference.jsonl"
        start = time.perf_counter()
        clean = subprocess.run(
            translate_cmd(source, reference_out, work / "cache-reference", server.url, args.concurrency),
            cwd=REPO, env=env, capture_output=True, text=True,
        )  # fmt: skip
        reference_s = time.perf_counter() - start
        if clean.returncode != 0:
            raise ViChatError(f"the uninterrupted run failed ({clean.returncode}): {clean.stderr[-800:]}")

    translated = read_jsonl_strict(out)
    reference = read_jsonl_strict(reference_out)
    lost = len(records) - len(translated)
    wrong = sum(1 for a, b in zip(reference, translated, strict=False) if a != b)
    repeated = sum(count - 1 for count in after.values() if count > 1)
    in_flight_bound = args.concurrency
    print(f"run 2 (resume): {second_s:.1f} s; requests {sum(after.values()) - sum(before_kill.values())}")
    print(
        f"killed + resumed: {first_s + second_s:.1f} s for {len(records)} records "
        f"(one uninterrupted run: {reference_s:.1f} s); peak RSS of a translate process {peak_mb:.0f} MB"
    )
    print(f"records lost: {lost}; records that differ from the uninterrupted run: {wrong}")
    print(f"texts requested twice: {repeated} (in flight at the kill: at most {in_flight_bound})")
    ok = lost == 0 and wrong == 0 and repeated <= in_flight_bound and not journal.exists()
    print("result:", "OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(run(main))
