"""Reading the two scores out of what a judge actually writes.

Accepted, in this order:
1. a first line holding exactly two scores, whatever surrounds them: ``8 7``, ``8/10 and 7/10``, ``8, 7``,
   ``**8 7**``, ``Scores: 8 7``, ``Điểm: 8 và 7``, ``8,5 và 7`` (Vietnamese decimal comma);
2. scores named by assistant anywhere: ``Assistant 1: 8 ... Assistant 2: 7``, ``Assistant 1 receives 8/10``,
   ``Trợ lý 1 đạt 8 điểm, trợ lý 2 đạt 7 điểm``.
Scores must lie in [0, 10]. Anything else is unparsable: :func:`parse_scores` returns None and the caller
records the raw text; it is never scored as zero.
"""

from __future__ import annotations

import re

MAX_SCORE = 10.0

_NUMBER = r"\d+(?:\.\d+)?"
_NUMBER_DECIMAL_COMMA = r"\d+(?:[.,]\d+)?"
_OUT_OF_TEN = re.compile(r"\s*(?:/\s*10(?:\.0+)?|out of 10|trên 10|trên thang 10)\b", re.IGNORECASE)
_LABEL = r"(?:assistant|trợ\s*lý|trợ\s*lí|tro\s*ly|AI)\s*(?:số\s*|no\.?\s*|#\s*)?"
_LABEL_IN_LINE = re.compile(_LABEL + r"[12]\b", re.IGNORECASE)
# Words a score line may hold besides the two numbers; any other word makes it prose, not a score line.
_FILLER = frozenset(
    [
        "score",
        "scores",
        "scoring",
        "rating",
        "ratings",
        "overall",
        "final",
        "and",
        "vs",
        "versus",
        "respectively",
        "the",
        "are",
        "is",
        "for",
        "of",
        "on",
        "a",
        "điểm",
        "số",
        "và",
        "lần",
        "lượt",
        "tương",
        "ứng",
        "là",
        "cho",
        "hai",
        "của",
        "tổng",
    ]
)
_SCALE = re.compile(r"(?:scale|thang(?:\s*điểm)?)\s*(?:of|from|từ)?\s*1\s*(?:to|-|–|đến)\s*10", re.IGNORECASE)
# A score named by its assistant: the number must be marked as a score, before it ("score", ":", "đạt")
# or after it ("/10", "điểm", "points"), so "Assistant 1 gives 3 examples" is not read as a score.
_BEFORE = r"(?:score[sd]?|rating|rated|receives?|gets?|earns?|deserves?|điểm(?:\s*số)?|đạt(?:\s*được)?|được|nhận(?:\s*được)?|là|[:=])"
_AFTER = r"(?:\s*/\s*10|\s*điểm|\s*points?|\s*out of 10)"
_NAMED = re.compile(
    _LABEL
    + r"(?P<who>[12])\b[^0-9\n]{0,40}?(?:"
    + _BEFORE
    + r"[^0-9\n]{0,12}?(?P<a>"
    + _NUMBER
    + r")|(?P<b>"
    + _NUMBER
    + r")(?="
    + _AFTER
    + r"))",
    re.IGNORECASE,
)


def _in_range(values: list[float]) -> bool:
    return all(0.0 <= v <= MAX_SCORE for v in values)


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip(" \t*#_`>-"):
            return line
    return ""


def _two_on_line(line: str) -> tuple[float, float] | None:
    line = _OUT_OF_TEN.sub(" ", _SCALE.sub(" ", _LABEL_IN_LINE.sub(" ", line)))
    if any(word.lower() not in _FILLER for word in re.findall(r"[^\W\d_]+", line)):
        return None
    for pattern in (_NUMBER, _NUMBER_DECIMAL_COMMA):
        values = [float(v.replace(",", ".")) for v in re.findall(pattern, line)]
        if len(values) == 2 and _in_range(values):
            return values[0], values[1]
    return None


def _named(text: str) -> tuple[float, float] | None:
    found: dict[str, float] = {}
    for match in _NAMED.finditer(text):
        who = match.group("who")
        if who not in found:
            found[who] = float(match.group("a") or match.group("b"))
    if len(found) == 2 and _in_range(list(found.values())):
        return found["1"], found["2"]
    return None


def parse_scores(text: str | None) -> tuple[float, float] | None:
    """(score of Assistant 1, score of Assistant 2), or None when the text does not say them clearly."""
    if not text or not text.strip():
        return None
    return _two_on_line(_first_line(text)) or _named(text)
