"""One corpus of bad inputs, shared by every CLI and UI handler test in this folder.

Each entry is (name, bytes). The files are written fresh per test by :func:`write_corpus`, so a test that
checks "no file lost or changed" can hash them before and after.
"""

from __future__ import annotations

import json
from pathlib import Path

GOOD = '{"prompt": "Xin chào", "response": "Chào bạn"}\n'

BAD_JSONL: dict[str, bytes] = {
    "malformed": (GOOD + '{"prompt": "thiếu ngoặc"\n' + GOOD).encode(),
    "utf16": GOOD.encode("utf-16"),
    "utf16le_no_bom": GOOD.encode("utf-16-le"),
    "json_array": json.dumps([{"prompt": "a", "response": "b"}]).encode(),
    "huge_int": ('{"prompt": "a", "response": "b", "id": ' + "9" * 5000 + "}\n").encode(),
    "deep_nesting": ('{"prompt": "a", "response": "b", "x": ' + "[" * 100000 + "]" * 100000 + "}\n").encode(),
    "nan": b'{"prompt": "a", "response": "b", "score": NaN}\n',
    "lone_surrogate": b'{"prompt": "a\\ud800", "response": "b"}\n',
    "not_object": b'"just a string"\n',
    "missing_field": b'{"prompt": "a"}\n',
    "wrong_type": b'{"prompt": 5, "response": "b"}\n',
    "invalid_utf8": b'{"prompt": "\xff\xfe", "response": "b"}\n',
    "empty_file": b"",
    "blank_lines": b"\n\n  \n",
    "empty_strings": b'{"prompt": "", "response": ""}\n',
    "huge_prompt": ('{"prompt": "' + "chữ " * 250_000 + '", "response": "b"}\n').encode(),
    "no_final_newline_torn": (GOOD + '{"prompt": "a", "resp').encode(),
}


def write_corpus(folder: Path, names: list[str] | None = None, suffix: str = ".jsonl") -> dict[str, Path]:
    """Write the bad files (all, or ``names``) under ``folder``; return name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, data in BAD_JSONL.items():
        if names is not None and name not in names:
            continue
        path = folder / f"{name}{suffix}"
        path.write_bytes(data)
        paths[name] = path
    return paths


BAD_NUMBERS = ["nan", "NaN", "inf", "-inf", "-1", "-5", "0", "1e309", "abc", ""]
