"""JSONL files survive a kill: a torn last line is cut off, a bad middle line names file and line."""

import pytest

from vichat.errors import DataError
from vichat.jsonl import JsonlAppender, read_records


def test_append_and_read(tmp_path):
    path = tmp_path / "sub" / "x.jsonl"
    with JsonlAppender(path) as out:
        out.write({"a": 1})
        out.write({"b": "Tiếng Việt"})
    assert read_records(path) == [{"a": 1}, {"b": "Tiếng Việt"}]
    assert "Tiếng Việt" in path.read_text(encoding="utf-8")
    assert read_records(tmp_path / "missing.jsonl") == []


def test_torn_last_line_skipped_by_readers_and_cut_by_the_next_writer(tmp_path, capsys):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n{"b": 2', encoding="utf-8")
    assert read_records(path) == [{"a": 1}]
    assert path.read_text(encoding="utf-8") == '{"a": 1}\n{"b": 2'  # a reader never modifies the file
    with JsonlAppender(path) as out:
        out.write({"c": 3})
    assert "x.jsonl: dropped a torn last line" in capsys.readouterr().err
    assert path.read_text(encoding="utf-8") == '{"a": 1}\n{"c": 3}\n'


def test_whole_last_record_without_newline_gets_one(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}', encoding="utf-8")
    assert read_records(path) == [{"a": 1}]
    with JsonlAppender(path) as out:
        out.write({"b": 2})
    assert read_records(path) == [{"a": 1}, {"b": 2}]


def test_bad_middle_line_names_file_and_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\nnot json\n{"b": 2}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"x\.jsonl:2: not a JSON object"):
        read_records(path)
