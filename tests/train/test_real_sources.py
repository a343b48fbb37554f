"""train.collect on the real published files in ../shared/data, when that folder is there.

A fresh clone has no ../shared, so this module skips itself there; every behaviour it checks is also
covered by tests/train/test_collect.py on small fixtures in the same layouts. The expected counts are
those of the files named (with sha256) in ../shared/data/MANIFEST.tsv.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from train.collect import main
from vichat.cli import run
from vichat.data import read_jsonl

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"no real data at {DATA} (not part of a clone)")

CASES = {  # source: (path under DATA, rows read, records written, dropped by reason (a substring))
    "alpaca-vi": ("alpaca-vi", 50_000, 50_000, {}),
    "lima-vi": (
        "lima-vi",
        1_030,
        226,
        {
            "answer cut off mid-sentence": 599,
            "not in Vietnamese": 112,
            "translation failed": 80,
            "not text (null": 13,
        },
    ),
    "vimedaqa": ("vimedaqa/validation-00000-of-00001.parquet", 2_215, 2_215, {}),
    "genmedgpt": ("chatdoctor/chatdoctor5k.json", 5_452, 5_452, {}),
    "alpaca": ("alpaca-en/alpaca_5000.json", 5_000, 4_998, {"empty prompt or answer": 2}),
}


@pytest.mark.parametrize("source", sorted(CASES))
def test_collect_reads_the_real_files_as_published(tmp_path, source):
    path, rows, written, drops = CASES[source]
    out = tmp_path / f"{source}.jsonl"
    stdout = io.StringIO()

    with contextlib.redirect_stdout(stdout):
        code = run(main, ["--source", source, "--from", str(DATA / path), "--out", str(out)])

    text = stdout.getvalue()
    assert code == 0, text
    assert f"wrote {written:,} {source} records" in text and f"{rows:,} rows read" in text
    for reason, number in drops.items():
        assert any(
            line.startswith(f"  dropped {number:,}: ") and reason in line for line in text.splitlines()
        ), text
    result = read_jsonl(out)
    assert result.ok and len(result.records) == written
    assert len({record["id"] for record in result.records}) == written
