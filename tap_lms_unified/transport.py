"""One stream's HTTP for each tenant: send, redirects within the origin, answers, retries.

A request goes through its tenant's budgeted session (http.py: deadlines, size caps, rate
budget), follows redirects only within the `api_url`'s origin, and its answer becomes a
typed error (errors.py) naming the endpoint, the status and the provider's code and
message. 408, 429, 5xx, timeouts, broken connections and non-JSON 200 pages are retried
as the provider's headers say (`Retry-After`, its rate-limit reset), capped, a bounded
number of times. Nothing here knows a provider: it reads the provider's declarations.
"""

from __future__ import annotations

import logging
import re
import typing as t
from http import HTTPStatus
from urllib.parse import quote, urljoin

import backoff
import msgspec
import requests
from singer_sdk.exceptions import RetriableAPIError

from tap_lms_unified.errors import (
    TRANSPORT_ERRORS,
    AuthenticationError,
    FilterRefusedError,
    IntegrationNotReadyError,
    LmsAPIError,
    PageSizeRejectedError,
    RedirectRefusedError,
    ResponseTooLargeError,
    TLSError,
    UnsupportedModelError,
)
from tap_lms_unified.http import ResponseTimeout, ResponseTooLarge, origin_of, reset_seconds
from tap_lms_unified.shaping import decode_json

if t.TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from tap_lms_unified.http import Reachability, Sender
    from tap_lms_unified.paging import Envelope
    from tap_lms_unified.provider import Provider
    from tap_lms_unified.run import Tenant

#: Redirects followed within the api_url's origin, per request.
MAX_REDIRECTS = 5
#: The shortest wait before any retry (unless `max_retry_wait_seconds` is lower).
MIN_RETRY_WAIT = 1.0
#: Retries of a connection that has never worked in this run (a wrong `api_url`).
UNREACHED_RETRIES = 1


class Transport:
    """Sends one endpoint's requests for every tenant, and reads the answers."""

    def __init__(
        self,
        *,
        provider: Provider,
        config: Mapping[str, t.Any],
        endpoint: str,
        base_url: str,
        redact: Callable[[str], str],
        log: Callable[..., None],
        reachability: Reachability,
        sender: Sender,
        on_response: Callable[[requests.Response, Tenant], None],
    ) -> None:
        self.provider = provider
        self.config = config
        self.endpoint = endpoint  # `GET /lms/users`, as messages name it
        self.base_url = base_url
        self.origin = origin_of(base_url)
        self.redact = redact
        self.log = log
        self.reachability = reachability
        self.sender = sender
        self.on_response = on_response
        self.timeout = float(config["request_timeout"])
        self.max_bytes = int(config["max_response_bytes"])
        self.envelope: Envelope = provider.paging.envelope

    # -- sending, retried -------------------------------------------------------------

    def send(self, prepared: requests.PreparedRequest, tenant: Tenant) -> requests.Response:
        """One request, retried as the answers say; its validated response."""
        unreached = 0

        def give_up(exc: Exception) -> bool:
            # A connection that has never worked in this run gets one quick retry only.
            nonlocal unreached
            unreached += isinstance(exc, Unreached)
            return unreached > UNREACHED_RETRIES

        send = backoff.on_exception(
            self.waits,
            (RetriableAPIError, *TRANSPORT_ERRORS),
            max_tries=self.max_tries,
            giveup=give_up,
            on_backoff=self.on_backoff,
            jitter=lambda value: value + min(1.0, value * 0.1),  # never below the wait
            logger=None,
        )(self.send_once)
        response: requests.Response = send(prepared, tenant)
        return response

    def max_tries(self) -> int:
        return int(self.config["max_retries"]) + 1

    def waits(self) -> t.Generator[float, t.Any, None]:
        cap = float(self.config["max_retry_wait_seconds"])
        attempt = 0
        exception = yield 0.0  # primed by backoff with send(None)
        while True:
            attempt += 1
            wait = None
            if isinstance(exception, RetriableAPIError) and exception.response is not None:
                wait = reset_seconds(exception.response, self.provider.rate_limit)
            if wait is None:
                wait = float(min(2 ** (attempt - 1), 60))
            # A reset header already in the past (clock skew) must not mean "retry at once".
            exception = yield min(max(wait, MIN_RETRY_WAIT), cap)

    def on_backoff(self, details: t.Any) -> None:
        exc = details.get("exception")
        tenant: Tenant = details["args"][1]  # send_once(prepared, tenant)
        tenant.retries += 1
        response = getattr(exc, "response", None)
        if response is not None and response.status_code == HTTPStatus.TOO_MANY_REQUESTS:
            tenant.throttled += 1
        self.log(
            "Tenant %s: retrying %s in %.1f s (try %d): %s",
            tenant.key,
            self.endpoint,
            details.get("wait") or 0.0,
            details.get("tries") or 0,
            self.redact(str(exc) if exc else "transient error"),
            level=logging.WARNING,
        )

    def send_once(self, prepared: requests.PreparedRequest, tenant: Tenant) -> requests.Response:
        """Send through the tenant's budgeted session and validate the answer.

        Redirects within the api_url's origin are followed (a few); one to another origin,
        or from https to http, fails the tenant: nothing is sent there.
        """
        for _ in range(MAX_REDIRECTS + 1):
            response = self.fetch(prepared, tenant)
            target = self.sender.get_redirect_target(response)
            if target is None:
                break
            url = urljoin(response.url, target)
            if origin_of(url) != self.origin:
                raise RedirectRefusedError(self.redirect_refused(response, url))
            prepared = prepared.copy()
            prepared.prepare_url(url, None)
        else:
            msg = f"{self.endpoint}: more than {MAX_REDIRECTS} redirects; not followed further"
            raise LmsAPIError(self.redact(msg))
        self.on_response(response, tenant)
        self.validate(response, prepared)
        return response

    def fetch(self, prepared: requests.PreparedRequest, tenant: Tenant) -> requests.Response:
        """One HTTP exchange, whole within request_timeout and max_response_bytes."""
        tenant.requests += 1
        try:
            response = self.sender.fetch(
                prepared, tenant.budget, timeout=self.timeout, max_bytes=self.max_bytes
            )
        except requests.exceptions.SSLError as exc:
            reason = str(exc).rsplit("SSLError(", 1)[-1].rstrip(")")
            msg = (
                f"{self.endpoint}: TLS verification failed for {self.origin[1]} "
                f"({reason}); not retried. If a private or corporate CA signs the certificate, "
                "point REQUESTS_CA_BUNDLE (or SSL_CERT_FILE) at a bundle that holds it; "
                "'tls_verify: false' turns verification off (debugging only)."
            )
            raise TLSError(self.redact(msg)) from exc
        except ResponseTooLarge as exc:
            msg = (
                f"{self.endpoint}: the response is larger than max_response_bytes "
                f"({exc.limit} bytes, decoded); not retried. Raise 'max_response_bytes' if "
                "pages are really that large, or lower 'page_size'."
            )
            raise ResponseTooLargeError(self.redact(msg)) from exc
        except ResponseTimeout as exc:
            msg = (
                f"{self.endpoint}: timed out: no complete response within request_timeout "
                f"({self.timeout:g} s)"
            )
            raise RetriableAPIError(self.redact(msg)) from exc
        except (*TRANSPORT_ERRORS,) as exc:
            cause = transport_cause(exc)
            if not self.reachability.answered.is_set() and _unreachable(exc):
                raise Unreached(self.unreached(cause)) from exc
            # Retried like a 5xx; when retries run out, the error names the endpoint.
            msg = f"{self.endpoint}: {type(exc).__name__}: {cause}"
            raise RetriableAPIError(self.redact(msg)) from exc
        self.reachability.answered.set()
        return response

    def unreached(self, cause: str) -> str:
        scheme, host, port = self.origin
        which = "'api_url'" if self.config.get("api_url") else f"{self.provider.label}'s URL"
        return self.redact(
            f"{self.endpoint}: {scheme}://{host}:{port} did not answer ({cause}): check "
            f"{which} ({self.base_url})"
        )

    def redirect_refused(self, response: requests.Response, url: str) -> str:
        """Why a redirect is not followed, naming the endpoint and the target host."""
        scheme, host, port = origin_of(url)
        origin = self.origin
        why = "another origin"
        if origin[0] == "https" and scheme != "https":
            why = "from https to plain http"
        msg = (
            f"{self.endpoint} → HTTP {response.status_code} redirect to {scheme}://{host}:{port} "
            f"({why}); not followed, so that the API key and the tenant's credentials stay "
            f"with {origin[0]}://{origin[1]}:{origin[2]}. Check 'api_url'."
        )
        return self.redact(msg)

    # -- answers --------------------------------------------------------------------------

    def cursor_of(self, response: requests.Response) -> str | None:
        """The next cursor of a page, its envelope checked, once for validation and paging.

        Walk threads do not decode the records: the main thread does, once (walking.py).
        """
        if "_lms_cursor" not in response.__dict__:
            try:
                cursor = self.envelope.check(response.content)
            except msgspec.DecodeError:  # no JSON, or JSON msgspec refuses: decode_json says
                cursor = self.envelope.page(decode_json(response.content))[1]
            response.__dict__["_lms_cursor"] = cursor
        return t.cast("str | None", response.__dict__["_lms_cursor"])

    def validate(self, response: requests.Response, prepared: requests.PreparedRequest) -> None:
        status = response.status_code
        if status < HTTPStatus.BAD_REQUEST:
            self.validate_body(response)
            return
        provider = self.provider
        body = _decode_or_none(response)
        code, message = provider.error_details(body) if body is not None else (None, "")
        text = self.error_text(response, code, message)
        refused = self.filter_refused(status, message, prepared)
        if refused:
            raise FilterRefusedError(text)
        if status in provider.unsupported_statuses:
            raise UnsupportedModelError(text)
        if provider.not_ready(status, code):
            raise IntegrationNotReadyError(text)
        retriable = (HTTPStatus.REQUEST_TIMEOUT, HTTPStatus.TOO_MANY_REQUESTS)
        if status in retriable or status >= HTTPStatus.INTERNAL_SERVER_ERROR:
            raise RetriableAPIError(text, response)
        if status in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
            raise AuthenticationError(text)
        refusal = provider.page_size_refusal
        if refusal and status in refusal.statuses and provider.paging.size_param in message:
            raise PageSizeRejectedError(text)
        raise LmsAPIError(text)

    def filter_refused(self, status: int, message: str, prepared: requests.PreparedRequest) -> bool:
        """An integration refusing the incremental filter this request sent."""
        where = self.provider.incremental
        if where is None or not where.may_refuse:
            return False
        sent = quote(where.param, safe="") + "=" in (prepared.url or "")
        naming = HTTPStatus.BAD_REQUEST <= status < HTTPStatus.INTERNAL_SERVER_ERROR
        return sent and (status in where.refused_by or (naming and where.param in message))

    def validate_body(self, response: requests.Response) -> None:
        """A 200 must carry the provider's JSON envelope; a proxy's HTML page is retried."""
        try:
            self.cursor_of(response)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            kind = response.headers.get("content-type", "unknown content type")
            msg = (
                f"{self.endpoint} returned HTTP {response.status_code} with a body that is not "
                f"JSON ({kind}, {len(response.content)} bytes): retrying"
            )
            raise RetriableAPIError(msg, response) from exc
        except (KeyError, TypeError, AttributeError) as exc:
            body = _decode_or_none(response)
            keys = sorted(body)[:5] if isinstance(body, dict) else type(body).__name__
            msg = (
                f"{self.endpoint} returned HTTP {response.status_code} but not the "
                f"{self.provider.label} envelope (got {keys})"
            )
            raise LmsAPIError(self.redact(msg)) from exc

    def error_text(self, response: requests.Response, code: str | None, message: str) -> str:
        """`GET /lms/users → HTTP 401 PLATFORM.X: message — hint`, with secrets redacted."""
        reason = f" {code}" if code else ""
        detail = f": {message}" if message else f": {response.reason}"
        text = f"{self.endpoint} → HTTP {response.status_code}{reason}{detail}"
        text += self.provider.error_hint(response.status_code)
        return self.redact(text)


class Unreached(RetriableAPIError):
    """The API's origin refused the connection or its host is unknown, and it has not
    answered once in this run: retried once, quickly, then the tenant fails."""


def _unreachable(exc: BaseException) -> bool:
    """A refused connection or a host that does not resolve (not a reset or a timeout)."""
    text = str(exc)
    causes = (
        "Connection refused",
        "Name or service not known",
        "nodename nor servname",
        "Temporary failure in name resolution",
        "No address associated",
        "[Errno -",
    )
    return isinstance(exc, requests.exceptions.ConnectionError) and any(c in text for c in causes)


def transport_cause(exc: BaseException) -> str:
    """The cause of a transport failure in a few words (`[Errno 111] Connection refused`)."""
    text = str(exc)
    for pattern in (r"\[Errno -?\d+\] [^'\"()]+", r"Read timed out", r"Connection aborted\.?"):
        found = re.search(pattern, text)
        if found:
            return found.group(0).strip()
    cause = exc.__cause__ or exc.__context__
    if cause is not None and cause is not exc and str(cause):
        return transport_cause(cause)
    return text[:200] or "no complete response"


def _decode_or_none(response: requests.Response) -> t.Any:
    try:
        return decode_json(response.content) if response.content else None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
