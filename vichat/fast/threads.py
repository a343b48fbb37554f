"""How many CPU threads the decode steps use: all of them, or one when outside load makes them stall.

A batch-1 decode step is a chain of ~75 parallel matrix products. On an idle 2-core machine two threads
decode ~1.6x faster than one (about 80 vs 50 tokens/s for Gemma 3 270M). When another process keeps a core
busy, every product waits for a descheduled thread: two threads fell to 5-30 tokens/s with stalls of up to
a second, while one thread kept 35-50. So the decoder times its steps on both settings (one thread first: it
never stalls) and uses the faster; the other gets one step again now and then, less often each time it
loses. A try of all threads can itself stall for a second, so where /proc/stat tells that the other cores
were busy meanwhile, the try is skipped. The choice lives on the engine: later replies start from it.

The choice is for decode steps only, whose kernels give the same bits on any thread count (the kernel choice
checks it: vichat.fast.kernels). Prompt passes always run on all threads (``most``): their bigger products
(bfloat16 with AMX, for one) may sum in another order on another thread count (a prompt's logits moved by
0.19 between 1 and 2 threads on a Sapphire Rapids VM), and a seed must give the same answer every time.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

WEIGHT = 0.3  # of the newest step in the running estimate of the setting in use
PROBE_EVERY = 32  # steps before the other setting gets one step again (doubles after a losing try)
LONGEST_GAP = 256
IDLE_NEEDED = 0.7  # idle cores, per extra thread, for a try of all threads to be worth it


class IdleMeter:
    """Idle CPU cores (on average) since the previous call, from /proc/stat; None where it cannot tell."""

    def __init__(self, path: str = "/proc/stat") -> None:
        self.path = path
        self.last = self._read()

    def _read(self) -> tuple[int, int] | None:
        try:
            with open(self.path, encoding="ascii") as f:
                values = [int(v) for v in f.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        return values[3] + values[4], sum(values)  # idle + iowait, all

    def __call__(self) -> float | None:
        now, last = self._read(), self.last
        self.last = now
        if now is None or last is None or now[1] <= last[1]:
            return None
        return (os.cpu_count() or 1) * (now[0] - last[0]) / (now[1] - last[1])


@dataclass
class ThreadChoice:
    most: int = field(default_factory=torch.get_num_threads)
    estimate: dict[int, float] = field(default_factory=dict)  # threads -> seconds per step
    gap: int = PROBE_EVERY  # steps between tries of the setting that is not the best
    since_probe: int = 0
    probing: bool = False
    current: int = 0
    idle_cores: Callable[[], float | None] = field(default_factory=IdleMeter)

    def __post_init__(self) -> None:
        self.current = self.current or 1

    @property
    def options(self) -> tuple[int, ...]:
        return (1, self.most) if self.most > 1 else (1,)

    def observe(self, seconds: float) -> None:
        """Record one decode step's time on ``current`` threads and choose the setting for the next step."""
        n = self.current
        old = self.estimate.get(n)
        fresh = old is None or self.probing  # a try stands for itself; steady use is smoothed
        self.estimate[n] = seconds if fresh else (1 - WEIGHT) * old + WEIGHT * seconds
        untried = [m for m in self.options if m not in self.estimate]
        if untried:
            self.current = untried[0]
            return
        best = min(self.options, key=self.estimate.__getitem__)
        if self.probing:
            self.probing, self.since_probe = False, 0
            self.gap = PROBE_EVERY if n == best else min(2 * self.gap, LONGEST_GAP)
        else:
            self.since_probe += 1
        if len(self.options) > 1 and self.since_probe >= self.gap and self._worth_trying(best):
            self.probing = True
            self.current = next(m for m in self.options if m != best)
        else:
            self.current = best

    def _worth_trying(self, best: int) -> bool:
        """Try all threads only if the other cores were idle enough since the last look."""
        if best != 1:
            return True  # trying one thread never stalls
        idle = self.idle_cores()
        if idle is not None and idle < IDLE_NEEDED * (self.most - 1):
            self.since_probe = 0  # busy: look again after another gap
            return False
        return True
