"""One run of the tap: its tenants, walks, spools, redaction, failures, progress and summary.

The tap creates one `Run` and hands it to every stream it builds; streams keep their
run-wide bookkeeping here instead of on the Tap object. Nothing here knows a stream: the
streams report what happened to a tenant (`fail_tenant`, `not_complete`, records counted
on the tenant), and the run says it (one line per tenant that needs attention, an overall
line, a progress line about every 30 s, and `summary_file` for every tenant's figures).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import typing as t
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import requests
import urllib3

from tap_lms_unified.errors import InvalidRecordsError, TenantsFailedError, UnsupportedModelError
from tap_lms_unified.http import RateBudget, Reachability, Sender, tls_context
from tap_lms_unified.walking import Pool, Spool

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from tap_lms_unified.provider import Provider

#: Seconds between two progress lines of a long run.
PROGRESS_EVERY = 30.0
#: Up to this many tenants, a healthy tenant's summary line is logged at INFO (else DEBUG).
TENANT_LINES = 10


class Redactor:
    """Replaces every configured secret in a text before it is logged or raised.

    Linear in the text, whatever the number of secrets: candidates are found by their
    first four characters (secrets are at least that long).
    """

    def __init__(self, secrets: Iterable[str | None]) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)
        self._by_prefix: dict[str, list[str]] = {}
        for secret in self.secrets:  # longest first, as matched
            self._by_prefix.setdefault(secret[:4], []).append(secret)

    def __call__(self, text: str) -> str:
        if len(self.secrets) <= 16:  # a few: str.replace is fastest
            for secret in self.secrets:
                text = text.replace(secret, "***")
            return text
        parts: list[str] = []
        start, position, end = 0, 0, len(text) - 3
        by_prefix = self._by_prefix
        while position < end:
            candidates = by_prefix.get(text[position : position + 4])
            found = next((s for s in candidates or () if text.startswith(s, position)), None)
            if found is None:
                position += 1
                continue
            parts += (text[start:position], "***")
            start = position = position + len(found)
        return "".join(parts) + text[start:] if parts else text


@dataclass
class Tenant:
    """One customer connection: its name, headers, budget and what happened to it."""

    key: str  # its non-secret name: an id, or the name given to a secret connector
    headers: dict[str, str] = field(repr=False)  # X-Integration-Id, x-connector-token, ...
    budget: RateBudget = field(repr=False)
    records: Counter[str] = field(default_factory=Counter)
    #: Records not emitted because their primary key was missing or unusable, by stream.
    invalid: Counter[str] = field(default_factory=Counter)
    #: Streams not read in full, and why: not supported by the connection, or ended early.
    skipped: dict[str, str] = field(default_factory=dict)
    requests: int = 0
    retries: int = 0
    throttled: int = 0
    failure: str | None = None
    error: BaseException | None = field(default=None, repr=False)
    done: int = 0  # streams read (or given up) so far

    @property
    def healthy(self) -> bool:
        return not (self.failure or self.invalid or self.skipped)

    def summary(self) -> str:
        """One log line: outcome, records per stream, requests, retries, 429s."""
        streams = " ".join(f"{name}={count}" for name, count in sorted(self.records.items()))
        outcome = f"FAILED ({self.failure})" if self.failure else "ok"
        extra = ""
        if self.invalid:
            invalid = " ".join(f"{name}={count}" for name, count in sorted(self.invalid.items()))
            extra += f"; invalid records not emitted (no usable primary key): {invalid}"
        if self.skipped:
            extra += "; not read in full: " + ", ".join(
                f"{name} ({why})" for name, why in sorted(self.skipped.items())
            )
        return (
            f"Tenant {self.key}: {outcome}; records: {streams or 'none'}{extra}; "
            f"{self.requests} requests, {self.retries} retries, {self.throttled} throttled (429)"
        )

    def figures(self) -> dict[str, t.Any]:
        """This tenant's figures, as `summary_file` holds them."""
        return {
            "tenant": self.key,
            "ok": self.failure is None,
            "failure": self.failure,
            "records": dict(sorted(self.records.items())),
            "invalid": dict(sorted(self.invalid.items())),
            "not_read_in_full": dict(sorted(self.skipped.items())),
            "requests": self.requests,
            "retries": self.retries,
            "throttled": self.throttled,
        }


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
        workers = int(config["max_concurrency"])
        self.pool = Pool(workers)
        #: Partner rows spooled by the first stream of a pair, by (stream, tenant).
        self.spools: dict[tuple[str, str], Spool] = {}
        #: Whether the walks of every selected stream have started (at the first sync).
        self.walks_started = False
        #: Builds requests (auth, params); the sender sends them, under tenants' budgets.
        self.prepare_session = requests.Session()
        self.sender = self._sender(workers)
        self.reachability = Reachability()
        self.static_params = provider.params(config)
        self.tenants = self._tenants()
        #: One state partition per tenant (the streams' `partitions`), built once.
        self.partitions = [{provider.tenancy.field: key} for key in self.tenants]
        #: Records per request: the setting or the provider's default, stepped down once
        #: if the API refuses it (see step_down_page_size).
        self.page_size = int(config.get("page_size") or provider.page_size_default)
        self._page_size_lock = threading.Lock()
        self._said: set[str] = set()
        self.started = time.monotonic()
        self.streams_selected = 0  # set when the sync starts
        self._progress: threading.Timer | None = None

    @property
    def base_url(self) -> str:
        if self.config.get("api_url"):
            return str(self.config["api_url"]).rstrip("/")
        return self.provider.base_url(self.config)

    def step_down_page_size(self, rejected: int) -> bool:
        """After a refused page size: whether to retry with a smaller one (once per run)."""
        with self._page_size_lock:
            if self.page_size < rejected:
                return True  # another walk has stepped down already
            refusal = self.provider.page_size_refusal
            if refusal is None or self.page_size <= refusal.fallback:
                return False
            self.logger.warning(
                "%s refused page_size %d: using %d for the rest of this run.",
                self.provider.label,
                self.page_size,
                refusal.fallback,
            )
            self.page_size = refusal.fallback
            return True

    def _sender(self, workers: int) -> Sender:
        verify = self.config["tls_verify"] is not False
        if not verify:  # warned once at start-up, not on every request
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        # Plain http never turns into TLS: a redirect to https is another origin, refused.
        https = self.base_url.lower().startswith("https:")
        sender = Sender(tls_context(self.logger) if verify and https else None, workers + 2)
        sender.verify = verify
        return sender

    def _tenants(self) -> dict[str, Tenant]:
        """The run's tenants by non-secret name, each with its own budget."""
        per_minute = self.provider.requests_per_minute(self.config)
        max_wait = float(self.config["max_retry_wait_seconds"])
        return {
            spec.key: Tenant(
                key=spec.key,
                headers=spec.headers,
                budget=RateBudget(per_minute, headers=self.provider.rate_limit, max_wait=max_wait),
            )
            for spec in self.provider.tenants(self.config)
        }

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

    # -- what happened to tenants -------------------------------------------------------

    def fail_tenant(self, tenant: Tenant, stream: str, error: BaseException) -> None:
        """Record a tenant's failure; the run goes on without it unless fail_fast is set."""
        message = self.redact(str(error))
        tenant.failure, tenant.error = f"{stream}: {message}", error
        self.pool.cancel_tenant(tenant.key)  # its walks of later streams
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

    def not_complete(self, tenant: Tenant, stream: str, why: BaseException) -> None:
        """A stream not read in full for a tenant, without failing it: the model is not
        supported by its connection, or an offset walk ended early. Said once."""
        unsupported = isinstance(why, UnsupportedModelError)
        tenant.skipped[stream] = (
            "not supported by this connection" if unsupported else "ended early"
        )
        detail = self.redact(str(why))
        if unsupported:
            self.logger.warning(
                "Tenant %s: stream %s is not supported by this connection (%s): skipped; its "
                "bookmark stays, and the run goes on.",
                tenant.key,
                stream,
                detail,
            )
        else:
            self.logger.warning(
                "Tenant %s, stream %s: %s; the records read are kept, its bookmark stays.",
                tenant.key,
                stream,
                detail,
            )

    def not_read_in_full(self, stream: str) -> list[str]:
        """Tenants whose rows of `stream` this run may not all have seen."""
        return [t.key for t in self.tenants.values() if t.failure or stream in t.skipped]

    def failed(self) -> list[Tenant]:
        return [tenant for tenant in self.tenants.values() if tenant.failure]

    # -- progress and the end -----------------------------------------------------------

    def begin(self, streams: int) -> None:
        """The sync starts: `streams` selected; a progress line every PROGRESS_EVERY s."""
        self.started = time.monotonic()
        self.streams_selected = streams
        self._schedule_progress()

    def _schedule_progress(self) -> None:
        self._progress = threading.Timer(PROGRESS_EVERY, self._report_progress)
        self._progress.daemon = True
        self._progress.start()

    def _report_progress(self) -> None:
        tenants = list(self.tenants.values())
        done = sum(1 for t in tenants if t.failure or t.done >= self.streams_selected)
        self.logger.info("Progress: %d of %d tenants done; %s", done, len(tenants), self.totals())
        self._schedule_progress()

    def totals(self) -> str:
        """Records per stream, requests, retries, 429s and the elapsed time, all tenants."""
        tenants = self.tenants.values()
        records: Counter[str] = Counter()
        for tenant in tenants:
            records.update(tenant.records)
        streams = " ".join(f"{name}={count}" for name, count in sorted(records.items()))
        return (
            f"records: {streams or 'none'}; {sum(t.requests for t in tenants)} requests, "
            f"{sum(t.retries for t in tenants)} retries, "
            f"{sum(t.throttled for t in tenants)} throttled (429); "
            f"{time.monotonic() - self.started:.1f} s"
        )

    def close(self) -> None:
        """Stop the walks, the progress lines, and drop the spools nobody will read."""
        if self._progress is not None:
            self._progress.cancel()
        self.pool.close()
        while self.spools:
            self.spools.popitem()[1].close()

    def summarise(self) -> None:
        """One line per tenant that needs attention (every tenant when there are few),
        the overall line, and every tenant's figures in `summary_file` if set."""
        tenants = list(self.tenants.values())
        few = len(tenants) <= TENANT_LINES
        for tenant in tenants:
            healthy = tenant.healthy
            level = logging.INFO if few or not healthy else logging.DEBUG
            self.logger.log(level, tenant.summary())
        failed = sum(1 for t in tenants if t.failure)
        self.logger.info(
            "Run summary: %d of %d tenants ok, %d failed; %s",
            len(tenants) - failed,
            len(tenants),
            failed,
            self.totals(),
        )
        if self.config.get("summary_file"):
            figures = {"tenants": [t.figures() for t in tenants], "overall": self.totals()}
            Path(self.config["summary_file"]).write_text(json.dumps(figures, indent=1) + "\n")

    def finish(self) -> None:
        """Stop the walks, summarise, and fail the run if a tenant failed."""
        self.close()
        self.summarise()
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
