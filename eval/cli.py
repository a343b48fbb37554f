"""What the eval CLIs share: typed dataclass arguments and comma lists. They run through vichat.cli.run, the one
runner of every CLI (a user error is one line, exit status 2)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vichat.errors import ViChatError


def parse(types: type | tuple[type, ...], argv: Sequence[str] | None) -> tuple[Any, ...]:
    """Parse ``argv`` into the given dataclasses (``--batch-size`` and ``--batch_size`` both work)."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(types if isinstance(types, tuple) else (types,))
    *parsed, unknown = parser.parse_args_into_dataclasses(
        args=list(argv) if argv is not None else None, return_remaining_strings=True
    )
    if unknown:
        raise ViChatError(f"unknown arguments: {' '.join(unknown)} (see --help)")
    return tuple(parsed)


def names(value: str | None) -> list[str]:
    """``"A, B,C"`` -> ``["A", "B", "C"]``."""
    return [v.strip() for v in (value or "").split(",") if v.strip()]
