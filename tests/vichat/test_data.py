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


def test_cli_user_errors_exit_2_with_one_line(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "missing.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {tmp_path / 'missing.jsonl'}: no such file"


def test_stats_cli_tables_and_json(bad_file, tmp_path):
    tok = make_char_tokenizer(tmp_path / "tok")
    table, payload = io.StringIO(), io.StringIO()

    assert main(["stats", str(bad_file)], out=table) == 0
    assert main(["stats", str(bad_file), str(bad_file), "--tokenizer", str(tok), "--json"], out=payload) == 0

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
