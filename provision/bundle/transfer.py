"""How bytes move: retries with backoff, an optional rate limit, and a deadline that
bounds every transfer in total time as well as per read.

Shared by downloads into a bundle and uploads from one, so both retry, pace and give
up the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

# A transfer slower than this on average is as good as stalled: it is cut off and
# retried (resumed where possible). Per-read timeouts catch silence; this catches a
# trickle that would otherwise never end.
MIN_RATE = 64 * 1024  # bytes per second
DEADLINE_SLACK = 120.0  # seconds on top of size / MIN_RATE


@dataclass(frozen=True)
class TransferOptions:
    retries: int = 5  # attempts after the first, per blob
    backoff_base: float = 1.0  # first retry delay, doubled each retry
    backoff_max: float = 30.0
    limit_rate: float | None = None  # bytes per second, None: as fast as it goes
    connect_timeout: float = 5.0
    read_timeout: float = 60.0  # per read: silence for this long is a failed attempt

    def delay(self, retry: int) -> float:
        """Seconds before retry number `retry` (1-based): base, 2x, 4x ... capped."""
        return min(self.backoff_base * (2 ** (retry - 1)), self.backoff_max)


class TooSlow(Exception):
    """A transfer ran past its deadline."""


class Pace:
    """Counts one transfer's bytes: sleeps to keep under the rate limit, and raises
    TooSlow past the deadline (DEADLINE_SLACK + size / MIN_RATE from the start)."""

    def __init__(self, size: int, limit_rate: float | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.clock = clock
        self.sleep = sleep
        self.limit_rate = limit_rate if limit_rate and limit_rate > 0 else None
        self.started = clock()
        self.deadline = self.started + DEADLINE_SLACK + size / MIN_RATE
        self.moved = 0

    def moved_bytes(self, count: int) -> None:
        self.moved += count
        now = self.clock()
        if self.limit_rate is not None:
            ahead = self.moved / self.limit_rate - (now - self.started)
            if ahead > 0:
                self.sleep(ahead)
                now = self.clock()
        if now > self.deadline:
            raise TooSlow(f"slower than {MIN_RATE // 1024} KiB/s on average")


_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def parse_bytes(text: str) -> int:
    """`12M`, `1.5G`, `100G`, `800K`, `0`, `1000000`: bytes (decimal units, as shown);
    ValueError when it is not a size."""
    raw = text.strip().upper().removesuffix("B")
    unit = raw[-1:] if raw[-1:] in _UNITS else ""
    number = raw[: len(raw) - len(unit)].strip()
    if not number or len(number) > 20:
        raise ValueError(text)
    value = float(number)  # ValueError for anything else
    if not 0 <= value < 1e18 / _UNITS[unit]:  # also refuses inf and nan
        raise ValueError(text)
    return int(value * _UNITS[unit])


def parse_rate(text: str) -> float:
    """`50M`, `1.5G`, `800K`, `1000000`: bytes per second (decimal units, as shown)."""
    value = parse_bytes(text.strip().upper().removesuffix("/S"))
    if value <= 0:
        raise ValueError(text)
    return float(value)
