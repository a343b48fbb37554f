"""bench.gpu_check on a machine without CUDA: every CUDA row SKIPPED with its reason, the CPU rows run, none FAILS.

The CUDA rows themselves only run on a GPU box (``python -m bench.gpu_check`` there); CI has none.
"""

import json

import pytest
import torch

from bench import gpu_check
from vichat.cli import run

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")


def _rows(path):
    return {row["name"]: row for row in json.loads(path.read_text(encoding="utf-8"))["rows"]}


@no_cuda
def test_quick_run_on_cpu_skips_cuda_rows_and_fails_nothing(tmp_path, capsys):
    out = tmp_path / "report" / "gpu.json"
    assert run(gpu_check.main, ["--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "device: cpu (no CUDA device" in printed
    assert f"torch {torch.__version__}" in printed and "bitsandbytes" in printed
    assert "cpu: " in printed and "flags" in printed
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["environment"]["device"] == "cpu" and report["counts"]["FAIL"] == 0
    rows = _rows(out)
    cuda = [r for r in rows.values() if r["device"] == "cuda"]
    assert len(cuda) == 6
    assert all(r["status"] == "SKIPPED" and r["detail"] == gpu_check.NO_CUDA for r in cuda)
    assert all(f"SKIPPED  cuda  {r['name']}" in printed and "(no CUDA device)" in printed for r in cuda)
    cpu = {name: r for name, r in rows.items() if r["device"] == "cpu"}
    assert not any("270M" in name for name in cpu)  # --quick: no real Gemma row
    for arch in ("BLOOM", "GPT-J"):
        row = cpu[f"tiny {arch}, 8-bit asked: float32 fallback said, answering"]
        assert row["status"] == "PASS" and "8-bit loading needs CUDA" in row["detail"]
    lora = cpu["LoRA step, tiny Gemma 3 fp32: padded = padding-free loss"]
    assert lora["status"] == "PASS" and "<= 0.0001" in lora["detail"]
    fast = cpu["fast CPU path applies (tiny Gemma 3, --quick)"]
    assert fast["status"] == "PASS" or fast["detail"].startswith("the fast path does not apply")


def test_rows_say_pass_fail_or_skipped_with_the_reason_and_a_failure_exits_1(monkeypatch, capsys):
    def broken():
        raise AssertionError("padded loss 1.0 vs padding-free 2.0")

    def stops():
        raise SystemExit("train.lora run failed")  # what bench.train does: a row, not the end of the check

    def skipped():
        raise gpu_check.Skip("not here")

    plan = [("works", "cpu", lambda: "fine"), ("broken", "cpu", broken), ("stops", "cpu", stops)]
    plan.append(("skipped", "cpu", skipped))
    monkeypatch.setattr(gpu_check, "plan", lambda ctx: plan)
    assert run(gpu_check.main, ["--quick"]) == 1
    printed = capsys.readouterr().out
    assert "PASS     cpu   works" in printed and printed.rstrip().endswith("1 passed, 2 failed, 1 skipped")
    assert "(AssertionError: padded loss 1.0 vs padding-free 2.0)" in printed
    assert "(SystemExit: train.lora run failed)" in printed and "(not here)" in printed


@no_cuda
def test_a_cuda_row_is_never_run_without_cuda():
    def must_not_run():
        raise AssertionError("ran")

    row = gpu_check.run_check("x", "cuda", must_not_run)
    assert row.status == "SKIPPED" and row.detail == "no CUDA device"


@pytest.mark.slow
@no_cuda
def test_full_run_on_cpu_checks_gemma_270m_padded_equals_padding_free(tmp_path):
    out = tmp_path / "gpu.json"
    assert run(gpu_check.main, ["--out", str(out)]) == 0
    rows = _rows(out)
    lora = rows["LoRA step, Gemma 3 270M fp32: padded = padding-free loss"]
    assert lora["status"] == "PASS" and "float32" in lora["detail"]
    assert rows["bench.train baseline vs ours (Gemma 3 270M, 32 examples)"]["status"] == "SKIPPED"
