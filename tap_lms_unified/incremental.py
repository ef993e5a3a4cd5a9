"""Incremental walks, once for every provider whose streams declare a filter.

Each tenant of a stream with a replication key keeps its own bookmark (an SDK state
partition). A walk starts at the bookmark minus `lookback_window_minutes`, or at
`start_date` on a first run; a full-table sync (forced in the catalog) ignores the
bookmark but keeps `start_date`, the user's own lower bound. Bookmarks that are no
timestamp, or lie in the future, are ignored with a warning: the stream is then read in
full once, so nothing is lost. Where each walk starts is decided in the main thread before
any walk runs; the walks only read it. Two streams sharing one walk (paired streams) start
it at the earlier of their starts.

The bookmark itself moves through the SDK: only when a tenant's walk of the stream has
completed (`is_sorted = False`), never past the moment the run started (the signpost).
"""

from __future__ import annotations

import typing as t
from datetime import UTC, datetime, timedelta

from tap_lms_unified.shaping import parse_utc, utc_iso
from tap_lms_unified.state import bookmark_of

if t.TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from tap_lms_unified.provider import IncrementalFilter


def signpost_value(value: t.Any) -> t.Any:
    """The SDK's signpost in the records' timestamp format (bookmarks compare as strings)."""
    return utc_iso(value.isoformat()) if isinstance(value, datetime) else value


class Incremental:
    """One stream's incremental reads: where each tenant's walk starts, and its filter."""

    def __init__(
        self,
        *,
        stream: str,
        replication_key: str | None,
        where: IncrementalFilter | None,
        config: Mapping[str, t.Any],
        warn: Callable[[str], None],
    ) -> None:
        self.stream = stream
        self.replication_key = replication_key
        self.filter = where if replication_key else None
        self.config = config
        self.warn = warn
        #: Where this run's walk of each tenant starts (None: from the beginning).
        self.starts: dict[str, datetime | None] = {}
        #: Tenants whose integration refused the filter (walked in full instead).
        self.refusals: set[str] = set()

    def own_start(
        self, partition_state: Mapping[str, t.Any], tenant: str, *, full_table: bool
    ) -> datetime | None:
        """Where this stream alone would start this tenant's walk."""
        if self.filter is None:
            return None
        candidates = []
        bookmark = None if full_table else self.bookmark(partition_state, tenant)
        if bookmark is not None:
            lookback = timedelta(minutes=int(self.config.get("lookback_window_minutes") or 0))
            candidates.append(bookmark - lookback)
        if self.config.get("start_date"):
            candidates.append(parse_utc(utc_iso(self.config["start_date"]) or ""))
        return max(candidates) if candidates else None

    def bookmark(self, partition_state: Mapping[str, t.Any], tenant: str) -> datetime | None:
        """A tenant's usable bookmark, if any."""
        value = bookmark_of(partition_state, str(self.replication_key))
        if value is None:
            return None
        parsed = utc_iso(value) if isinstance(value, str) else None
        if parsed is None:
            self.warn(
                f"Stream {self.stream}, tenant {tenant}: the bookmark {str(value)[:40]!r} is "
                "not a timestamp; ignored, so the stream is read in full once."
            )
            return None
        moment = parse_utc(parsed)
        if moment > datetime.now(UTC):
            self.warn(
                f"Stream {self.stream}, tenant {tenant}: the bookmark {parsed} lies in the "
                "future; ignored, so the stream is read in full once."
            )
            return None
        return moment

    def params(self, tenant: str) -> dict[str, str]:
        """The filter of this tenant's walk (none: the walk reads everything)."""
        start = self.starts.get(tenant)
        if self.filter is None or start is None:
            return {}
        return {self.filter.param: self.filter.value(start)}

    def refused(self, tenant: str) -> bool:
        """The integration refused this tenant's filter: whether to walk it in full instead
        (from then on `params` sends no filter, and `filtered` says so)."""
        if self.filter is None or not self.filter.may_refuse or self.starts.get(tenant) is None:
            return False
        self.starts[tenant] = None
        self.refusals.add(tenant)
        return True

    def filtered(self) -> bool:
        """Whether this run's walks of the stream left records out (a date filter)."""
        return any(start is not None for start in self.starts.values())


def earliest(own: datetime | None, other: datetime | None) -> datetime | None:
    """The start of a walk two streams share: the earlier one; None reads everything."""
    return None if own is None or other is None else min(own, other)
