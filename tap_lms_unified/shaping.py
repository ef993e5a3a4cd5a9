"""Records in their schema's shape: UTC timestamps, every schema key, unknown keys dropped."""

from __future__ import annotations

import typing as t
from datetime import datetime, timezone

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable


def utc_iso(value: object) -> str | None:
    """Return `value` as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC), or None when it is no timestamp.

    One fixed format matters: the SDK compares bookmark strings as strings.
    """
    if not isinstance(value, str) or not value or not value.isascii():
        return None  # ASCII only: Python also reads other scripts' digits (e.g. Arabic-Indic)
    # Fast path for the APIs' usual `2024-01-01T10:00:00.123Z` (still checked: no Feb 30).
    if (
        len(value) == 24
        and value[10] == "T"
        and value[19] == "."
        and value[23] == "Z"
        and value[20:23].isdigit()
    ):
        try:
            datetime.fromisoformat(value[:19])
        except ValueError:
            return None
        return value[:23] + "000Z"
    # RFC 3339 separates date and time with `T` (or `t`, or a space); Python takes any.
    if len(value) > 10 and value[10] not in "Tt ":
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    try:
        return parsed.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    except (OverflowError, ValueError):  # e.g. year 0001 with a positive offset
        return None


def parse_utc(value: str) -> datetime:
    """A timestamp string as an aware datetime (naive ones are taken as UTC)."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


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
        self.datetime_fields = tuple(datetime_fields)
        self._known_extra = frozenset(expected_extra)
        self._warned: frozenset[str] = frozenset()
        self._warn = warn

    def __call__(self, record: dict[str, t.Any]) -> dict[str, t.Any]:
        shaped = {name: record.get(name) for name in self.fields}
        if len(shaped) != len(record) or record.keys() != shaped.keys():
            unknown = record.keys() - shaped.keys() - self._known_extra - self._warned
            if unknown:
                self._warned |= unknown
                self._warn(
                    "Stream %s: the API sent fields the schema does not have, dropped: %s",
                    self.stream,
                    ", ".join(sorted(unknown)),
                )
        for name in self.datetime_fields:
            value = shaped.get(name)
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
