"""Decontamination: find training records that restate an eval question, so training never sees the test.

A leak is rarely the same wording. Our eval questions and training prompts were written in the same style
by the same team, and a leaked case comes back as "nam, 34 tuổi, ho ba tuần sau cảm" where the eval says
"tôi 35 tuổi, ho khan kéo dài từ sau đợt cảm". So the measure works on content, not strings, offline and
with no model:

1. **Normalise** (:func:`normalise`): Unicode NFC, case folding, đ -> d and the diacritics stripped (so a
   missing accent or a different Unicode composition is no difference), digits kept, every other
   character a word break. Vietnamese writes one syllable per word, so the "words" are syllables.
2. **Features** (:func:`features`): syllable bigrams (most Vietnamese words are two syllables: "mệt mỏi",
   "sụt cân"), except those of two function words ("như thế", "là gì"), plus the syllables that are not
   function words. Numbers are dropped: a restated case changes the age and the number of days, and two
   different cases share "35 tuổi".
3. **Weights**: TF-IDF with sub-linear term frequency, the IDF taken over the eval questions and the
   training prompts together, so stock phrases that every patient question holds weigh little and the
   case's own words ("ferritin", "rong kinh", "blockchain") weigh much.
4. **Score** (:func:`cosine_matrix`): the cosine of an eval question against a training *prompt*, one
   sparse matrix product (scipy) for all questions against all records: 180 questions x 50,000 Alpaca-vi
   records take about 4 s. Responses are not compared: two answers to different questions share far
   more advice boilerplate than two questions share words. A pair must share at least 3 features
   (:data:`MIN_SHARED`): a two-word prompt can have a high cosine with a long question, not restate it.

A record is a near-duplicate when its best score against some eval question reaches the threshold.
:data:`THRESHOLD` (0.18) was tuned on the project's own data: each of the 180 eval questions and its
closest training prompt read and labelled by hand (87 restate a training record, 78 do not, 15 are
unclear). At 0.18, 86 of the 87 restated ones score at or above it (recall 0.99) and 16 of the 78
others do (question-level precision 0.84); the misses above it are the same *task* with other data
("giải phương trình bậc hai" with other numbers, a product description for another product). Variants
tried on the same labels, with about the same or worse separation (ROC AUC 0.92-0.955 against 0.95):
with numbers, no bigrams, skip-grams, character 4- and 5-grams, and the score's margin over the next
best match. A lower threshold is a safe side to err on: dropping a training record costs little, a
leak makes the eval meaningless. ``python -m train.decontam`` lists the pairs and their scores.

CLI::

    python -m train.decontam [FILES...] [--eval assets/eval/*.jsonl] [--threshold 0.30] [--show 20]

lists every eval question that has a near-duplicate in FILES (default: ``assets/data/*.jsonl``), best
match first, and exits 1 when there is one.
"""

from __future__ import annotations

import argparse
import glob
import math
import re
import sys
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse

from vichat import checks
from vichat.data import read_jsonl_strict
from vichat.errors import DataError
from vichat.paths import REPO_ROOT

THRESHOLD = 0.18
MIN_SHARED = 3
EVAL_FILES = ("assets/eval/general.jsonl", "assets/eval/medical.jsonl")
REVIEWED_FILE = "assets/eval/decontam_reviewed.jsonl"
DATA_GLOB = "assets/data/*.jsonl"

# Function words (without diacritics, as after normalise) that say nothing about which case or task
# a text is: pronouns, particles, politeness, connectives, question frames ("khác nhau", "bao nhiêu").
# Unigrams are filtered; a bigram is kept unless both its syllables are on the list ("bi ho" is content).
_STOPWORD_TEXT = """
    a ah ai anh ba bac ban bi bo cac cai cam chao chi cho chu co con cu cua cung da dang day de den di
    do duoc em gi gio giup ha hay hoi hon khi khong la lai lam len luc ma may minh mot moi muon nao
    nay ne neu nhe nhieu nhu nhung nua o oi phai qua ra rang rat roi sao se si so tai the thi thay
    thuong toi trong tu tuoi uh va vao ve vi voi vay xin nhau khac viet bao
    """
STOPWORDS = frozenset(_STOPWORD_TEXT.split())

_WORD = re.compile(r"[0-9]+|[^\W\d_]+")


def normalise(text: str) -> list[str]:
    """Syllables of ``text``: NFC, case-folded, diacritics and đ folded, punctuation dropped.

    Lone surrogates (possible in JSON input) are dropped rather than crashing the encoder.
    """
    text = unicodedata.normalize("NFC", text).casefold().replace("đ", "d")
    stripped = "".join(char for char in unicodedata.normalize("NFD", text) if not unicodedata.combining(char))
    stripped = stripped.encode("utf-8", "ignore").decode("utf-8")
    return _WORD.findall(stripped)


def features(text: str) -> dict[str, float]:
    """Sub-linear term frequencies of content syllables and syllable bigrams.

    Numbers are dropped (a restated case changes the age and the days; two different cases share
    "35 tuổi"); a bigram of two function words ("nhu the", "la gi") is dropped too.
    """
    words = [word for word in normalise(text) if not word.isdigit()]
    counts: dict[str, int] = {}
    for word in words:
        if word not in STOPWORDS and len(word) > 1:
            counts[word] = counts.get(word, 0) + 1
    for left, right in zip(words, words[1:], strict=False):
        if left in STOPWORDS and right in STOPWORDS:
            continue
        key = f"{left} {right}"
        counts[key] = counts.get(key, 0) + 1
    return {key: 1.0 + math.log(count) for key, count in counts.items()}


@dataclass
class Vectoriser:
    """TF-IDF vectors over a fixed vocabulary (built from the texts it is fitted on)."""

    vocabulary: dict[str, int]
    idf: np.ndarray
    unseen_idf: float = 1.0
    """The weight of a feature no fitted text had (it still counts in a vector's length)."""

    @classmethod
    def fit(cls, texts: Iterable[str]) -> Vectoriser:
        document_frequency: dict[str, int] = {}
        count = 0
        for text in texts:
            count += 1
            for key in features(text):
                document_frequency[key] = document_frequency.get(key, 0) + 1
        vocabulary = {key: index for index, key in enumerate(document_frequency)}
        frequencies = np.fromiter(document_frequency.values(), dtype=np.float64, count=len(vocabulary))
        idf = np.log((1.0 + count) / (1.0 + frequencies)) + 1.0
        return cls(vocabulary, idf, float(np.log(1.0 + count) + 1.0))

    def transform(self, texts: Sequence[str]) -> sparse.csr_matrix:
        rows: list[int] = []
        cols: list[int] = []
        values: list[float] = []
        unseen = np.zeros(len(texts))
        for row, text in enumerate(texts):
            for key, tf in features(text).items():
                column = self.vocabulary.get(key)
                if column is not None:
                    rows.append(row)
                    cols.append(column)
                    values.append(tf * self.idf[column])
                else:
                    unseen[row] += (tf * self.unseen_idf) ** 2
        matrix = sparse.csr_matrix(
            (values, (rows, cols)), shape=(len(texts), len(self.vocabulary)), dtype=np.float64
        )
        norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel() + unseen)
        norms[norms == 0] = 1.0
        return sparse.csr_matrix(sparse.diags(1.0 / norms) @ matrix)


def cosine_matrix(
    questions: Sequence[str], prompts: Sequence[str], reference: Sequence[str] | None = None
) -> np.ndarray:
    """Dense ``len(questions) x len(prompts)`` cosine similarities.

    The TF-IDF weights are fitted on the questions and ``reference`` (default: the prompts themselves).
    ``train.build`` passes our own data (:func:`our_prompts`) as the reference, so a record scores the same
    whatever else is in the mixture, and the threshold means what it meant when it was tuned.

    A pair sharing fewer than :data:`MIN_SHARED` features scores 0: a two-word prompt ("abc") can
    have a high cosine with a long question that holds its word, but it cannot restate it.
    """
    if not questions or not prompts:
        return np.zeros((len(questions), len(prompts)))
    vectoriser = Vectoriser.fit([*questions, *(prompts if reference is None else reference)])
    q = vectoriser.transform(questions)
    p = vectoriser.transform(prompts)
    scores = np.asarray((q @ p.T).todense())
    shared = np.asarray((_binary(q) @ _binary(p).T).todense())
    scores[shared < MIN_SHARED] = 0.0
    return scores


def _binary(matrix: sparse.csr_matrix) -> sparse.csr_matrix:
    ones = matrix.copy()
    ones.data = np.ones_like(ones.data)
    return ones


# --------------------------------------------------------------------------- eval questions


@dataclass(frozen=True)
class EvalQuestion:
    id: str
    text: str
    source: str


def eval_text(record: dict[str, Any]) -> str | None:
    """The question of an eval record (``question``), or a prompt (``prompt``), whichever it has."""
    for key in ("question", "prompt"):
        value = record.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return None


def load_eval_questions(paths: Sequence[str | Path] = EVAL_FILES) -> list[EvalQuestion]:
    """Every question of the eval files; a file with a bad line stops with file:line."""
    questions: list[EvalQuestion] = []
    for path in paths:
        records = read_jsonl_strict(path, fields=())
        for number, record in enumerate(records, start=1):
            text = eval_text(record)
            if text is None:
                raise DataError(f'{path}: record {number} has no "question" (or "prompt") text')
            questions.append(
                EvalQuestion(str(record.get("id", f"{Path(path).stem}-{number}")), text, str(path))
            )
    return questions


# --------------------------------------------------------------------------- matching


@dataclass(frozen=True)
class Match:
    """A training record (by index) whose prompt restates an eval question."""

    record: int
    question: EvalQuestion
    score: float


def load_reviewed(path: str | Path | None = REVIEWED_FILE) -> frozenset[tuple[str, str]]:
    """Pairs (eval id, training record id) that a person read and judged *not* a restatement.

    The measure scores words, so two prompts with the same framing and different subjects ("Điều gì sẽ xảy
    ra nếu ... Mặt Trăng" and "... ong mật") can cross the threshold. Each line of the file names the pair,
    the verdict and why; only those exact pairs are exempt, so a new record or a changed id is checked again.
    """
    if path is None:
        return frozenset()
    target = Path(path) if Path(path).is_absolute() else REPO_ROOT / path
    if not target.exists():
        return frozenset()
    pairs = set()
    for number, record in enumerate(read_jsonl_strict(target, fields=("eval", "record", "why")), start=1):
        if not str(record["why"]).strip():
            raise DataError(f"{target}:{number}: a reviewed pair needs a reason in \"why\"")
        pairs.add((str(record["eval"]), str(record["record"])))
    return frozenset(pairs)


def our_prompts(pattern: str = DATA_GLOB) -> list[str]:
    """The prompts of the project's own data: the fixed corpus the weights are fitted on in a build."""
    return [r["prompt"] for path in sorted(glob.glob(str(REPO_ROOT / pattern))) for r in read_jsonl_strict(path)]


def _scores(
    prompts: Sequence[str],
    questions: Sequence[EvalQuestion],
    record_ids: Sequence[str | None] | None,
    reviewed: frozenset[tuple[str, str]],
    reference: Sequence[str] | None = None,
) -> np.ndarray:
    scores = cosine_matrix([q.text for q in questions], prompts, reference)
    if reviewed and record_ids is not None:
        rows = {q.id: i for i, q in enumerate(questions)}
        for column, record_id in enumerate(record_ids):
            for question_id, reviewed_id in reviewed:
                if reviewed_id == record_id and question_id in rows:
                    scores[rows[question_id], column] = 0.0
    return scores


def find_matches(
    prompts: Sequence[str],
    questions: Sequence[EvalQuestion],
    threshold: float = THRESHOLD,
    record_ids: Sequence[str | None] | None = None,
    reviewed: frozenset[tuple[str, str]] = frozenset(),
    reference: Sequence[str] | None = None,
) -> list[Match]:
    """For every prompt whose best eval score reaches ``threshold``: that question and score.

    A pair in ``reviewed`` (eval id, record id; see :func:`load_reviewed`) does not count.
    """
    checks.number("threshold", threshold, above=0, maximum=1)
    if not prompts or not questions:
        return []
    scores = _scores(prompts, questions, record_ids, reviewed, reference)
    best = scores.argmax(axis=0)
    best_scores = scores[best, np.arange(len(prompts))]
    return [
        Match(int(index), questions[int(best[index])], float(best_scores[index]))
        for index in np.flatnonzero(best_scores >= threshold)
    ]


def best_pairs(
    prompts: Sequence[str],
    questions: Sequence[EvalQuestion],
    record_ids: Sequence[str | None] | None = None,
    reviewed: frozenset[tuple[str, str]] = frozenset(),
) -> list[tuple[EvalQuestion, int, float]]:
    """For every eval question, its closest training prompt (index) and the score, best first."""
    if not prompts or not questions:
        return []
    scores = _scores(prompts, questions, record_ids, reviewed)
    best = scores.argmax(axis=1)
    pairs = [(question, int(best[i]), float(scores[i, best[i]])) for i, question in enumerate(questions)]
    return sorted(pairs, key=lambda pair: -pair[2])


def report_pairs(
    files: Sequence[str], questions: Sequence[EvalQuestion], threshold: float, show: int
) -> tuple[list[str], int]:
    """Lines naming each leaking eval question and its training record; the number of leaking questions."""
    records: list[tuple[str, dict[str, Any]]] = []
    for path in files:
        records += [(path, record) for record in read_jsonl_strict(path)]
    ids = [record.get("id") for _, record in records]
    pairs = best_pairs([record["prompt"] for _, record in records], questions, ids, load_reviewed())
    leaks = [pair for pair in pairs if pair[2] >= threshold]
    lines = []
    for question, index, score in pairs[: max(show, len(leaks))]:
        path, record = records[index]
        mark = "LEAK" if score >= threshold else "ok  "
        lines.append(
            f"{mark} {score:.3f} {question.id} ~ {Path(path).name}:{record.get('id', index)}\n"
            f"     eval:  {question.text[:150]}\n     train: {record['prompt'][:150]}"
        )
    return lines, len(leaks)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.decontam", description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="*", metavar="JSONL", help=f"training files (default {DATA_GLOB})")
    parser.add_argument("--eval", nargs="+", default=list(EVAL_FILES), metavar="JSONL")
    parser.add_argument("--threshold", type=checks.arg("--threshold", above=0, maximum=1), default=THRESHOLD)
    parser.add_argument("--show", type=checks.arg("--show", minimum=0, integer=True), default=20)
    args = parser.parse_args(argv)
    files = args.files or sorted(glob.glob(DATA_GLOB))
    if not files:
        raise DataError(f"no training files given and none match {DATA_GLOB}")
    lines, leaks = report_pairs(files, load_eval_questions(args.eval), args.threshold, args.show)
    print("\n".join(lines))
    print(
        f"{leaks} eval question(s) have a near-duplicate (score >= {args.threshold}) in {len(files)} file(s)"
    )
    return 1 if leaks else 0


if __name__ == "__main__":
    from vichat.cli import run

    sys.exit(run(main))
