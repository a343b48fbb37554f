"""The report on a small fixture whose every score is known by hand (see conftest's table)."""

import csv

import pytest

from eval.judge import main as judge_main
from eval.offline import TOTAL, by_category, chrf_scores, compute_nll, nll_path, read_nll
from eval.offline import main as offline_main
from eval.report import build_report, discover_variants, main
from eval.sets import load_eval_set
from vichat.cli import run


class StandInScorer:
    """registry.nll's shape: here the NLL of a reference is its length / 10."""

    def __init__(self):
        self.calls = 0

    def nll(self, variant_name, instructions, references):
        self.calls += 1
        return [len(r) / 10 for r in references]


@pytest.fixture()
def judged(judge_argv, server, workdir):
    assert run(judge_main, judge_argv("--variants", "A,B", "--single-order")) == 0
    assert run(judge_main, judge_argv("--pair", "A,B", "--single-order")) == 0
    assert server.calls == 12
    return workdir


def test_report_by_hand(judged, tiny_set, tmp_path, capsys):
    report_dir = tmp_path / "report"
    argv = ["--set", str(tiny_set), "--out-dir", str(judged), "--report-dir", str(report_dir)]
    assert run(main, argv) == 0
    md = (report_dir / "tiny.md").read_text(encoding="utf-8")
    # A: Generic 100 x mean(6/8, 5/10, 5/5) = 75; Knowledge 4/8 = 50; Total 100 x mean of 4 = 68.75;
    #    ratio of sums 100 x 20/31 = 64.52. B: 90, 100, 92.50, 100 x 29/31 = 93.55.
    assert (
        "| category | n | A | B | Bloomz (paper) | Bloomz-Chat (paper) | GPTJ (paper) | GPTJ-Chat (paper) |"
        in md
    )
    assert "| Generic | 3 | 75.00 | 90.00 | 49.82 | 91.25 | 31.89 | 61.11 |" in md
    assert "| Knowledge | 1 | 50.00 | 100.00 | 44.11 | 87.50 | 33.22 | 62.22 |" in md
    assert "| Total | 4 | 68.75 | 92.50 | 44.26 | 73.55 | 20.80 | 39.90 |" in md
    assert "| Total (ratio of sums) |  | 64.52 | 93.55 |" in md
    assert "Bloomz 43.64" in md  # the paper's rows vs its printed total
    assert "| A | B | 1 | 0 | 3 | 25.0% |" in md  # head-to-head: A wins only g3
    assert "| A | 0 | 1 | 3 |" in md  # A vs reference: no win, a tie on g3 (5 = 5), three losses
    rows = list(csv.reader((report_dir / "tiny.csv").open(encoding="utf-8")))
    assert rows[0][:4] == ["category", "n", "A", "B"]
    assert rows[3][:4] == ["Total", "4", "68.75", "92.50"]
    png = report_dir / "tiny.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wrote" in capsys.readouterr().out


def test_report_without_verdicts_shows_the_paper(workdir, tiny_set, tmp_path):
    report_dir = tmp_path / "r"
    assert (
        run(main, ["--set", str(tiny_set), "--out-dir", str(workdir), "--report-dir", str(report_dir)]) == 0
    )
    md = (report_dir / "tiny.md").read_text(encoding="utf-8")
    assert "No verdicts yet" in md and "| Generic | 49.82 | 91.25 | 31.89 | 61.11 |" in md


def test_discover_variants(workdir, tiny_set):
    assert discover_variants(workdir, load_eval_set(tiny_set), "reference") == ["A", "B"]


def test_chrf_and_nll_offline(workdir, tiny_set, capsys):
    es = load_eval_set(tiny_set)
    same = chrf_scores(es, {q.id: q.reference for q in es.questions})
    assert all(v == pytest.approx(100.0) for v in same.values())
    partial = by_category(es, chrf_scores(es, {"g1": "hoàn toàn khác"}))
    assert partial["Knowledge"] is None and partial[TOTAL] == partial["Generic"] < 20
    scorer = StandInScorer()
    assert compute_nll(es, "A", scorer, workdir, batch_size=3, progress=False) == 4
    assert compute_nll(es, "A", scorer, workdir, progress=False) == 0 and scorer.calls == 2
    assert read_nll(workdir, "tiny", "A")["g1"] == pytest.approx(len("Đáp g1 [score=8]") / 10)
    assert nll_path(workdir, "tiny", "A").exists()
    assert run(offline_main, ["--set", str(tiny_set), "--variants", "A,B", "--out-dir", str(workdir)]) == 0
    out = capsys.readouterr().out
    assert "chrF against the references" in out and "mean NLL" in out
    data = build_report(es, ["A", "B"], workdir)
    assert data.nll["A"][TOTAL] == pytest.approx((16 + 17 + 16 + 16) / 40) and "B" not in data.nll
    assert set(data.chrf) == {"A", "B"}


def test_offline_nll_through_the_real_registry(tiny_set, tmp_path, tiny_models_yaml, write_answers):
    es = load_eval_set(tiny_set)
    write_answers(tmp_path, "tiny", "bloom-chat", {"g1": "Hà Nội"})
    argv = ["--set", str(tiny_set), "--variants", "reference,bloom-chat", "--out-dir", str(tmp_path), "--nll"]
    assert run(offline_main, [*argv, "--models", str(tiny_models_yaml)]) == 0  # chrF on the one answer
    nll = read_nll(tmp_path, "tiny", "bloom-chat")
    assert set(nll) == {q.id for q in es.questions} and all(v > 0 for v in nll.values())
    assert not nll_path(tmp_path, "tiny", "reference").exists()  # the reference has no likelihood


def test_medical_report_row_beside_the_paper(tmp_path, server, judge_argv, write_answers):
    import json

    path = tmp_path / "med.jsonl"
    rows = [
        {
            "id": f"m{i}",
            "category": "Medical",
            "question": f"Tôi bị đau {i}?",
            "reference": f"Bác sĩ {i} [score=8]",
        }
        for i in (1, 2)
    ]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "med-runs"
    write_answers(out, "med", "Bloomz-Doctor", {"m1": "Uống thuốc [score=6]", "m2": "Nghỉ ngơi [score=7]"})
    argv = judge_argv("--variants", "Bloomz-Doctor", "--single-order")
    argv[argv.index("--set") + 1], argv[argv.index("--out-dir") + 1] = str(path), str(out)
    assert run(judge_main, argv) == 0
    assert run(main, ["--set", str(path), "--out-dir", str(out)]) == 0
    md = (out / "report" / "med.md").read_text(encoding="utf-8")
    # 100 x mean(6/8, 7/8) = 81.25, beside the paper's 73.92 and 59.85
    assert "| category | n | Bloomz-Doctor | Bloomz-Doctor (paper) | GPTJ-Doctor (paper) |" in md
    assert "| Medical | 2 | 81.25 | 73.92 | 59.85 |" in md


def test_report_diagnoses_every_comparison(judged, tiny_set, tmp_path):
    """Judged in one order only: every comparison is listed, none can show position bias, and says why."""
    import json

    report_dir = tmp_path / "report"
    argv = ["--set", str(tiny_set), "--out-dir", str(judged), "--report-dir", str(report_dir)]
    assert run(main, argv) == 0
    md = (report_dir / "tiny.md").read_text(encoding="utf-8")
    assert "## Judge diagnostics" in md
    for label in ("reference vs A", "reference vs B", "A vs B"):
        assert f"| {label} | 0/4 | - | - |" in md
        assert f"{label}: no question was judged in both orders" in md
    rows = [
        json.loads(line) for line in (report_dir / "tiny.questions.jsonl").read_text("utf-8").splitlines()
    ]
    assert len(rows) == 12 and {(r["first"], r["second"]) for r in rows} == {
        ("reference", "A"),
        ("reference", "B"),
        ("A", "B"),
    }
    assert all(r["forward"]["status"] == "scored" and r["swapped"]["status"] == "missing" for r in rows)
