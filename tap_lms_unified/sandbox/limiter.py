"""Fixed-window request budgets (one window per tenant key)."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class RateState:
    allowed: bool
    limit: int | None  # None = unlimited
    remaining: int | None
    reset_at: float  # epoch seconds when the current window ends
    count: int = 0  # requests admitted in the current window

    def reset_in(self, now: float | None = None) -> int:
        """Whole seconds until the window resets (at least 1)."""
        now = time.time() if now is None else now
        return max(1, math.ceil(self.reset_at - now))


class FixedWindowLimiter:
    """A window opens with the first request and lasts ``window_s`` seconds.

    Only admitted requests count; a rejected request does not extend the window.
    """

    def __init__(self, limit: int | None, window_s: float = 60.0) -> None:
        self.limit = limit
        self.window_s = window_s
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[float, int]] = {}

    def configure(self, limit: int | None, window_s: float) -> None:
        with self._lock:
            self.limit = limit
            self.window_s = window_s
            self._windows.clear()

    def hit(self, key: str, now: float | None = None) -> RateState:
        now = time.time() if now is None else now
        with self._lock:
            start, count = self._windows.get(key, (now, 0))
            if now >= start + self.window_s:
                start, count = now, 0
            allowed = self.limit is None or count < self.limit
            if allowed:
                count += 1
            self._windows[key] = (start, count)
            remaining = None if self.limit is None else max(0, self.limit - count)
            return RateState(allowed, self.limit, remaining, start + self.window_s, count)
