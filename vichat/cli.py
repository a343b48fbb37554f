"""One runner for every CLI of the project (``python -m vichat.X``, ``train.X``, ``eval.X``).

A user's mistake is a :class:`ViChatError`: printed as one ``error:`` line, exit status 2. A file the OS
refuses (missing, permission, disk full) is the user's world, not a bug: one line, exit status 1. Ctrl-C
says that finished work is saved, exit status 130. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from vichat.errors import ViChatError


def run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Call ``main(argv)`` and turn user errors into one line and an exit status."""
    try:
        return int(main(argv) or 0)
    except ViChatError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file or folder the OS refused: name it, no traceback
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"error: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: finished work is saved; run the same command again to continue", file=sys.stderr)
        return 130
