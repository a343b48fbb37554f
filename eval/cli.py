"""What the eval CLIs share: typed dataclass arguments, comma lists, and user errors as one line (exit 2)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
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


def run(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run a CLI ``main``: a ViChatError is printed as one line and gives exit status 2."""
    try:
        return main(argv)
    except ViChatError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished work is saved; run the same command again to continue", file=sys.stderr)
        return 130
