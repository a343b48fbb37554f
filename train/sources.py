"""The public English datasets the paper translated, and how each becomes prompt/response records.

Column layouts (checked against the datasets' cards on the Hugging Face hub):

- ``tatsu-lab/alpaca`` (train, 52,002 rows): ``instruction``, ``input``, ``output``, ``text``.
  prompt = instruction, plus a blank line and the input when the input is not empty (the
  Alpaca recipe's "instruction with input"); response = output. ``text`` (the pre-formatted
  English prompt) is ignored.
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

The paper's ChatDoctor mixture also has 5k ChatGPT-generated conversations; no source here
provides them.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from vichat.data import iter_json_lines
from vichat.errors import DataError

Row = Mapping[str, Any]


@dataclass(frozen=True)
class Source:
    """A public dataset: where it lives, which columns it has, how a row becomes a record."""

    name: str
    hub_id: str
    split: str
    prompt_columns: tuple[str, ...]
    """Columns that must all be present."""
    response_columns: tuple[str, ...]
    """Accepted answer columns, in order of preference: the first present is used."""
    to_record: Callable[[Row, str], dict[str, Any] | None]
    """``(row, response_column)`` to a record without ``source``/``id``; None skips the row."""

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


def alpaca_record(row: Row, response_column: str) -> dict[str, Any] | None:
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


def gpt4all_record(row: Row, response_column: str) -> dict[str, Any] | None:
    record = _pair(gpt4all_text(_text(row, "prompt")), gpt4all_text(_text(row, response_column)))
    if record is not None and _text(row, "source"):
        record["origin"] = _text(row, "source")
    return record


def patient_record(row: Row, response_column: str) -> dict[str, Any] | None:
    return _pair(_text(row, "input"), _text(row, response_column))


def _pair(prompt: str, response: str) -> dict[str, Any] | None:
    return {"prompt": prompt, "response": response} if prompt and response else None


SOURCES: Mapping[str, Source] = MappingProxyType(
    {
        "alpaca": Source(
            "alpaca", "tatsu-lab/alpaca", "train", ("instruction", "input"), ("output",), alpaca_record
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
    }
)


def get_source(name: str) -> Source:
    try:
        return SOURCES[name]
    except KeyError:
        raise DataError(f"unknown source {name!r}; choose one of {', '.join(SOURCES)}") from None


# --------------------------------------------------------------------------- local files

LOCAL_FORMATS = (".json", ".jsonl", ".csv", ".parquet")


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a local copy: JSON (a list of objects), JSON Lines, CSV or Parquet."""
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


def _jsonl_rows(file: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with file.open("rb") as stream:
        for number, value, error in iter_json_lines(stream, str(file)):
            if error is not None:
                raise DataError(str(error))
            if not isinstance(value, dict):
                raise DataError(f"{file}:{number}: expected a JSON object per line")
            rows.append(value)
    return rows


def _json_rows(file: Path) -> list[dict[str, Any]]:
    try:
        value = json.loads(file.read_bytes())
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # several values: JSON Lines with a .json name
            return _jsonl_rows(file)
        raise DataError(f"{file}:{exc.lineno}: malformed JSON: {exc.msg} (column {exc.colno})") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{file}: invalid UTF-8 at byte {exc.start}") from None
    if isinstance(value, dict):  # {"train": [...]} or {"data": [...]}
        lists = [item for item in value.values() if isinstance(item, list)]
        value = lists[0] if len(lists) == 1 else [value]
    if not isinstance(value, list) or not all(isinstance(row, dict) for row in value):
        raise DataError(f"{file}: expected a JSON array of objects")
    return value


def _pandas_rows(file: Path, suffix: str) -> list[dict[str, Any]]:
    import pandas as pd

    try:
        if suffix == ".csv":
            frame = pd.read_csv(file, dtype=str, keep_default_na=False)
        else:
            frame = pd.read_parquet(file)
    except Exception as exc:  # parser errors differ by engine; all mean a bad file
        raise DataError(f"{file}: cannot read as {suffix[1:]} ({type(exc).__name__}: {exc})") from None
    return frame.to_dict(orient="records")


def normalise(
    source: Source, rows: Iterable[Row], columns: Iterable[str], response_column: str | None = None
) -> Iterator[tuple[int, dict[str, Any] | None]]:
    """``(row_index, record or None)`` per row; records get ``source`` and a stable ``id``."""
    chosen = source.response_column(columns, response_column)
    for index, row in enumerate(rows):
        record = source.to_record(row, chosen)
        if record is not None:
            record = {"id": f"{source.name}-{index}", "source": source.name, **record}
        yield index, record
