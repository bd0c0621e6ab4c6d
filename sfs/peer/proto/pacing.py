"""`--limit-rate`: a token bucket, sans I/O (the clock is passed in).

Each side that paces asks, after each chunk of file data it sent or took, how long to
wait before the next: the bucket refills at ``rate`` bytes a second and holds at most
``burst``, so over any stretch longer than ``burst / rate`` the data moves at no more
than ``rate``. The sender waits before sending more; a receiver that waits stops
reading, and the transport's flow control holds the sender back.
"""

from __future__ import annotations

#: What the bucket holds at most: a quarter of a second at the rate, at least one
#: frame, so a limit far below a frame a second still moves (one frame at a time).
BURST_SECONDS = 0.25


class Pace:
    """:param rate: bytes a second, more than 0."""

    def __init__(self, rate: float, now: float, *, largest: int = 256 * 1024) -> None:
        if not rate > 0:
            raise ValueError(f"a rate limit must be more than 0, not {rate}")
        self.rate = float(rate)
        self.burst = max(self.rate * BURST_SECONDS, float(largest))
        self._tokens = self.burst
        self._at = now

    def spend(self, n: int, now: float) -> float:
        """Take ``n`` bytes; the seconds to wait before the next (0 if none)."""
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate) - n
        self._at = now
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate
