"""State a user brings: checked for shape, and migrated from the unpartitioned form.

The tap keeps one SDK state partition per tenant. A state written by a single-tenant tap or
an earlier version has the bookmark at stream level; with one tenant it is that tenant's
bookmark, with several it cannot be attributed and is ignored with one warning.
"""

from __future__ import annotations

import typing as t

if t.TYPE_CHECKING:
    import logging
    from collections.abc import Mapping


class StateError(ValueError):
    """The state does not have the shape of a Singer state."""


def check_shape(state: object) -> None:
    """Raise StateError naming the first part of `state` that is not a Singer state."""
    if not isinstance(state, dict):
        raise StateError(f"must be a JSON object, not {_kind(state)}")
    bookmarks = state.get("bookmarks", {})
    if not isinstance(bookmarks, dict):
        raise StateError(f"'bookmarks' must be an object, not {_kind(bookmarks)}")
    for stream, entry in bookmarks.items():
        where = f"'bookmarks.{stream}'"
        if not isinstance(entry, dict):
            raise StateError(f"{where} must be an object, not {_kind(entry)}")
        partitions = entry.get("partitions", [])
        if not isinstance(partitions, list):
            raise StateError(f"{where}.partitions must be a list, not {_kind(partitions)}")
        for position, partition in enumerate(partitions):
            if not isinstance(partition, dict) or not isinstance(partition.get("context"), dict):
                msg = f"{where}.partitions[{position}] must be an object with a 'context'"
                raise StateError(msg)


def migrate(
    state: dict[str, t.Any],
    *,
    tenant_field: str,
    tenants: list[str],
    logger: logging.Logger,
) -> dict[str, t.Any]:
    """`state` with stream-level bookmarks moved into the single tenant's partition."""
    bookmarks = state.get("bookmarks") or {}
    legacy = {
        stream: entry
        for stream, entry in bookmarks.items()
        if "replication_key_value" in entry and not entry.get("partitions")
    }
    if not legacy:
        return state
    if len(tenants) != 1:
        logger.warning(
            "The state has stream-level bookmarks (%s), as written by a single-tenant run; "
            "with %d tenants they cannot be attributed and are ignored: each tenant "
            "starts from its own bookmarks, or from the beginning.",
            ", ".join(sorted(legacy)),
            len(tenants),
        )
        return state
    migrated = {**state, "bookmarks": dict(bookmarks)}
    for stream, entry in legacy.items():
        partition = {"context": {tenant_field: tenants[0]}}
        partition.update({k: v for k, v in entry.items() if k in _BOOKMARK_KEYS})
        rest = {k: v for k, v in entry.items() if k not in _BOOKMARK_KEYS}
        migrated["bookmarks"][stream] = {**rest, "partitions": [partition]}
    logger.info(
        "Read the stream-level bookmarks of %s as those of tenant %s.",
        ", ".join(sorted(legacy)),
        tenants[0],
    )
    return migrated


_BOOKMARK_KEYS = ("replication_key", "replication_key_value")


def _kind(value: object) -> str:
    names = {"dict": "an object", "list": "a list", "str": "a string", "NoneType": "null"}
    return names.get(type(value).__name__, type(value).__name__)


def bookmark_of(partition_state: Mapping[str, t.Any], replication_key: str) -> t.Any:
    """The bookmark value of a partition for this replication key, if any."""
    if partition_state.get("replication_key") == replication_key:
        return partition_state.get("replication_key_value")
    return None
