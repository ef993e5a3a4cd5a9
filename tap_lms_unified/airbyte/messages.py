"""Airbyte protocol messages, and the translations between Airbyte and Singer terms.

Pure functions: the Airbyte spec from the tap's settings, Airbyte streams from the tap's
streams, the Singer catalog and state from an Airbyte configured catalog and state.
"""

from __future__ import annotations

import copy
import time
import typing as t

SUCCEEDED, FAILED = "SUCCEEDED", "FAILED"
CONFIG_ERROR, TRANSIENT_ERROR, SYSTEM_ERROR = "config_error", "transient_error", "system_error"
STARTED, RUNNING, COMPLETE, INCOMPLETE = "STARTED", "RUNNING", "COMPLETE", "INCOMPLETE"
FULL_REFRESH, INCREMENTAL = "full_refresh", "incremental"
#: Settings that make no sense under Airbyte, which handles full-refresh replacement itself.
NOT_IN_SPEC = ("emit_activate_version_messages",)
#: One stream's `stream_state`: the tap's bookmark structure of that stream.
StreamState = dict[str, t.Any]
LOG_LEVELS = {50: "FATAL", 40: "ERROR", 30: "WARN", 20: "INFO", 10: "DEBUG"}


class InputError(ValueError):
    """A command-line input (config, catalog, state) that cannot be used: a config error."""


def now_ms() -> int:
    return int(time.time() * 1000)


# ---------------------------------------------------------------- messages


def spec_message(config_schema: dict[str, t.Any], title: str) -> dict[str, t.Any]:
    return {
        "type": "SPEC",
        "spec": {
            "connectionSpecification": connection_specification(config_schema, title),
            "supportsIncremental": True,
            "supported_destination_sync_modes": ["overwrite", "append", "append_dedup"],
        },
    }


def connection_status(status: str, message: str) -> dict[str, t.Any]:
    return {"type": "CONNECTION_STATUS", "connectionStatus": {"status": status, "message": message}}


def catalog_message(streams: list[dict[str, t.Any]]) -> dict[str, t.Any]:
    return {"type": "CATALOG", "catalog": {"streams": streams}}


def record_message(stream: str, data: dict[str, t.Any], emitted_at: int) -> dict[str, t.Any]:
    return {"type": "RECORD", "record": {"stream": stream, "data": data, "emitted_at": emitted_at}}


def stream_state_message(
    stream: str, stream_state: dict[str, t.Any], record_count: int
) -> dict[str, t.Any]:
    return {
        "type": "STATE",
        "state": {
            "type": "STREAM",
            "stream": {"stream_descriptor": {"name": stream}, "stream_state": stream_state},
            "sourceStats": {"recordCount": record_count},
        },
    }


def stream_status(stream: str, status: str) -> dict[str, t.Any]:
    return {
        "type": "TRACE",
        "trace": {
            "type": "STREAM_STATUS",
            "emitted_at": now_ms(),
            "stream_status": {"stream_descriptor": {"name": stream}, "status": status},
        },
    }


def error_trace(
    message: str,
    failure_type: str,
    *,
    internal_message: str | None = None,
    stack_trace: str | None = None,
    stream: str | None = None,
) -> dict[str, t.Any]:
    error: dict[str, t.Any] = {"message": message, "failure_type": failure_type}
    if internal_message:
        error["internal_message"] = internal_message
    if stack_trace:
        error["stack_trace"] = stack_trace
    if stream:
        error["stream_descriptor"] = {"name": stream}
    return {"type": "TRACE", "trace": {"type": "ERROR", "emitted_at": now_ms(), "error": error}}


def log_message(level: str, message: str, stack_trace: str | None = None) -> dict[str, t.Any]:
    log: dict[str, t.Any] = {"level": level, "message": message}
    if stack_trace:
        log["stack_trace"] = stack_trace
    return {"type": "LOG", "log": log}


# ---------------------------------------------------------------- spec


def connection_specification(config_schema: dict[str, t.Any], title: str) -> dict[str, t.Any]:
    """The tap's settings schema, with `airbyte_secret` on every secret (nested too)."""
    schema = copy.deepcopy(config_schema)
    schema["title"] = title
    for name in NOT_IN_SPEC:
        schema.get("properties", {}).pop(name, None)
    _mark_secrets(schema)
    return schema


def _mark_secrets(node: t.Any) -> None:
    if isinstance(node, dict):
        if node.get("secret") is True:
            node["airbyte_secret"] = True
        for value in node.values():
            _mark_secrets(value)
    elif isinstance(node, list):
        for value in node:
            _mark_secrets(value)


def secret_values(config: dict[str, t.Any], config_schema: dict[str, t.Any]) -> list[str]:
    """The values of every setting marked secret in the schema (nested arrays too)."""
    found: list[str] = []

    def walk(value: t.Any, schema: dict[str, t.Any]) -> None:
        if schema.get("secret") and isinstance(value, str):
            found.append(value)
        elif isinstance(value, dict):
            properties = schema.get("properties") or {}
            for key, item in value.items():
                walk(item, properties.get(key) or {})
        elif isinstance(value, list):
            for item in value:
                walk(item, schema.get("items") or {})

    walk(config, config_schema)
    return found


# ---------------------------------------------------------------- catalog


def airbyte_stream(
    name: str,
    schema: dict[str, t.Any],
    primary_keys: t.Sequence[str] | None,
    replication_key: str | None,
) -> dict[str, t.Any]:
    """One AirbyteStream: incremental + full refresh where the stream has a bookmark."""
    stream: dict[str, t.Any] = {
        "name": name,
        "json_schema": schema,
        "supported_sync_modes": [FULL_REFRESH, INCREMENTAL] if replication_key else [FULL_REFRESH],
        "source_defined_primary_key": [[key] for key in primary_keys or ()],
        "is_resumable": bool(replication_key),
    }
    if replication_key:
        stream["source_defined_cursor"] = True
        stream["default_cursor_field"] = [replication_key]
    return stream


class ConfiguredStream(t.NamedTuple):
    name: str
    sync_mode: str
    properties: frozenset[str] | None  # the columns asked for, None: all


def configured_streams(catalog: t.Any) -> list[ConfiguredStream]:
    """The streams of a ConfiguredAirbyteCatalog, in its order."""
    if not isinstance(catalog, dict) or not isinstance(catalog.get("streams"), list):
        raise InputError("the configured catalog needs a 'streams' list")
    out = []
    for position, item in enumerate(catalog["streams"]):
        stream = item.get("stream") if isinstance(item, dict) else None
        if not isinstance(stream, dict) or not stream.get("name"):
            raise InputError(f"configured catalog: streams[{position}] has no stream.name")
        mode = item.get("sync_mode") or FULL_REFRESH
        if mode not in (FULL_REFRESH, INCREMENTAL):
            raise InputError(f"configured catalog: {stream['name']}: unknown sync_mode {mode!r}")
        properties = (stream.get("json_schema") or {}).get("properties")
        columns = frozenset(properties) if isinstance(properties, dict) and properties else None
        out.append(ConfiguredStream(str(stream["name"]), mode, columns))
    return out


def singer_catalog(
    discovered: dict[str, t.Any], wanted: dict[str, ConfiguredStream], incremental: set[str]
) -> dict[str, t.Any]:
    """The tap's discovered Singer catalog with Airbyte's selection and sync modes applied.

    Streams not configured are deselected; a full-refresh stream loses its replication key
    (the SDK then syncs it FULL_TABLE); columns missing from the configured json_schema
    are deselected (keys and bookmarks stay, as the SDK always includes them).
    """
    catalog = copy.deepcopy(discovered)
    for entry in catalog.get("streams", []):
        name = entry.get("tap_stream_id") or entry.get("stream")
        configured = wanted.get(name)
        for metadata in entry.get("metadata", []):
            breadcrumb = tuple(metadata.get("breadcrumb") or ())
            data = metadata.setdefault("metadata", {})
            if not breadcrumb:
                data["selected"] = configured is not None
                if configured is not None and name not in incremental:
                    data["forced-replication-method"] = "FULL_TABLE"
                    data.pop("replication-key", None)
            elif (
                configured is not None
                and configured.properties is not None
                and len(breadcrumb) == 2  # ("properties", <column>)
                and breadcrumb[1] not in configured.properties
                and data.get("inclusion") != "automatic"
            ):
                data["selected"] = False
        if configured is not None and name not in incremental:
            entry["replication_method"] = "FULL_TABLE"
            entry.pop("replication_key", None)
    return catalog


# ---------------------------------------------------------------- state


def singer_bookmarks(state: t.Any, known_streams: t.Collection[str]) -> dict[str, StreamState]:
    """Per-stream states from what Airbyte clients send back, as Singer bookmarks.

    Accepted: a JSON array of AirbyteStateMessage (STREAM, GLOBAL or LEGACY entries, with
    any extra keys such as `"global_": null`, `"data": null`, `sourceStats`), one such
    message, a LEGACY `{"data": {...}}`, a Singer state `{"bookmarks": {...}}`, or a plain
    `{"<stream>": <stream_state>}` mapping.
    """
    if state is None or state in ({}, []):
        return {}
    if isinstance(state, list):
        bookmarks: dict[str, StreamState] = {}
        for position, message in enumerate(state):
            if not isinstance(message, dict):
                raise InputError(f"state[{position}] is not an object")
            bookmarks.update(_from_state_message(message, known_streams))
        return bookmarks
    if not isinstance(state, dict):
        raise InputError("the state must be a JSON array of state messages or an object")
    if "type" in state and ("stream" in state or "global" in state or "data" in state):
        return _from_state_message(state, known_streams)
    if isinstance(state.get("data"), dict):  # LEGACY {"data": ...}
        return singer_bookmarks(state["data"], known_streams)
    if isinstance(state.get("bookmarks"), dict):  # Singer state
        return {k: v for k, v in state["bookmarks"].items() if isinstance(v, dict)}
    unknown = sorted(set(state) - set(known_streams))
    if unknown:
        raise InputError(f"the state names streams this source does not have: {unknown}")
    return {k: v for k, v in state.items() if isinstance(v, dict)}


def _from_state_message(
    message: dict[str, t.Any], known: t.Collection[str]
) -> dict[str, StreamState]:
    kind = str(message.get("type") or "").upper()
    if kind == "STREAM" or (not kind and isinstance(message.get("stream"), dict)):
        return _from_stream_state(message.get("stream"))
    if kind == "GLOBAL" or (not kind and isinstance(message.get("global"), dict)):
        found: dict[str, StreamState] = {}
        for item in (message.get("global") or {}).get("stream_states") or ():
            found.update(_from_stream_state(item))
        return found
    if kind == "LEGACY" or isinstance(message.get("data"), dict):
        return singer_bookmarks(message.get("data"), known)
    raise InputError(f"unknown state message type {message.get('type')!r}")


def _from_stream_state(stream: t.Any) -> dict[str, StreamState]:
    if not isinstance(stream, dict):
        raise InputError("a STREAM state needs a 'stream' object")
    descriptor = stream.get("stream_descriptor") or {}
    name = descriptor.get("name") if isinstance(descriptor, dict) else None
    if not name:
        raise InputError("a STREAM state needs stream.stream_descriptor.name")
    stream_state = stream.get("stream_state")
    if stream_state is None:
        return {}
    if not isinstance(stream_state, dict):
        raise InputError(f"the stream_state of {name} is not an object")
    return {str(name): stream_state}
