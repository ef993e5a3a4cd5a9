"""Records in their schema's shape: UTC timestamps, every schema key, unknown keys dropped."""

from __future__ import annotations

import typing as t
from datetime import UTC, datetime

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable


_fromisoformat = datetime.fromisoformat


def utc_iso(value: object) -> str | None:
    """Return `value` as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC), or None when it is no timestamp.

    One fixed format matters: the SDK compares bookmark strings as strings.
    """
    # Fast paths for the APIs' usual `2024-01-01T10:00:00.123Z` and for values already in
    # our format (a partner's row re-shaped); still checked: no Feb 30.
    if (
        value.__class__ is str
        and len(value) == 24
        and value[23] == "Z"
        and value[19] == "."
        and value[20:23].isdigit()
    ):
        try:
            _fromisoformat(value[:19])
        except ValueError:
            return None
        return value[:23] + "000Z"
    if not isinstance(value, str) or not value:
        return None
    size = len(value)
    if size == 27 and value[19] == "." and value[26] == "Z" and value[20:26].isdigit():
        try:
            datetime.fromisoformat(value[:19])
        except ValueError:
            return None
        return value
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    except (OverflowError, ValueError):  # e.g. year 0001 with a positive offset
        return None


def parse_utc(value: str) -> datetime:
    """A timestamp string as an aware datetime (naive ones are taken as UTC)."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class Shaper:
    """Puts API records in one stream's schema shape, warning once per unknown key.

    Every schema key is present (null when the API sent none), keys the schema does not
    know are dropped, and timestamps become UTC ISO-8601 (null, with a warning, when a
    value is no timestamp).
    """

    def __init__(
        self,
        stream: str,
        fields: Iterable[str],
        datetime_fields: Iterable[str],
        *,
        expected_extra: Iterable[str] = (),
        warn: Callable[..., None],
    ) -> None:
        self.stream = stream
        self.fields = tuple(fields)
        self.datetime_fields = tuple(f for f in datetime_fields if f in self.fields)
        #: Keys a record may have without a warning: the schema's, the expected extras,
        #: and unknown keys already warned about (once is enough).
        self._allowed = frozenset(self.fields) | frozenset(expected_extra)
        self._template = dict.fromkeys(self.fields)  # every key, in schema order, null
        self._warn = warn

    def __call__(self, record: dict[str, t.Any]) -> dict[str, t.Any]:
        shaped = self._template.copy()
        shaped.update(record)  # schema keys keep their place; others are appended
        if len(shaped) != len(self._template):  # keys outside the schema: dropped
            if not record.keys() <= self._allowed:  # a subset test, no set built
                unknown = record.keys() - self._allowed
                self._allowed |= unknown
                self._warn(
                    "Stream %s: the API sent fields the schema does not have, dropped: %s",
                    self.stream,
                    ", ".join(sorted(unknown)),
                )
            shaped = {name: shaped[name] for name in self.fields}
        for name in self.datetime_fields:
            value = shaped[name]
            if value is not None:
                shaped[name] = utc_iso(value)
                if shaped[name] is None:
                    self._warn(
                        "Field %s of a %s record is not a timestamp (%r): emitted as null",
                        name,
                        self.stream,
                        str(value)[:40],
                    )
        return shaped
