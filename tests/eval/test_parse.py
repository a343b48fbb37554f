"""Score parsing accepts what judges really write and refuses what it cannot read."""

import pytest

from eval.parse import parse_scores


@pytest.mark.parametrize(
    "text, expected",
    [
        ("8 7", (8, 7)),
        ("8 7\nAssistant 1 is more detailed.", (8, 7)),
        ("8/10 and 7/10", (8, 7)),
        ("8, 7", (8, 7)),
        ("8.5 7", (8.5, 7)),
        ("**8 7**", (8, 7)),
        ("Scores: 9 4", (9, 4)),
        ("8 out of 10 and 7 out of 10", (8, 7)),
        ("Assistant 1: 8 ... Assistant 2: 7", (8, 7)),
        ("Assistant 1: 8\nAssistant 2: 7\nBoth are fine.", (8, 7)),
        ("Assistant 1: 8/10, Assistant 2: 6.5/10", (8, 6.5)),
        ("Assistant 1 receives a score of 9, Assistant 2 gets 6", (9, 6)),
        ("Score for Assistant 1: 8\nScore for Assistant 2: 6", (8, 6)),
        ("Điểm: 8 và 7", (8, 7)),
        ("Điểm số lần lượt là 8 và 6", (8, 6)),
        ("8,5 và 7", (8.5, 7)),
        ("Trợ lý 1 đạt 8 điểm, trợ lý 2 đạt 7 điểm", (8, 7)),
        ("Trợ lý 1: 9/10; Trợ lý 2: 5/10", (9, 5)),
        ("On a scale of 1 to 10: 7 and 4", (7, 4)),
        # a numbered list: the item numbers are not scores
        ("1. 8\n2. 7", (8, 7)),
        ("1. 8\n2. 7\nAssistant 1 is clearer.", (8, 7)),
        ("1) 8/10\n2) 6.5/10", (8, 6.5)),
        ("**1.** 9\n**2.** 4", (9, 4)),
        ("1. Assistant 1: 8\n2. Assistant 2: 7", (8, 7)),
        ("8-7", (8, 7)),  # a dash between two scores is no minus sign
        ("- 8 7", (8, 7)),  # a bullet
        ("Assistant 1: 8 and Assistant 2: 7", (8, 7)),
        ("Assistant 1: 8 because it is clear; Assistant 2: 7", (8, 7)),
    ],
)
def test_parses(text, expected):
    assert parse_scores(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n ",
        None,
        "I cannot decide between them.",
        "Tôi không thể chấm điểm câu trả lời này.",
        "11 7",  # out of range
        "3 2 1",  # three numbers: which two?
        "Assistant 1 provided 3 examples. Assistant 2 provided 2.",  # counts, not scores
        "8\n7",  # scores on separate bare lines: ambiguous, not guessed
        "1. 8",  # a list item alone: not the scores 1 and 8
        "1. 8\nThe first answer is better.",
        "1: 8",
        "2. 7\n1. 8",  # a list out of order
        "-1 5",  # a negative score: not read as 1
        "8 -7",
        "−2 5",  # the Unicode minus sign
        "Assistant 1: -1, Assistant 2: 5",
        "Assistant 1: 3 examples ... 8/10",  # a count, not a score
        "Assistant 1: 3 examples ... 8/10. Assistant 2: 7/10",
    ],
)
def test_unparsable_is_none_not_zero(text):
    assert parse_scores(text) is None
