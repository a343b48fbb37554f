"""vichat.data: reading and checking prompt/response JSONL, statistics, and its CLI."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from vichat.data import (
    WhitespaceCounter,
    compute_stats,
    load_token_counter,
    main,
    read_jsonl,
    read_jsonl_strict,
    read_upload,
    write_jsonl,
)
from vichat.errors import DataError, SettingsError

REPO = Path(__file__).resolve().parents[2]

BAD_LINES = [
    b'{"id": 1, "prompt": "Xin ch\xc3\xa0o", "response": "Ch\xc3\xa0o b\xe1\xba\xa1n", "topic": "greeting"}',  # 1 ok
    b'{"prompt": "a", "response": ',  # 2 malformed JSON
    b'["prompt", "response"]',  # 3 not an object
    b'{"prompt": "only a prompt"}',  # 4 missing field
    b'{"prompt": 42, "response": "b"}',  # 5 not a string
    b'{"prompt": "a", "response": "   "}',  # 6 empty
    b'{"prompt": "\xff\xfe", "response": "b"}',  # 7 invalid UTF-8
    b"",  # 8 blank: skipped
    b'{"prompt": "last", "response": "good"}',  # 9 ok
]


@pytest.fixture
def bad_file(tmp_path: Path) -> Path:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(BAD_LINES) + b"\n")
    return path


def test_good_records_keep_extra_fields_and_errors_name_their_lines(bad_file):
    result = read_jsonl(bad_file)

    assert result.records == [
        {"id": 1, "prompt": "Xin chào", "response": "Chào bạn", "topic": "greeting"},
        {"prompt": "last", "response": "good"},
    ]
    assert [(e.line, e.kind) for e in result.errors] == [
        (2, "json"),
        (3, "not_object"),
        (4, "missing_field"),
        (5, "not_string"),
        (6, "empty"),
        (7, "utf8"),
    ]
    assert str(result.errors[0]).startswith(f"{bad_file}:2: malformed JSON")
    assert 'missing field "response"' in result.errors[2].reason
    assert 'field "prompt" must be a string, got a number' in result.errors[3].reason
    assert result.errors[5].reason == "invalid UTF-8 at byte 12"


def test_strict_read_raises_with_the_first_few_lines(bad_file):
    with pytest.raises(DataError) as failure:
        read_jsonl_strict(bad_file)
    message = str(failure.value)
    assert "6 bad lines" in message
    assert f"{bad_file}:2:" in message and f"{bad_file}:6:" in message
    assert f"{bad_file}:7:" not in message and "and 1 more" in message


def test_bom_and_crlf_are_accepted(tmp_path):
    path = tmp_path / "windows.jsonl"
    path.write_bytes(
        '\ufeff{"prompt": "a", "response": "b"}\r\n{"prompt": "c", "response": "d"}\r\n'.encode()
    )
    assert read_jsonl_strict(path) == [{"prompt": "a", "response": "b"}, {"prompt": "c", "response": "d"}]


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_jsonl(tmp_path / "nope.jsonl")


def test_write_then_read_round_trips_vietnamese(tmp_path):
    records = [{"prompt": "Bệnh tiểu đường là gì?", "response": "Là bệnh mạn tính.", "id": "x"}]
    assert write_jsonl(tmp_path / "sub" / "out.jsonl", records) == 1
    assert "Bệnh" in (tmp_path / "sub" / "out.jsonl").read_text(encoding="utf-8")
    assert read_jsonl_strict(tmp_path / "sub" / "out.jsonl") == records


@pytest.mark.parametrize(
    "make",
    [
        lambda raw, path: raw,
        lambda raw, path: io.BytesIO(raw),
        lambda raw, path: str(path),
        lambda raw, path: {"path": str(path)},
        lambda raw, path: SimpleNamespace(name=str(path)),
    ],
    ids=["bytes", "binary-file", "path", "dict", "named-object"],
)
def test_uploads_in_every_shape(bad_file, make):
    result = read_upload(make(bad_file.read_bytes(), bad_file), name="upload.jsonl")
    assert len(result.records) == 2
    assert [e.line for e in result.errors][:5] == [2, 3, 4, 5, 6]
    assert str(result.errors[0]).startswith("upload.jsonl:2:")


def test_text_file_upload():
    text = '{"prompt": "Xin chào", "response": "Chào bạn"}\n{"prompt": "x"}\n'
    result = read_upload(io.StringIO(text), name="typed.jsonl")
    assert result.records == [{"prompt": "Xin chào", "response": "Chào bạn"}]
    assert [str(e) for e in result.errors] == ['typed.jsonl:2: missing field "response"']


def test_unreadable_upload_is_a_data_error():
    with pytest.raises(DataError, match="cannot read an upload"):
        read_upload(12345)


def test_stats_counts_and_distributions():
    records = [
        {"prompt": "a b", "response": "one two three"},
        {"prompt": "abcd", "response": "x"},
        {"prompt": "a b c d e f", "response": "y z"},
    ]

    plain = compute_stats(records)
    stats = compute_stats(records, WhitespaceCounter())

    assert plain.samples == 3 and plain.sample_tokens is None and plain.total_tokens is None
    assert (plain.prompt_chars.min, plain.prompt_chars.max, plain.prompt_chars.p50) == (3, 11, 4)
    assert plain.response_chars.mean == pytest.approx((13 + 1 + 3) / 3)
    assert [stats.prompt_tokens.total, stats.response_tokens.total] == [9, 6]
    assert stats.total_tokens == 15 and stats.avg_tokens_per_sample == pytest.approx(5.0)
    assert (stats.sample_tokens.min, stats.sample_tokens.p90, stats.sample_tokens.max) == (2, 8, 8)


def test_empty_dataset_stats():
    stats = compute_stats([], WhitespaceCounter())
    assert stats.samples == 0 and stats.total_tokens == 0 and stats.avg_tokens_per_sample == 0.0


def make_char_tokenizer(folder: Path) -> Path:
    """A real Hugging Face tokenizer saved locally: one token per character, a BOS never counted."""
    char_level = Tokenizer(models.WordLevel({"[UNK]": 0, "<s>": 1}, unk_token="[UNK]"))
    char_level.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    PreTrainedTokenizerFast(tokenizer_object=char_level, unk_token="[UNK]", bos_token="<s>").save_pretrained(
        folder
    )
    return folder


def test_hf_tokenizer_from_a_local_folder(tmp_path):
    counter = load_token_counter(str(make_char_tokenizer(tmp_path / "tok")))
    stats = compute_stats([{"prompt": "abc", "response": "hello"}], counter)
    assert counter.count(["ab", "", "xyz"]) == [2, 0, 3]
    assert stats.total_tokens == 8 and stats.tokenizer == str(tmp_path / "tok")


def test_unloadable_tokenizer_is_a_settings_error(tmp_path):
    with pytest.raises(SettingsError, match="could not be loaded.*whitespace"):
        load_token_counter(str(tmp_path / "no-such-tokenizer"))
    assert isinstance(load_token_counter("whitespace"), WhitespaceCounter)


# --------------------------------------------------------------------------- CLI


def test_validate_cli_lists_bad_lines_and_exits_1(bad_file, tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"prompt": "a", "response": "b"}) + "\n")
    out = io.StringIO()

    assert main(["validate", str(good)], out=out) == 0
    assert main(["validate", str(good), str(bad_file)], out=out) == 1

    text = out.getvalue()
    assert f"OK {good}: 1 records" in text
    assert f"INVALID {bad_file}: 6 bad line(s), 2 good records" in text
    assert f"{bad_file}:7: invalid UTF-8" in text


def test_every_missing_file_is_named_and_the_others_still_checked(tmp_path, bad_file, capsys):
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"prompt": "a", "response": "b"}) + "\n")
    missing = [tmp_path / "missing1.jsonl", tmp_path / "missing2.jsonl"]
    out = io.StringIO()

    code = main(
        ["validate", str(missing[0]), str(good), str(tmp_path), str(missing[1]), str(bad_file)], out=out
    )

    err = capsys.readouterr().err
    assert code == 2
    assert f"error: {missing[0]}: no such file" in err and f"error: {missing[1]}: no such file" in err
    assert f"error: {tmp_path}: is a directory" in err and "3 of 5 file(s) could not be read" in err
    assert (
        f"OK {good}: 1 records" in out.getvalue() and f"INVALID {bad_file}: 6 bad line(s)" in out.getvalue()
    )
    stats = io.StringIO()
    assert main(["stats", str(good), str(missing[0])], out=stats) == 2
    assert f"{good}: 1 samples" in stats.getvalue() and str(missing[0]) in capsys.readouterr().err


def test_stats_cli_tables_and_json(bad_file, tmp_path):
    tok = make_char_tokenizer(tmp_path / "tok")
    table, payload = io.StringIO(), io.StringIO()

    assert main(["stats", str(bad_file)], out=table) == 1  # statistics of the good records; bad lines: exit 1
    assert main(["stats", str(bad_file), str(bad_file), "--tokenizer", str(tok), "--json"], out=payload) == 1

    assert f"{bad_file}: 2 samples" in table.getvalue() and "skipped 6 bad line(s)" in table.getvalue()
    report = json.loads(payload.getvalue())
    assert report["files"]["all files"]["samples"] == 4
    assert report["files"][str(bad_file)]["total_tokens"] == len("Xin chào" + "Chào bạn" + "last" + "good")
    assert report["bad_lines"] == {str(bad_file): 6}


def test_project_sample_data_is_valid():
    files = sorted((REPO / "assets" / "data").glob("*.jsonl"))
    if not files:
        pytest.skip("no sample data in assets/data yet")
    out = io.StringIO()
    assert main(["validate", *map(str, files)], out=out) == 0, out.getvalue()
    assert main(["stats", *map(str, files)], out=io.StringIO()) == 0


# --------------------------------------------------------------------------- hardening (issue 14)


@pytest.mark.parametrize(
    ("line", "kind", "reason"),
    [
        (b'{"prompt": "a", "response": "b", "id": ' + b"9" * 5000 + b"}", "number", "5,000 digits"),
        (
            b'{"prompt": "a", "response": "b", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            "json",
            "nested",
        ),
        (b'{"prompt": "a", "response": "b", "score": NaN}', "nan", "NaN is not valid JSON"),
        (b'{"prompt": "a", "response": "b", "score": -Infinity}', "nan", "-Infinity is not valid JSON"),
        (b'{"prompt": "a", "response": "b", "score": 1e400}', "number", "too large"),
        (
            b'{"prompt": "a\\ud800", "response": "b"}',
            "surrogate",
            'field "prompt" holds a lone UTF-16 surrogate',
        ),
        (b'{"prompt": "a", "response": "b", "meta": {"x": ["\\udfff"]}}', "surrogate", 'field "meta"'),
        (b'{"prompt": "a", "\\ud83d": "b", "response": "c"}', "surrogate", "a field name"),
    ],
    ids=[
        "huge-int",
        "deep-nesting",
        "nan",
        "infinity",
        "float-overflow",
        "surrogate",
        "nested-surrogate",
        "key",
    ],
)
def test_json_that_python_chokes_on_is_a_per_line_error(tmp_path, line, kind, reason):
    path = tmp_path / "poison.jsonl"
    path.write_bytes(
        b'{"prompt": "ok", "response": "fine"}\n' + line + b'\n{"prompt": "c", "response": "d"}\n'
    )

    result = read_jsonl(path)

    assert [r["prompt"] for r in result.records] == ["ok", "c"]
    [error] = result.errors
    assert (error.line, error.kind) == (2, kind) and reason in error.reason


def test_a_valid_surrogate_pair_is_text(tmp_path):
    path = tmp_path / "emoji.jsonl"
    path.write_bytes(b'{"prompt": "Xin ch\\u00e0o \\ud83d\\ude00", "response": "b"}\n')
    assert read_jsonl_strict(path) == [{"prompt": "Xin chào \U0001f600", "response": "b"}]


def test_records_read_can_always_be_written_again(tmp_path):
    """What read_jsonl keeps never crashes a later write (the surrogate crash in build/translate)."""
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(
        b'{"prompt": "a\\ud800", "response": "b"}\n{"prompt": "ok", "response": "b", "n": 1.5}\n'
    )
    records = read_jsonl(path).records
    assert write_jsonl(tmp_path / "again.jsonl", records) == 1
    (tmp_path / "again.jsonl").read_text(encoding="utf-8").encode("utf-8")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b'{"prompt": "thi\xe1\xba\xbfu ngo\xe1\xba\xb7c"', "at the end of the line"),
        (b'{"prompt": "a", "resp', "Unterminated string starting at column 17"),
        (b'{"prompt": "a" "response": "b"}', "Expecting ',' delimiter at column 16"),
        (
            b'{"prompt": "\xc3\xa0\xc3\xa0", x}',
            "Expecting property name enclosed in double quotes at column 18",
        ),
        (b'{"prompt": "a", "response": "b"} {"prompt": "c"}', "extra text after the JSON value"),
    ],
    ids=["end-of-line", "torn", "missing-comma", "columns-in-characters", "two-values"],
)
def test_malformed_json_names_the_real_column(tmp_path, line, expected):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(line + b"\n")
    [error] = read_jsonl(path).errors
    assert error.kind == "json" and expected in error.reason
    assert "column 1)" not in error.reason


@pytest.mark.parametrize(
    "data",
    [
        '{"prompt": "a", "response": "b"}\n'.encode("utf-16"),
        '{"prompt": "a", "response": "b"}\n'.encode("utf-16-le"),
        '{"prompt": "a", "response": "b"}\n'.encode("utf-16-be"),
    ],
    ids=["bom", "le-no-bom", "be-no-bom"],
)
def test_utf16_is_recognised_once_for_the_file(tmp_path, data, capsys):
    path = tmp_path / "notepad.jsonl"
    path.write_bytes(data)

    result = read_jsonl(path)
    out = io.StringIO()

    assert [e.kind for e in result.errors] == ["utf16"] and result.file_error is not None
    assert "file is UTF-16" in result.errors[0].reason and "save it as UTF-8" in result.errors[0].reason
    assert main(["validate", str(path)], out=out) == 1
    assert f"INVALID {path}: file is UTF-16" in out.getvalue()


@pytest.mark.parametrize(
    "text",
    [
        json.dumps([{"prompt": "a", "response": "b"}, {"prompt": "c", "response": "d"}]),
        json.dumps([{"prompt": "a", "response": "b"}], indent=2),
    ],
    ids=["one-line", "pretty"],
)
def test_a_json_array_is_told_apart_from_json_lines(tmp_path, text):
    path = tmp_path / "array.jsonl"
    path.write_text(text)
    out = io.StringIO()

    [error] = read_jsonl(path).errors
    assert error.kind == "json_array" and error.line == 1
    assert main(["validate", str(path)], out=out) == 1
    assert (
        "this is a JSON array, not JSON Lines" in out.getvalue()
        and "convert it with: python -c" in out.getvalue()
    )


def test_json_lines_whose_lines_are_arrays_are_not_one_json_array(tmp_path):
    path = tmp_path / "arrays.jsonl"
    path.write_text('["a", "b"]\n["c"]\n')
    assert [(e.line, e.kind) for e in read_jsonl(path).errors] == [(1, "not_object"), (2, "not_object")]


def test_a_prompt_the_app_cannot_take_is_a_too_long_error(tmp_path):
    path = tmp_path / "long.jsonl"
    path.write_text(json.dumps({"prompt": "chữ " * 5000, "response": "b"}) + "\n")
    [error] = read_jsonl(path).errors
    assert error.kind == "too_long" and "16,000" in error.reason


def test_empty_files_fail_validate_and_stats(tmp_path):
    empty, blank = tmp_path / "empty.jsonl", tmp_path / "blank.jsonl"
    empty.write_bytes(b"")
    blank.write_bytes(b"\n  \n")
    out = io.StringIO()
    assert main(["validate", str(empty), str(blank)], out=out) == 1
    assert (
        f"INVALID {empty}: no records" in out.getvalue() and f"INVALID {blank}: no records" in out.getvalue()
    )
    assert main(["stats", str(empty)], out=io.StringIO()) == 1


def test_write_jsonl_leaves_the_old_file_whole_when_a_record_fails(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text('{"prompt": "old", "response": "kept"}\n')

    def records():
        yield {"prompt": "new", "response": "x"}
        raise RuntimeError("the source broke mid-way")

    with pytest.raises(RuntimeError):
        write_jsonl(path, records())
    assert read_jsonl_strict(path) == [{"prompt": "old", "response": "kept"}]
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_python_m_vichat_data_goes_through_the_one_runner(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "vichat.data",
            "validate",
            str(tmp_path / "a.jsonl"),
            str(tmp_path / "b.jsonl"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "a.jsonl: no such file" in result.stderr and "b.jsonl: no such file" in result.stderr
