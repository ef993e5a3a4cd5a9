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

    It is shared by every walk of the tenant: every endpoint draws on the same budget.

    `per_minute` caps requests in any rolling 60 s window (a provider's published budget).
    The provider's `*ratelimit-remaining`/`-reset` headers set the rest: within one reset
    window, the fewest requests any answer said remain, less the requests still in flight
    (the API may not have counted them yet), may be sent; when none may, the next request
    waits for the reset. Answers arrive out of order when walks run concurrently: the
    fewest remaining is the answer counted last, so this never overshoots.
    """

    def __init__(self, per_minute: int | None, *, reset_is_epoch: bool, max_wait: float) -> None:
        self.per_minute = per_minute
        self.max_wait = max_wait  # never wait longer than this for a reset header
        self.window = 60.0
        self.reset_is_epoch = reset_is_epoch
        self._sent: list[float] = []
        self._tickets = 0  # requests sent so far: a request's ticket is its number
        self._in_flight = 0
        self._remaining: int | None = None  # the fewest remaining any answer of this window said
        self._reset_at = 0.0  # when this window ends (monotonic)
        self._window_ticket = 1  # the first ticket sent in this window
        self._cond = threading.Condition()

    def acquire(self) -> int:
        """Block until one more request fits the budget, then count it; its ticket."""
        with self._cond:
            while True:
                now = time.monotonic()
                wait = 0.0
                if self._remaining is not None and now >= self._reset_at:
                    # A new window: the answers to requests sent from now on tell its budget.
                    self._remaining, self._window_ticket = None, self._tickets + 1
                if self._remaining is not None and self._remaining - self._in_flight <= 0:
                    wait = self._reset_at - now
                if self.per_minute:
                    self._sent = [s for s in self._sent if s > now - self.window]
                    if len(self._sent) >= self.per_minute:
                        # A small margin: the server's clock starts its window a bit later.
                        margin = min(1.0, self.window * 0.02)
                        wait = max(wait, self._sent[0] + self.window + margin - now)
                if wait <= 0:
                    if self.per_minute:
                        self._sent.append(now)
                    self._tickets += 1
                    self._in_flight += 1
                    return self._tickets
                self._cond.wait(wait)  # an answer may change the budget meanwhile

    def observe(self, response: requests.Response, ticket: int | None = None) -> None:
        """Respect the provider's own view of the budget for the next requests."""
        headers = response.headers
        remaining = headers.get("ratelimit-remaining") or headers.get("x-ratelimit-remaining")
        if remaining is None or not remaining.strip().isdigit():
            return
        wait = reset_seconds(response, reset_is_epoch=self.reset_is_epoch)
        if wait is None:
            return
        reset_at = time.monotonic() + min(wait, self.max_wait)
        with self._cond:
            if ticket is not None and ticket < self._window_ticket:
                return  # sent in an earlier window
            if self._remaining is None or int(remaining) < self._remaining:
                self._remaining = int(remaining)
            self._reset_at = max(self._reset_at, reset_at)
            self._cond.notify_all()

    def done(self) -> None:
        """A request sent after `acquire` was answered (or failed)."""
        with self._cond:
            self._in_flight -= 1
            self._cond.notify_all()


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
        ticket = self.budget.acquire()
        try:
            response = super().send(request, **kwargs)
            self.budget.observe(response, ticket)
        finally:
            self.budget.done()
        return response


def host_of(url: str) -> str:
    """The host part of a URL, for messages."""
    return urlparse(url).hostname or url
