"""The public datasets the paper used (or stands in for), and how each becomes prompt/response records.

Every source names the Hugging Face hub id a user online would load (``None`` where no hub copy matches
the files, with where to get them instead) and reads local copies as they are published. Column layouts
(checked against the datasets' cards on the hub, or the files themselves):

- ``tatsu-lab/alpaca`` (``alpaca``; train, 52,002 rows): ``instruction``, ``input``, ``output``, ``text``.
  prompt = instruction, plus a blank line and the input when the input is not empty (the
  Alpaca recipe's "instruction with input"); response = output. ``text`` (the pre-formatted
  English prompt) is ignored. The published ``alpaca_data.json`` (a JSON list) reads the same.
- ``nomic-ai/gpt4all_prompt_generations`` (train): ``prompt``, ``response``, ``source``. The
  dataset's own ``source`` (where the prompt came from, e.g. ``unified_chip2``) is kept as
  ``origin``; the responses carry HTML from scraping (``<p>``, ``<pre><code>``), which is
  turned into plain text with fenced code blocks so translation leaves code alone.
- ``lavita/ChatDoctor-HealthCareMagic-100k`` (train, 112,165 rows): ``instruction``,
  ``input``, ``output``. ``instruction`` is the same fixed sentence on every row ("If you are
  a doctor, please answer the medical questions based on the patient's description."), which
  the Doctor template already says in Vietnamese, so prompt = input (the patient's words)
  and response = output (the doctor's answer).
- ``lavita/ChatDoctor-iCliniq`` (train, 7,321 rows): ``input``, ``answer_icliniq``,
  ``answer_chatgpt``, ``answer_chatdoctor``. prompt = input; response = ``answer_icliniq``,
  the real doctor's answer (the other two are model answers kept for comparison in
  ChatDoctor's evaluation). Files in the ``instruction``/``input``/``output`` layout (the
  ``chatdoctor_icliniq`` config of ``lavita/medical-qa-datasets``) are read too.
- ``genmedgpt``: ChatDoctor's GenMedGPT-5k (``chatdoctor5k.json`` in github.com/Kent0n-Li/ChatDoctor,
  5,452 rows), a JSON list of ``instruction`` (the same fixed doctor sentence), ``input`` (the
  patient) and ``output`` (the doctor): prompt = input, response = output, as for HealthCareMagic.
  No hub dataset holds these exact files, so it has no hub id.
- ``alpaca-vi``: the cleaned Alpaca machine-translated to Vietnamese (``vi_alpaca_reduced_*.jsonl`` in
  github.com/telexyz/GPT4VN, 10 files x 5,000): JSON Lines of ``prompt`` (input already folded in)
  and ``response``. Not on the hub in this form.
- ``lima-vi``: LIMA translated to Vietnamese by GPT-4 (the ``Lima/GPT_4_results`` checkpoint files of
  github.com/VietnamAIHub/Vietnamese_LLMs; the English original is ``GAIR/lima`` on the hub, gated).
  Each file is a JSON list of ``{"prompt": [turns], "response": [turns]}`` (a plain string is one
  turn). A conversation of k turns becomes k records by the project's multi-turn rule
  (:func:`vichat.prompts.history_instruction`, what the chat app does at inference): the i-th record's
  prompt is the i-th user turn with the i-1 turns before it folded in as history, its response the
  i-th answer. Rows the translation left broken are dropped and counted: a turn that is ``null``, a
  turn marked ``|||TRANSLATION_FAILED|||`` (the English left as it was), or a turn not in Vietnamese
  (English, Portuguese, a translator's refusal: fewer than 5% Vietnamese letters outside code), and a
  conversation with an answer cut off mid-sentence (the translations stop near 1,000 characters: over
  900 characters and ending in a letter, digit or comma; about 600 of the 1,030 rows).
  The checkpoint files overlap, so repeated conversations are dropped too.
- ``tmnam20/ViMedAQA`` (``vimedaqa``; config ``all``: train 39.9k, validation and test 2.2k each):
  Parquet of ``question``, ``answer``, ``context``, ``title``, ``keyword``, ``topic`` (0 body-part,
  1 disease, 2 drug, 3 medicine), ``question_idx``, ``article_url``, ``author``, ``author_url``.
  prompt = question, response = answer; ``title``, ``keyword``, ``topic`` (as its name) and
  ``question_idx`` are kept as extra fields. Native Vietnamese, written from the article passage in
  ``context`` (not kept: the answer is extractive, so the passage would leak it).

Rows of every source are also dropped when their prompt and answer repeat an earlier row (same text
up to Unicode form, case and spacing) or the prompt is longer than the chat app accepts
(:data:`vichat.prompts.MAX_PROMPT_CHARS`). The paper's ChatDoctor mixture also has 5k
ChatGPT-generated conversations; no source here provides them.
"""

from __future__ import annotations

import glob
import hashlib
import html
import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from vichat.errors import DataError, PromptError
from vichat.jsonl import (
    FILE_KINDS,
    JSONProblem,
    RecordError,
    decode_json,
    encoding_error,
    iter_json_lines,
    json_type,
)
from vichat.prompts import MAX_PROMPT_CHARS, history_instruction

Row = Mapping[str, Any]
Converted = list[dict[str, Any]] | str
"""What a row becomes: its records (one, or one per turn), or the reason it is dropped."""

LOCAL_FORMATS = (".json", ".jsonl", ".csv", ".parquet")
ERRORS_SHOWN = 5

# Why rows are dropped (the keys of a collect report's counts).
EMPTY = "empty prompt or answer"
NOT_TEXT = "a prompt or answer that is not text (null or a number)"
TURNS = "prompt and response turns differ in number"
UNTRANSLATED = "translation failed (marked |||TRANSLATION_FAILED|||, English left)"
NOT_VIETNAMESE = "not in Vietnamese (under 5% Vietnamese letters outside code)"
DUPLICATE = "duplicate of an earlier row"
TOO_LONG = f"prompt over {MAX_PROMPT_CHARS:,} characters"
CUT_OFF_CHARS = 900
"""LIMA-vi's translations stop near 1,000 characters: about 600 of its conversations end there mid-word. A
shorter answer that ends without a full stop is a list, a poem or a one-word answer, and stays."""
CUT_OFF = (
    f"answer cut off mid-sentence (over {CUT_OFF_CHARS:,} characters, ending in a letter, digit or comma)"
)

FAILED_MARK = "|||TRANSLATION_FAILED|||"


@dataclass(frozen=True)
class Source:
    """A public dataset: where it lives, which columns it has, how a row becomes records."""

    name: str
    hub_id: str | None
    """What ``datasets.load_dataset`` loads online; None where no hub copy matches the published files."""
    split: str
    prompt_columns: tuple[str, ...]
    """Columns that must all be present."""
    response_columns: tuple[str, ...]
    """Accepted answer columns, in order of preference: the first present is used."""
    to_records: Callable[[Row, str], Converted]
    """``(row, response_column)`` to records without ``source``/``id``, or the reason to drop the row."""
    config: str | None = None
    """The hub dataset's config (subset) name, when it has several."""
    formats: tuple[str, ...] = LOCAL_FORMATS
    """File types taken from a folder given to ``--from`` (a file named on its own may be any of LOCAL_FORMATS)."""
    where: str = ""
    """Where a user gets the files (always said when there is no hub id)."""

    def response_column(self, columns: Iterable[str], override: str | None = None) -> str:
        """Pick the answer column for a file with ``columns``; DataError names what is missing."""
        present = set(columns)
        missing = [column for column in self.prompt_columns if column not in present]
        wanted = (override,) if override else self.response_columns
        chosen = next((column for column in wanted if column in present), None)
        if missing or chosen is None:
            expected = ", ".join(self.prompt_columns) + " and " + " or ".join(wanted)
            raise DataError(
                f"{self.name} rows need the columns {expected}; found {', '.join(sorted(present)) or 'none'}"
            )
        return chosen


def _text(row: Row, column: str) -> str:
    value = row.get(column)
    return value.strip() if isinstance(value, str) else ""


def _pair(prompt: str, response: str) -> Converted:
    return [{"prompt": prompt, "response": response}] if prompt and response else EMPTY


def _missing(value: Any) -> bool:
    """None, or the NaN that pandas puts in an empty Parquet/CSV cell."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _is_text(row: Row, *columns: str) -> bool:
    return all(_missing(row.get(column)) or isinstance(row.get(column), str) for column in columns)


def alpaca_record(row: Row, response_column: str) -> Converted:
    if not _is_text(row, "instruction", "input", response_column):
        return NOT_TEXT
    instruction, extra = _text(row, "instruction"), _text(row, "input")
    prompt = f"{instruction}\n\n{extra}" if extra else instruction
    return _pair(prompt, _text(row, response_column))


_CODE_BLOCK = re.compile(r"<pre>\s*<code[^>]*>(.*?)</code>\s*</pre>", re.S | re.I)
_INLINE_CODE = re.compile(r"<code[^>]*>(.*?)</code>", re.S | re.I)
_PARAGRAPH = re.compile(r"</?p\s*>", re.I)
_HTML_MARKUP = re.compile(r"</?(p|pre|code)\b", re.I)


def gpt4all_text(text: str) -> str:
    """Scraped HTML to Markdown-ish text: code blocks fenced, paragraphs as blank lines.

    Every piece is unescaped exactly once; code is otherwise kept byte for byte; text without
    such markup is left as it is.
    """
    if not _HTML_MARKUP.search(text):
        return text.strip()
    blocks: list[str] = []
    for index, part in enumerate(_CODE_BLOCK.split(text)):
        if index % 2:  # the body of a <pre><code> block
            blocks.append(f"```\n{html.unescape(part).strip(chr(10))}\n```")
            continue
        bits = _INLINE_CODE.split(part)
        prose = "".join(
            f"`{html.unescape(bit)}`" if inner % 2 else html.unescape(_PARAGRAPH.sub("\n\n", bit))
            for inner, bit in enumerate(bits)
        )
        blocks.append(re.sub(r"\n{3,}", "\n\n", prose).strip())
    return "\n\n".join(block for block in blocks if block)


def gpt4all_record(row: Row, response_column: str) -> Converted:
    if not _is_text(row, "prompt", response_column):
        return NOT_TEXT
    records = _pair(gpt4all_text(_text(row, "prompt")), gpt4all_text(_text(row, response_column)))
    if isinstance(records, list) and _text(row, "source"):
        records[0]["origin"] = _text(row, "source")
    return records


def patient_record(row: Row, response_column: str) -> Converted:
    if not _is_text(row, "input", response_column):
        return NOT_TEXT
    return _pair(_text(row, "input"), _text(row, response_column))


def prompt_response_record(row: Row, response_column: str) -> Converted:
    """Files already in our layout (``prompt``/``response``), e.g. the Vietnamese Alpaca."""
    if not _is_text(row, "prompt", response_column):
        return NOT_TEXT
    return _pair(_text(row, "prompt"), _text(row, response_column))


VIMEDAQA_TOPICS = {0: "body-part", 1: "disease", 2: "drug", 3: "medicine"}


def vimedaqa_record(row: Row, response_column: str) -> Converted:
    if not _is_text(row, "question", response_column):
        return NOT_TEXT
    records = _pair(_text(row, "question"), _text(row, response_column))
    if isinstance(records, list):
        record = records[0]
        for column in ("title", "keyword", "question_idx"):
            if _text(row, column):
                record[column] = _text(row, column)
        topic = _plain(row.get("topic"))
        if topic is not None:
            record["topic"] = VIMEDAQA_TOPICS.get(topic, topic) if isinstance(topic, int) else topic
    return records


def _plain(value: Any) -> Any:
    """A JSON-safe scalar from a file's cell (numpy numbers, NaN for a missing cell), else None."""
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, str | int | float | bool) else None


_VIETNAMESE_LETTERS = frozenset("ăâđêôơưĂÂĐÊÔƠƯ")
_CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)


def vietnamese_share(text: str) -> float | None:
    """Share of letters that only Vietnamese writes (ă â đ ê ô ơ ư, tone marks), code left out.

    Vietnamese prose scores 0.15-0.40; English 0, Portuguese or Spanish 0.01-0.04. None under 20 letters.
    """
    letters = [char for char in _CODE.sub(" ", text) if char.isalpha()]
    if len(letters) < 20:
        return None
    marked = sum(
        1 for char in letters if char in _VIETNAMESE_LETTERS or len(unicodedata.normalize("NFD", char)) > 1
    )
    return marked / len(letters)


def _turns(value: Any) -> list[Any] | None:
    if hasattr(value, "tolist") and not isinstance(value, str):  # a numpy array from Parquet
        value = value.tolist()
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return list(value)
    return None


def conversation_records(pairs: Sequence[tuple[str, str]], check_language: bool = False) -> Converted:
    """k (user, assistant) turns to k records by the project's multi-turn rule, or why they cannot be."""
    if not pairs:
        return EMPTY
    for user, bot in pairs:
        if not isinstance(user, str) or not isinstance(bot, str):
            return NOT_TEXT
        if not user.strip() or not bot.strip():
            return EMPTY
        if FAILED_MARK in user or FAILED_MARK in bot:
            return UNTRANSLATED
        if check_language and any(
            (share := vietnamese_share(t)) is not None and share < 0.05 for t in (user, bot)
        ):
            return NOT_VIETNAMESE
    records: list[dict[str, Any]] = []
    for turn, (user, bot) in enumerate(pairs):
        history = [(u, b) for u, b in pairs[:turn]]
        try:
            prompt = history_instruction(history, user)
        except PromptError:  # the turn alone is longer than the app accepts
            return TOO_LONG
        records.append({"prompt": prompt, "response": bot.strip()})
    if len(records) > 1:
        for turn, record in enumerate(records, start=1):
            record["turn"] = turn
    return records


def cut_off(text: str) -> bool:
    """An answer that stops mid-sentence: long, and its last character a letter, a digit, a comma or a dash."""
    text = text.rstrip()
    return len(text) >= CUT_OFF_CHARS and (text[-1].isalnum() or text[-1] in ",-–—(")


def lima_vi_records(row: Row, response_column: str) -> Converted:
    users, bots = _turns(row.get("prompt")), _turns(row.get(response_column))
    if users is None or bots is None:
        return NOT_TEXT
    if len(users) != len(bots):
        return TURNS
    if any(isinstance(bot, str) and cut_off(bot) for bot in bots):
        return CUT_OFF
    return conversation_records(list(zip(users, bots, strict=True)), check_language=True)


SOURCES: Mapping[str, Source] = MappingProxyType(
    {
        "alpaca": Source(
            "alpaca",
            "tatsu-lab/alpaca",
            "train",
            ("instruction", "input"),
            ("output",),
            alpaca_record,
            where="github.com/tatsu-lab/stanford_alpaca (alpaca_data.json)",
        ),
        "gpt4all": Source(
            "gpt4all",
            "nomic-ai/gpt4all_prompt_generations",
            "train",
            ("prompt",),
            ("response",),
            gpt4all_record,
        ),
        "healthcaremagic": Source(
            "healthcaremagic",
            "lavita/ChatDoctor-HealthCareMagic-100k",
            "train",
            ("input",),
            ("output",),
            patient_record,
        ),
        "icliniq": Source(
            "icliniq",
            "lavita/ChatDoctor-iCliniq",
            "train",
            ("input",),
            ("answer_icliniq", "output"),
            patient_record,
        ),
        "genmedgpt": Source(
            "genmedgpt",
            None,
            "train",
            ("input",),
            ("output",),
            patient_record,
            formats=(".json",),
            where="chatdoctor5k.json from github.com/Kent0n-Li/ChatDoctor (no hub dataset holds GenMedGPT-5k as published)",
        ),
        "alpaca-vi": Source(
            "alpaca-vi",
            None,
            "train",
            ("prompt",),
            ("response",),
            prompt_response_record,
            formats=(".jsonl",),
            where="vi_alpaca_reduced_*.jsonl from github.com/telexyz/GPT4VN (data/.archive/vi_alpaca_reduced.data/)",
        ),
        "lima-vi": Source(
            "lima-vi",
            None,
            "train",
            ("prompt",),
            ("response",),
            lima_vi_records,
            formats=(".json",),
            where=(
                "the checkpoint files of github.com/VietnamAIHub/Vietnamese_LLMs (Generate_and_Translate_Dataset/"
                "Vietnamese_Instructions_datasets/Translation/Lima/GPT_4_results/); the English original is GAIR/lima"
            ),
        ),
        "vimedaqa": Source(
            "vimedaqa",
            "tmnam20/ViMedAQA",
            "train",
            ("question",),
            ("answer",),
            vimedaqa_record,
            config="all",
            formats=(".parquet",),
            where="huggingface.co/datasets/tmnam20/ViMedAQA (all/*.parquet)",
        ),
    }
)


def get_source(name: str) -> Source:
    try:
        return SOURCES[name]
    except KeyError:
        raise DataError(f"unknown source {name!r}; choose one of {', '.join(SOURCES)}") from None


# --------------------------------------------------------------------------- local files


@dataclass(frozen=True)
class LocatedRow:
    """A row of a local file and where it is, for messages (``file:line`` or ``file: row N``)."""

    where: str
    row: dict[str, Any]


def _natural_key(path: Path) -> list[Any]:
    """checkpoint_11 before checkpoint_110: numbers in names compared as numbers."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def expand_inputs(specs: Sequence[str], formats: Sequence[str] = LOCAL_FORMATS) -> list[Path]:
    """Files named by ``--from``: files, folders (their ``formats`` files) and globs; every missing one named.

    Folders are read one level deep, hidden files (a temp file of a write in progress) left out; the
    order is natural (``_2`` before ``_10``); a file named twice is read once.
    """
    files: list[Path] = []
    missing: list[str] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = sorted(
                (
                    p
                    for p in path.iterdir()
                    if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in formats
                ),
                key=_natural_key,
            )
            if not found:
                raise DataError(f"{path}: no {' or '.join(formats)} files in this folder")
            files += found
        elif path.is_file():
            files.append(path)
        elif glob.has_magic(spec):
            found = sorted((Path(p) for p in glob.glob(spec) if Path(p).is_file()), key=_natural_key)
            if not found:
                raise DataError(f"no files match {spec}")
            files += found
        else:
            missing.append(spec)
    if missing:
        raise DataError("no such file: " + ", ".join(missing))
    unique: dict[Path, Path] = {}
    for file in files:
        unique.setdefault(file.resolve(), file)
    return list(unique.values())


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a local copy: JSON (a list of objects), JSON Lines, CSV or Parquet."""
    return [located.row for located in read_located_rows(path)]


def read_located_rows(path: str | Path) -> list[LocatedRow]:
    """Rows of a local copy with where each is; DataError naming ``file:line`` for a bad file."""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"{file}: no such file")
    suffix = file.suffix.lower()
    if suffix == ".jsonl":
        return _jsonl_rows(file)
    if suffix == ".json":
        return _json_rows(file)
    if suffix in (".csv", ".parquet"):
        return _pandas_rows(file, suffix)
    raise DataError(f"{file}: unsupported format {suffix or '(none)'}; use one of {', '.join(LOCAL_FORMATS)}")


def _raise_row_errors(file: Path, errors: list[RecordError]) -> None:
    if not errors:
        return
    shown = [str(error) for error in errors[:ERRORS_SHOWN]]
    if len(errors) > ERRORS_SHOWN:
        shown.append(f"... and {len(errors) - ERRORS_SHOWN} more bad line(s)")
    noun = "line" if len(errors) == 1 else "lines"
    raise DataError(f"{file}: {len(errors)} bad {noun}; fix them and run again\n" + "\n".join(shown))


def _jsonl_rows(file: Path) -> list[LocatedRow]:
    rows: list[LocatedRow] = []
    errors: list[RecordError] = []
    with file.open("rb") as stream:
        for number, value, error in iter_json_lines(stream, str(file)):
            if error is None and not isinstance(value, dict):
                error = RecordError(
                    str(file),
                    number,
                    "not_object",
                    f"expected a JSON object per line, got {json_type(value)}",
                )
            if error is not None and error.kind == "json_array":
                raise DataError(
                    f"{file}: this is a JSON array, not JSON Lines (one object per line); rename it to "
                    f"{file.with_suffix('.json').name} and train.collect reads it as a JSON array"
                )
            if error is not None and error.kind in FILE_KINDS:
                raise DataError(f"{file}: {error.reason}")
            if error is not None:
                errors.append(error)
                continue
            rows.append(LocatedRow(f"{file}:{number}", value))
    _raise_row_errors(file, errors)
    return rows


class _Lines:
    """Line numbers of offsets in one text, counted forward only once."""

    def __init__(self, text: str):
        self.text, self.offset, self.line = text, 0, 1

    def at(self, offset: int) -> int:
        if offset < self.offset:
            return 1 + self.text.count("\n", 0, offset)
        self.line += self.text.count("\n", self.offset, offset)
        self.offset = offset
        return self.line


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _json_rows(file: Path) -> list[LocatedRow]:
    """A JSON list of objects (each row's line kept), ``{"train": [...]}``, or JSON Lines named .json."""
    raw = file.read_bytes()
    problem = encoding_error(raw, str(file))
    if problem is not None:
        raise DataError(str(problem))
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{file}:{line}: invalid UTF-8 at byte {exc.start}") from None
    lines = _Lines(text)

    def fail(problem: JSONProblem, pos: int) -> DataError:
        where = problem.pos if problem.pos is not None else pos
        reason = problem.reason
        if problem.kind == "json" and problem.pos is not None:
            reason = f"malformed JSON: {reason.removesuffix(' at')}"  # "Unterminated string starting at"
            if reason.endswith("Unterminated string starting"):
                reason += " here: the file is cut short or a closing quote is missing"
        end = len(text.rstrip())
        if problem.kind == "json" and where >= end:
            where, reason = end, "malformed JSON: the file ends in the middle of a row (cut short?)"
        return DataError(f"{file}:{lines.at(where)}: {reason}")

    pos = _skip_space(text, 0)
    if pos == len(text):
        raise DataError(f"{file}: the file is empty; expected a JSON array of objects")
    if text[pos] != "[":
        try:
            value, end = decode_json(text, pos)
        except JSONProblem as problem:
            raise fail(problem, pos) from None
        if _skip_space(text, end) < len(text):  # several values: JSON Lines with a .json name
            return _jsonl_rows(file)
        if isinstance(value, dict):  # {"train": [...]} or {"data": [...]}
            lists = [item for item in value.values() if isinstance(item, list)]
            value = lists[0] if len(lists) == 1 else [value]
        if not isinstance(value, list):
            raise DataError(f"{file}: expected a JSON array of objects, got {json_type(value)}")
        where = f"{file}:{lines.at(pos)}"
        return _objects(file, [(f"{where} (row {index + 1})", row) for index, row in enumerate(value)])
    rows: list[tuple[str, Any]] = []
    pos = _skip_space(text, pos + 1)
    if pos < len(text) and text[pos] == "]":
        pos = len(text)
    while pos < len(text):
        start = pos
        try:
            value, pos = decode_json(text, start)
        except JSONProblem as problem:
            raise fail(problem, start) from None
        rows.append((f"{file}:{lines.at(start)} (row {len(rows) + 1})", value))
        pos = _skip_space(text, pos)
        if pos < len(text) and text[pos] == ",":
            pos = _skip_space(text, pos + 1)
            continue
        if pos < len(text) and text[pos] == "]":
            if _skip_space(text, pos + 1) < len(text):
                raise DataError(f"{file}:{lines.at(pos)}: malformed JSON: extra text after the closing ]")
            break
        raise DataError(
            f"{file}:{lines.at(min(pos, len(text)))}: malformed JSON: expected , or ] after a row "
            "(the file is cut short or a comma is missing)"
        )
    return _objects(file, rows)


def _objects(file: Path, rows: list[tuple[str, Any]]) -> list[LocatedRow]:
    errors = [
        f"{where}: expected a JSON object (a row), got {json_type(row)}"
        for where, row in rows
        if not isinstance(row, dict)
    ]
    if errors:
        shown = errors[:ERRORS_SHOWN]
        more = f"\n... and {len(errors) - ERRORS_SHOWN} more" if len(errors) > ERRORS_SHOWN else ""
        raise DataError(f"{file}: {len(errors)} row(s) are not JSON objects\n" + "\n".join(shown) + more)
    return [LocatedRow(where, row) for where, row in rows]


def _pandas_rows(file: Path, suffix: str) -> list[LocatedRow]:
    import pandas as pd

    try:
        if suffix == ".csv":
            frame = pd.read_csv(file, dtype=str, keep_default_na=False)
        else:
            frame = pd.read_parquet(file)
    except Exception as exc:  # parser errors differ by engine; all mean a bad file
        reason = (str(exc).strip().splitlines() or [""])[0][:300]
        raise DataError(f"{file}: cannot read as {suffix[1:]} ({type(exc).__name__}: {reason})") from None
    first = 2 if suffix == ".csv" else 1  # a CSV's line 1 is its header
    label = "{file}:{n}" if suffix == ".csv" else "{file}: row {n}"
    return [
        LocatedRow(label.format(file=file, n=index + first), {str(k): v for k, v in row.items()})
        for index, row in enumerate(frame.to_dict(orient="records"))
    ]


# --------------------------------------------------------------------------- rows to records


def dedupe_key(records: Sequence[dict[str, Any]]) -> str:
    """Same prompts and responses up to Unicode form, case and whitespace."""

    def norm(text: str) -> str:
        return " ".join(unicodedata.normalize("NFC", text).casefold().split())

    joined = "\x01".join(norm(r["prompt"]) + "\x00" + norm(r["response"]) for r in records)
    return hashlib.blake2b(joined.encode("utf-8"), digest_size=16).hexdigest()


@dataclass
class Outcome:
    """One row's fate: its records (with ``id`` and ``source``), or why it was dropped."""

    where: str
    records: list[dict[str, Any]]
    dropped: str | None = None


def normalise(
    source: Source,
    rows: Iterable[Row | LocatedRow],
    columns: Iterable[str],
    response_column: str | None = None,
    *,
    id_prefix: str | None = None,
    seen: set[str] | None = None,
) -> Iterator[Outcome]:
    """An :class:`Outcome` per row; records get ``source`` and a stable ``id`` (``<prefix>-<row>[-<turn>]``).

    ``seen`` (dedupe keys) spans the files of one collection, so a row repeated in another file is dropped.
    """
    chosen = source.response_column(columns, response_column)
    prefix = id_prefix or source.name
    seen = set() if seen is None else seen
    for index, item in enumerate(rows):
        located = item if isinstance(item, LocatedRow) else LocatedRow(f"row {index + 1}", dict(item))
        converted = source.to_records(located.row, chosen)
        if isinstance(converted, str):
            yield Outcome(located.where, [], converted)
            continue
        key = dedupe_key(converted)
        if key in seen:
            yield Outcome(located.where, [], DUPLICATE)
            continue
        seen.add(key)
        if any(len(record["prompt"]) > MAX_PROMPT_CHARS for record in converted):
            yield Outcome(located.where, [], TOO_LONG)
            continue
        records = []
        for record in converted:
            turn = record.pop("turn", None)
            suffix = f"-{turn}" if turn is not None else ""
            records.append({"id": f"{prefix}-{index}{suffix}", "source": source.name, **record})
        yield Outcome(located.where, records)
