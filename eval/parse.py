"""Reading the two scores out of what a judge actually writes.

Accepted, in this order:
1. a first line holding exactly two scores, whatever surrounds them: ``8 7``, ``8/10 and 7/10``, ``8, 7``,
   ``**8 7**``, ``Scores: 8 7``, ``Điểm: 8 và 7``, ``8,5 và 7`` (Vietnamese decimal comma);
2. a numbered list of the two scores: ``1. 8`` then ``2. 7`` (the list numbers are not scores);
3. scores named by assistant anywhere: ``Assistant 1: 8 ... Assistant 2: 7``, ``Assistant 1 receives 8/10``,
   ``Trợ lý 1 đạt 8 điểm, trợ lý 2 đạt 7 điểm``.
Scores must lie in [0, 10]; a negative one (``-1 5``) makes the text unparsable rather than being read
without its sign, and a count (``Assistant 1: 3 examples``) is not a score. Anything else is unparsable:
:func:`parse_scores` returns None and the caller records the raw text; it is never scored as zero.
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


# A minus sign right before a number, not between two numbers ("8-7"): the judge wrote a negative score.
_NEGATIVE = re.compile(r"(?<![\w.,])[-−](?=\d)")
# A list item "1." / "1)" / "1:" at the start of a line; "1.5" is a number, not an item.
_ITEM = re.compile(r"^\s*(?:[*_#>`]+\s*)?(?P<n>[12])\s*(?:\.\s+|[):]\s*)(?P<rest>\S.*)$")
# Words that may follow a score named by its assistant; any other ("3 examples") means it is a count.
_AFTER_WORDS = frozenset(
    ["điểm", "points", "point", "out", "trên", "and", "và", "while", "whereas", "but", "nhưng", "còn"]
    + ["for", "because", "as", "since", "vì", "do", "bởi", "with", "overall", "score", "scores"]
    + ["assistant", "trợ", "tro", "ai"]
)
_WORD_AFTER = re.compile(r"[ \t]*([^\W\d_]+)")


def _in_range(values: list[float]) -> bool:
    return all(0.0 <= v <= MAX_SCORE for v in values)


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip(" \t*#_`>-"):
            return line
    return ""


def _non_blank_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip(" \t*#_`>-")]


def _one_score(text: str) -> float | None:
    """The single score an item like ``8``, ``**8/10**`` or ``8 điểm`` holds."""
    text = _OUT_OF_TEN.sub(" ", _LABEL_IN_LINE.sub(" ", text))
    if _NEGATIVE.search(text) or any(
        word.lower() not in _FILLER for word in re.findall(r"[^\W\d_]+", text)
    ):
        return None
    values = [float(v.replace(",", ".")) for v in re.findall(_NUMBER_DECIMAL_COMMA, text)]
    return values[0] if len(values) == 1 and _in_range(values) else None


def _listed(text: str) -> tuple[float, float] | None | bool:
    """Scores written as a numbered list ("1. 8" / "2. 7"): the pair, None when the first line is an item
    that does not give them, False when it is no list at all."""
    lines = [re.sub(r"[*_`]+", "", line) for line in _non_blank_lines(text)]
    first = _ITEM.match(lines[0]) if lines else None
    if first is None:
        return False
    if first.group("n") != "1":  # "2. 7" first: a list out of order, not the scores 2 and 7
        return None
    second = _ITEM.match(lines[1]) if len(lines) > 1 else None
    if second is None or second.group("n") != "2":
        return None
    one, two = _one_score(first.group("rest")), _one_score(second.group("rest"))
    return (one, two) if one is not None and two is not None else None


def _two_on_line(line: str) -> tuple[float, float] | None:
    line = _OUT_OF_TEN.sub(" ", _SCALE.sub(" ", _LABEL_IN_LINE.sub(" ", line)))
    if _NEGATIVE.search(line):
        return None
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
        if who in found:
            continue
        group = "a" if match.group("a") is not None else "b"
        start, end = match.span(group)
        if start > 0 and text[start - 1] in "-−":  # a negative score: not one of 0..10
            return None
        after = _WORD_AFTER.match(text, end)
        if group == "a" and after and after.group(1).lower() not in _AFTER_WORDS:
            continue  # "Assistant 1: 3 examples": a count, not a score
        found[who] = float(match.group(group))
    if len(found) == 2 and _in_range(list(found.values())):
        return found["1"], found["2"]
    return None


def parse_scores(text: str | None) -> tuple[float, float] | None:
    """(score of Assistant 1, score of Assistant 2), or None when the text does not say them clearly."""
    if not isinstance(text, str) or not text.strip():
        return None
    listed = _listed(text)
    if listed is False:
        return _two_on_line(_first_line(text)) or _named(text)
    return listed or _named(text)
