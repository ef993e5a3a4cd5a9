"""Everything the Airbyte adapter takes from the Singer tap, in one place.

The adapter builds on the tap's streams, settings, state and errors; it never copies them.
This module is the whole surface it depends on, so that a restructuring of the tap only
has to re-wire what is here:

- ``TapLmsUnified(config=..., state=..., catalog=..., message_writer=...)``: the tap, built
  with the SDK's public constructor (settings are checked there: `ConfigValidationError`;
  the state's shape too: `StateError`).
- ``TapLmsUnified.config_jsonschema`` (class attribute; `"secret": true` marks secrets)
  and the SDK's ``append_builtin_config`` (what the SDK adds to it).
- ``tap.streams`` with the SDK's ``name``, ``schema``, ``primary_keys``,
  ``replication_key`` of each stream; ``tap.catalog_dict`` (Singer catalog).
- ``tap.sync_all()``: syncs, flushes, then raises when a tenant failed (``Run.finish``).
- ``tap.run`` (`run.Run`): ``test_connection()`` (one request per tenant and endpoint,
  raises when a tenant failed), ``tenants`` and ``failed()`` (`Tenant` ``key``,
  ``failure`` = ``"<stream>: <message>"``, redacted, and ``error``).
- ``run.Redactor``: replaces secret values in a text.
- the provider registry ``PROVIDERS`` (``name``, ``label``), never a provider by name.
- error classes from `errors` and the SDK's ``ConfigValidationError``, ``RetriableAPIError``.
"""

from __future__ import annotations

import copy
import typing as t
from dataclasses import dataclass

from singer_sdk.exceptions import ConfigValidationError, RetriableAPIError

from tap_lms_unified.errors import (
    AuthenticationError,
    IntegrationNotReadyError,
    LmsAPIError,
    TenantsFailedError,
)
from tap_lms_unified.providers import PROVIDERS
from tap_lms_unified.run import Redactor
from tap_lms_unified.state import StateError
from tap_lms_unified.tap import TapLmsUnified

if t.TYPE_CHECKING:
    from singer_sdk.io_base import GenericSingerWriter

__all__ = [
    "AuthenticationError",
    "ConfigValidationError",
    "IntegrationNotReadyError",
    "LmsAPIError",
    "Redactor",
    "RetriableAPIError",
    "StateError",
    "TapLmsUnified",
    "TenantFailure",
    "TenantsFailedError",
    "config_schema",
    "connection_test",
    "failed_tenants",
    "make_tap",
    "provider_labels",
    "tenant_names",
]


def config_schema() -> dict[str, t.Any]:
    """The tap's own settings as JSON Schema, without the SDK's built-in settings.

    The SDK merges its built-ins (stream maps, flattening, batch) into the class attribute
    `config_jsonschema` once any tap of the process has checked a config; they are taken
    out again here, whatever ran before.
    """
    builtin: dict[str, t.Any] = {"properties": {}}
    TapLmsUnified.append_builtin_config(builtin)
    schema = copy.deepcopy(t.cast("dict[str, t.Any]", TapLmsUnified.config_jsonschema))
    properties = schema.get("properties", {})
    for name, prop in builtin["properties"].items():
        if properties.get(name) == prop:
            del properties[name]
    return schema


def provider_labels() -> list[str]:
    """The human names of the providers in the registry, in its order."""
    return [provider.label for provider in PROVIDERS.values()]


def make_tap(
    config: dict[str, t.Any],
    *,
    writer: GenericSingerWriter[t.Any, t.Any],
    state: dict[str, t.Any] | None = None,
    catalog: dict[str, t.Any] | None = None,
) -> TapLmsUnified:
    """A tap for one command; raises `ConfigValidationError` on bad settings."""
    return TapLmsUnified(
        config=dict(config),
        state=state,
        catalog=catalog,
        message_writer=writer,
        validate_config=True,
    )


@dataclass(frozen=True)
class TenantFailure:
    """A tenant that did not finish: its non-secret name, the stream and the error."""

    tenant: str
    stream: str | None
    message: str
    error: BaseException | None


def tenant_names(tap: TapLmsUnified) -> list[str]:
    """The run's tenants by their non-secret names."""
    return list(tap.run.tenants)


def failed_tenants(tap: TapLmsUnified) -> list[TenantFailure]:
    """The tenants that failed so far in this run (their messages are already redacted)."""
    failures = []
    for tenant in tap.run.failed():
        stream, sep, message = str(tenant.failure).partition(": ")  # "<stream>: <message>"
        failures.append(
            TenantFailure(
                tenant=tenant.key,
                stream=stream if sep else None,
                message=message if sep else str(tenant.failure),
                error=tenant.error,
            )
        )
    return failures


def connection_test(tap: TapLmsUnified) -> None:
    """One request per tenant and endpoint; raises when a tenant failed (see `failed_tenants`)."""
    _ = tap.streams  # registers the run's streams
    tap.test_connection()
