"""Heavy one-off torch work (loading a base, timing kernels, a reference generate) runs in a passing thread.

Each thread that runs multi-threaded torch work keeps OpenMP worker threads of its own for as long as it
lives, and once a process holds more of them than it has cores, libgomp cuts its busy-wait to a few hundred
spins: each of the ~1,000 small parallel products of a fast-path decode step then pays a sleep and a wake-up.
Measured on a 2-core AMD EPYC (Gemma 3 270M, batch 1, two threads): 26-30 ms per step in the decoding thread
after the main thread had loaded the model on two threads, 14-16 ms when no other thread held workers, 14.4
ms in the main thread itself. So such work runs in a thread that ends with it, whose workers go with it, and
the decoding thread (vichat.fast.scheduler) is the one that keeps them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def in_own_thread(fn: Callable[..., T], *args, **kwargs) -> T:
    """``fn(*args, **kwargs)`` run in a thread that ends with it; its result, or its exception raised here."""
    result: list = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn(*args, **kwargs))
        except BaseException as e:  # noqa: BLE001 - raised again in the caller's thread
            error.append(e)

    thread = threading.Thread(target=run, name=f"vichat-{getattr(fn, '__name__', 'work')}", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]
