"""One run of the tap: its tenants, walks, spools, redaction, failures and closing summary.

The tap creates one `Run` and hands it to every stream it builds; streams keep their
run-wide bookkeeping here instead of on the Tap object.
"""

from __future__ import annotations

import logging
import threading
import typing as t
from collections import Counter
from dataclasses import dataclass, field

import requests
import urllib3

from tap_lms_unified.errors import TENANT_ERRORS, InvalidRecordsError, TenantsFailedError
from tap_lms_unified.http import BudgetedSession, RateBudget, tls_context
from tap_lms_unified.walking import Prefetcher, Spool

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from tap_lms_unified.provider import Provider
    from tap_lms_unified.streams import LmsStream


class Redactor:
    """Replaces every configured secret in a text before it is logged or raised."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


@dataclass
class Tenant:
    """One customer connection: its name, headers, session and what happened to it."""

    key: str  # its non-secret name: the integration id or the connector name
    headers: dict[str, str] = field(repr=False)  # X-Integration-Id / x-connector-token
    session: BudgetedSession = field(repr=False)
    records: Counter[str] = field(default_factory=Counter)
    #: Records not emitted because their primary key was missing or unusable, by stream.
    invalid: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    retries: int = 0
    throttled: int = 0
    seconds: float = 0.0
    failure: str | None = None
    error: BaseException | None = field(default=None, repr=False)

    def summary(self) -> str:
        """One log line: outcome, records per stream, requests, retries, 429s, duration."""
        streams = " ".join(f"{name}={count}" for name, count in sorted(self.records.items()))
        outcome = f"FAILED ({self.failure})" if self.failure else "ok"
        invalid = " ".join(f"{name}={count}" for name, count in sorted(self.invalid.items()))
        if invalid:
            invalid = f"; invalid records not emitted (no usable primary key): {invalid}"
        return (
            f"Tenant {self.key}: {outcome}; records: {streams or 'none'}{invalid}; "
            f"{self.requests} requests, {self.retries} retries, {self.throttled} throttled "
            f"(429); {self.seconds:.1f} s walking"
        )


class Run:
    """Run-wide state shared by the streams of one tap invocation."""

    def __init__(
        self,
        provider: Provider,
        config: Mapping[str, t.Any],
        *,
        user_agent: str,
        version: int,
        logger: logging.Logger,
    ) -> None:
        self.provider = provider
        self.config = config
        self.user_agent = user_agent
        #: The table version of this run's full-table streams (ACTIVATE_VERSION).
        self.version = version
        self.logger = logger
        self.redact = Redactor([config.get("api_key"), *provider.secrets(config)])
        self.prefetcher = Prefetcher(int(config["max_concurrency"]))
        #: Partner rows spooled by the first stream of a pair, by (stream, tenant).
        self.spools: dict[tuple[str, str], Spool] = {}
        #: Whether the walks of every selected stream have started (at the first sync).
        self.walks_started = False
        #: The run's streams by name, registered by the tap.
        self.streams: dict[str, LmsStream] = {}
        #: Builds requests (auth, params); they are sent through a tenant's own session.
        self.prepare_session = requests.Session()
        self.tenants = self._tenants()
        #: Records per request: the setting or the provider's default, stepped down once
        #: if the API refuses it (see step_down_page_size).
        self.page_size = int(config.get("page_size") or provider.page_size_default)
        self._page_size_lock = threading.Lock()
        self._said: set[str] = set()

    @property
    def base_url(self) -> str:
        if self.config.get("api_url"):
            return str(self.config["api_url"]).rstrip("/")
        return self.provider.base_url(self.config)

    def step_down_page_size(self, rejected: int) -> bool:
        """After a 422 on `page_size`: whether to retry with a smaller size (once per run)."""
        with self._page_size_lock:
            if self.page_size < rejected:
                return True  # another walk has stepped down already
            fallback = self.provider.page_size_fallback
            if fallback is None or self.page_size <= fallback:
                return False
            self.logger.warning(
                "%s refused page_size %d: using %d for the rest of this run.",
                self.provider.label,
                self.page_size,
                fallback,
            )
            self.page_size = fallback
            return True

    def _tenants(self) -> dict[str, Tenant]:
        """The run's tenants by non-secret name, each with its own session and budget."""
        verify = self.config["tls_verify"] is not False
        if not verify:  # warned once at start-up, not on every request
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        # Plain http never turns into TLS: a redirect to https is another origin, refused.
        https = self.base_url.lower().startswith("https:")
        tls = tls_context(self.logger) if verify and https else None
        tenants = {}
        for spec in self.provider.tenants(self.config):
            budget = RateBudget(
                self.provider.requests_per_minute(self.config),
                reset_is_epoch=self.provider.reset_is_epoch,
                max_wait=float(self.config["max_retry_wait_seconds"]),
            )
            session = BudgetedSession(budget, tls)
            session.verify = verify
            tenants[spec.key] = Tenant(key=spec.key, headers=spec.headers, session=session)
        return tenants

    def warn_once(self, message: str) -> None:
        """Log a warning once per run, however many streams or walks run into it."""
        if message not in self._said:
            self._said.add(message)
            self.logger.warning(message)

    def note_once(self, message: str) -> None:
        """Log an informational line once per run."""
        if message not in self._said:
            self._said.add(message)
            self.logger.info(message)

    def fail_tenant(self, tenant: Tenant, stream: str, error: BaseException) -> None:
        """Record a tenant's failure; the run goes on without it unless fail_fast is set."""
        message = self.redact(str(error))
        tenant.failure, tenant.error = f"{stream}: {message}", error
        self.prefetcher.cancel_tenant(tenant.key)  # its walks of later streams
        for key in [key for key in self.spools if key[1] == tenant.key]:
            self.spools.pop(key).close()  # rows of a partner stream that will skip it
        if self.config["fail_fast"]:
            self.close()
            raise error
        if len(self.tenants) > 1:  # with one tenant, the run's own error says it
            self.logger.error(
                "Tenant %s failed on stream %s: %s. The other tenants go on; this tenant's "
                "bookmarks stay where they were.",
                tenant.key,
                stream,
                message,
            )

    def test_connection(self) -> None:
        """One request per tenant and endpoint (the first page); raise if any failed."""
        endpoints = {stream.path: stream for stream in reversed(self.streams.values())}
        for tenant in self.tenants.values():
            for stream in endpoints.values():
                context = {self.provider.tenant_field: tenant.key}
                try:
                    stream.prepare_walk(context)
                    pages = stream.iter_pages(context)
                    records = len(stream.records_of(next(iter(pages)).content))
                    pages.close()
                except TENANT_ERRORS as exc:
                    self.fail_tenant(tenant, stream.name, exc)
                    break
                self.logger.info(
                    "Connection test: tenant %s, %s: ok (%d records on the first page)",
                    tenant.key,
                    stream.endpoint,
                    records,
                )
        self.finish()

    def failed(self) -> list[Tenant]:
        return [tenant for tenant in self.tenants.values() if tenant.failure]

    def close(self) -> None:
        """Stop the walks and drop the spools nobody will read."""
        self.prefetcher.close()
        while self.spools:
            self.spools.popitem()[1].close()

    def finish(self) -> None:
        """Stop the walks, log one line per tenant, and fail the run if a tenant failed."""
        self.close()
        for tenant in self.tenants.values():
            self.logger.info(tenant.summary())
        failed = self.failed()
        if len(self.tenants) == 1 and failed and failed[0].error is not None:
            raise failed[0].error  # one tenant: its own error says it best
        if failed:
            details = "; ".join(f"{t.key} ({t.failure})" for t in failed)
            msg = f"{len(failed)} of {len(self.tenants)} tenants failed: {details}"
            raise TenantsFailedError(msg)
        invalid = [tenant for tenant in self.tenants.values() if tenant.invalid]
        if invalid:
            details = "; ".join(
                f"{t.key} " + " ".join(f"{s}={n}" for s, n in sorted(t.invalid.items()))
                for t in invalid
            )
            total = sum(sum(t.invalid.values()) for t in invalid)
            msg = (
                f"{total} records without a usable primary key were not emitted ({details}); "
                "see the warnings above for where they came from"
            )
            if self.config.get("invalid_records") == "warn":
                self.logger.warning("%s (invalid_records: warn)", msg)
            else:
                raise InvalidRecordsError(msg + ". Set 'invalid_records: warn' to accept that.")
