"""Everything the Airbyte adapter takes from the Singer tap, in one place.

The adapter builds on the tap's streams, settings, state and errors; it never copies them.
This module is the whole surface it depends on, so that a restructuring of the tap only
has to re-wire what is here:

- ``TapLmsUnified(config=..., state=..., catalog=..., message_writer=...)``: the tap, built
  with the SDK's public constructor (settings are validated there: `ConfigValidationError`).
- ``TapLmsUnified.config_jsonschema`` (class attribute; `"secret": true` marks secrets).
- ``tap.streams`` with the SDK's ``name``, ``schema``, ``primary_keys``,
  ``replication_key`` of each stream; ``tap.catalog_dict`` (Singer catalog).
- ``tap.sync_all()`` then ``tap.finish()`` (flushes and raises when a tenant failed).
- ``tap.run_sync_dry_run(dry_run_record_limit=1, streams=[...])`` (the SDK's, for `check`).
- error classes ``AuthenticationError``, ``IntegrationNotReadyError``, ``TenantsFailedError``
  and the SDK's ``ConfigValidationError``, ``RetriableAPIError``.
- :func:`failed_tenants`: the only look inside a run (``tap.tenants[*].failure/error``).
- the documented settings ``provider``, ``integration_id``, ``connector_token``,
  ``connector_name``, ``integrations``, ``emit_activate_version_messages``.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass

from singer_sdk.exceptions import ConfigValidationError, RetriableAPIError

from tap_lms_unified.client import AuthenticationError, IntegrationNotReadyError
from tap_lms_unified.tap import TapLmsUnified, TenantsFailedError

if t.TYPE_CHECKING:
    from singer_sdk.io_base import GenericSingerWriter

__all__ = [
    "AuthenticationError",
    "ConfigValidationError",
    "IntegrationNotReadyError",
    "RetriableAPIError",
    "TapLmsUnified",
    "TenantFailure",
    "TenantsFailedError",
    "config_schema",
    "failed_tenants",
    "make_tap",
    "tenant_configs",
]


def config_schema() -> dict[str, t.Any]:
    """The tap's own settings as JSON Schema (without the SDK's built-in settings)."""
    return t.cast("dict[str, t.Any]", TapLmsUnified.config_jsonschema)


def make_tap(
    config: dict[str, t.Any],
    *,
    writer: GenericSingerWriter,
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


def failed_tenants(tap: TapLmsUnified) -> list[TenantFailure]:
    """The tenants that failed so far in this run (their messages are already redacted)."""
    tenants = getattr(tap, "tenants", None) or {}
    failures = []
    for tenant in tenants.values():
        failure = getattr(tenant, "failure", None)
        if not failure:
            continue
        stream, sep, message = str(failure).partition(": ")  # "<stream>: <message>"
        failures.append(
            TenantFailure(
                tenant=str(tenant.key),
                stream=stream if sep else None,
                message=message if sep else str(failure),
                error=getattr(tenant, "error", None),
            )
        )
    return failures


def tenant_configs(config: dict[str, t.Any]) -> list[tuple[str, dict[str, t.Any]]]:
    """One single-tenant config per tenant of `config`, with a non-secret label each.

    From the documented settings: Kombo `integration_id` and `integrations[].integration_id`;
    Bindbee `connector_token` (+ `connector_name`) and `integrations[].connector_token`
    (+ `name`). A Bindbee tenant without a name is labelled by position, never by token.
    """
    base = {k: v for k, v in config.items() if k != "integrations"}
    out: list[tuple[str, dict[str, t.Any]]] = []
    if config.get("provider") == "kombo":
        ids = [config.get("integration_id")]
        ids += [i.get("integration_id") for i in config.get("integrations") or ()]
        for integration_id in ids:
            if integration_id:
                out.append((str(integration_id), {**base, "integration_id": integration_id}))
        return out
    pairs = [(config.get("connector_token"), config.get("connector_name"))]
    pairs += [(i.get("connector_token"), i.get("name")) for i in config.get("integrations") or ()]
    for position, (token, name) in enumerate(pairs):
        if token:
            label = str(name) if name else f"connector #{position}"
            out.append((label, {**base, "connector_token": token, "connector_name": name}))
    return out
