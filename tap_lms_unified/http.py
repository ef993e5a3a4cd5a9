"""HTTP: each tenant's rate budget and session, and the waits the provider asks for."""

from __future__ import annotations

import email.utils
import threading
import time
import typing as t
from datetime import UTC, datetime
from urllib.parse import urlparse

import requests


class RateBudget:
    """Keeps one tenant under its request budget, proactively and from the API's headers.

    `per_minute` caps requests in any rolling 60 s window (a provider's published budget).
    After each response the provider's `*ratelimit-remaining`/`-reset` headers are read:
    when nothing remains, the next request waits for the reset.
    """

    def __init__(self, per_minute: int | None, *, reset_is_epoch: bool, max_wait: float) -> None:
        self.per_minute = per_minute
        self.max_wait = max_wait  # never wait longer than this for a reset header
        self.window = 60.0
        self.reset_is_epoch = reset_is_epoch
        self._sent: list[float] = []
        self._not_before = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Block until one more request fits the budget, then count it."""
        with self._lock:
            while True:
                now = time.monotonic()
                wait = self._not_before - now
                if self.per_minute:
                    self._sent = [s for s in self._sent if s > now - self.window]
                    if len(self._sent) >= self.per_minute:
                        # A small margin: the server's clock starts its window a bit later.
                        margin = min(1.0, self.window * 0.02)
                        wait = max(wait, self._sent[0] + self.window + margin - now)
                if wait <= 0:
                    if self.per_minute:
                        self._sent.append(now)
                    return
                time.sleep(wait)

    def observe(self, response: requests.Response) -> None:
        """Respect the provider's own view of the budget for the next request."""
        headers = response.headers
        remaining = headers.get("ratelimit-remaining") or headers.get("x-ratelimit-remaining")
        if remaining is None or not remaining.strip().isdigit() or int(remaining) > 0:
            return
        wait = reset_seconds(response, reset_is_epoch=self.reset_is_epoch)
        if wait is not None:
            wait = min(wait, self.max_wait)
            with self._lock:
                self._not_before = max(self._not_before, time.monotonic() + wait)


def reset_seconds(response: requests.Response, *, reset_is_epoch: bool) -> float | None:
    """Seconds to wait according to `Retry-After` or the rate-limit reset header."""
    headers = response.headers
    retry_after = headers.get("retry-after")
    if retry_after:
        if retry_after.strip().replace(".", "", 1).isdigit():
            return float(retry_after)
        try:
            when = email.utils.parsedate_to_datetime(retry_after)
        except (TypeError, ValueError):  # neither seconds nor an HTTP date: ignore it
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            return max(0.0, (when - datetime.now(UTC)).total_seconds())
    reset = headers.get("ratelimit-reset") or headers.get("x-ratelimit-reset")
    if reset and reset.strip().replace(".", "", 1).isdigit():
        value = float(reset)
        # Unix seconds or seconds from now (`Provider.reset_is_epoch`). A huge value is a date.
        if reset_is_epoch or value > 1_000_000_000:
            return max(0.0, value - time.time())
        return value
    return None


class BudgetedSession(requests.Session):
    """A session that asks the tenant's budget before every request, retries included."""

    def __init__(self, budget: RateBudget) -> None:
        super().__init__()
        self.budget = budget

    def send(self, request: requests.PreparedRequest, **kwargs: t.Any) -> requests.Response:
        self.budget.acquire()
        response = super().send(request, **kwargs)
        self.budget.observe(response)
        return response


def host_of(url: str) -> str:
    """The host part of a URL, for messages."""
    return urlparse(url).hostname or url
