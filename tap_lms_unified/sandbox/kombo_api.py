"""Kombo unified LMS API emulation (``GET {kombo_url}/lms/...``)."""

from __future__ import annotations

import base64
import binascii
import calendar
import hashlib
import json
import re
import uuid
from typing import Any

from tap_lms_unified.sandbox.data import KOMBO_MODELS, DataStore
from tap_lms_unified.sandbox.kombo_data import filter_key
from tap_lms_unified.sandbox.limiter import FixedWindowLimiter, RateState
from tap_lms_unified.sandbox.options import SANDBOX_API_KEY, Options
from tap_lms_unified.sandbox.wire import ApiRequest, Response, json_response

UPDATED_AFTER_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?)?Z?", re.ASCII
)
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 250
NOMINAL_LIMIT = 1000

_TITLES = {
    "PLATFORM.AUTHENTICATION_INVALID": "The provided API key is invalid.",
    "PLATFORM.INPUT_INVALID": "The input you provided is invalid.",
    "PLATFORM.INTEGRATION_NOT_FOUND": "The integration could not be found.",
    "PLATFORM.RATE_LIMIT_EXCEEDED": "You have exceeded the rate limit.",
    "PLATFORM.CONCURRENCY_LIMIT_EXCEEDED": "You have exceeded the concurrency limit.",
    "PLATFORM.UNKNOWN_ERROR": "An unknown error occurred.",
    "PLATFORM.TASK_TIMED_OUT": "The task timed out.",
    "INTEGRATION.SETUP_SYNC_PENDING": "The initial sync of this integration is still running.",
}
_DEFAULT_CODES = {
    400: "PLATFORM.INPUT_INVALID",
    401: "PLATFORM.AUTHENTICATION_INVALID",
    404: "PLATFORM.INTEGRATION_NOT_FOUND",
    409: "INTEGRATION.SETUP_SYNC_PENDING",
    429: "PLATFORM.RATE_LIMIT_EXCEEDED",
    504: "PLATFORM.TASK_TIMED_OUT",
}


class InputInvalid(Exception):
    """A query parameter was rejected (400 ``PLATFORM.INPUT_INVALID``)."""


def kombo_error(
    status: int,
    code: str | None,
    message: str,
    headers: dict[str, str] | None = None,
) -> Response:
    body = {
        "status": "error",
        "error": {
            "code": code,
            "title": _TITLES.get(code or ""),
            "message": message,
            "log_url": f"https://app.kombo.dev/logs?id={uuid.uuid4().hex[:24]}",
        },
    }
    return json_response(status, body, headers)


def default_error(status: int, code: str | None = None) -> Response:
    """The error a Kombo fault of kind ``status`` answers when no body is given."""
    code = code or _DEFAULT_CODES.get(status, "PLATFORM.UNKNOWN_ERROR")
    headers = {}
    if status == 429:
        headers = {"ratelimit-limit": str(NOMINAL_LIMIT), "ratelimit-remaining": "0"}
        headers["ratelimit-reset"] = "1"
    return kombo_error(status, code, f"Sandbox fault: HTTP {status}.", headers)


def parse_updated_after(value: str) -> int:
    """Microseconds since the epoch; raises :class:`InputInvalid` like Kombo does."""
    m = UPDATED_AFTER_RE.fullmatch(value)
    if m is None:
        raise InputInvalid(
            "updated_after must match ^\\d{4}-\\d{2}-\\d{2}(T\\d{2}:\\d{2}:\\d{2}(\\.\\d+)?)?Z?$ "
            f"(got {value!r})."
        )
    y, mo, d, h, mi, s, frac = m.groups()
    parts = (int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0))
    if not (1 <= parts[1] <= 12 and 1 <= parts[2] <= 31 and parts[3] < 24 and parts[4] < 60):
        raise InputInvalid(f"updated_after is not a valid date-time: {value!r}.")
    micros = int((frac or "0")[:6].ljust(6, "0"))
    return calendar.timegm((*parts, 0, 0, 0)) * 1_000_000 + micros


class KomboApi:
    def __init__(self, data: DataStore, options: Options, limiter: FixedWindowLimiter) -> None:
        self.data = data
        self.options = options
        self.limiter = limiter

    def handle(self, req: ApiRequest, fault_kind: str | None) -> Response:
        if req.headers.get("authorization") != f"Bearer {SANDBOX_API_KEY}":
            return kombo_error(
                401,
                "PLATFORM.AUTHENTICATION_INVALID",
                "The API key in the Authorization header is missing or invalid.",
                self._nominal_headers(),
            )
        tenant = req.headers.get("x-integration-id")
        if not tenant:
            return kombo_error(
                400,
                "PLATFORM.INPUT_INVALID",
                "The X-Integration-Id header is required.",
                self._nominal_headers(),
            )
        if tenant not in self.options.kombo_tenants:
            return kombo_error(
                404,
                "PLATFORM.INTEGRATION_NOT_FOUND",
                f"No integration with the ID {tenant!r} exists.",
                self._nominal_headers(),
            )
        rate = self.limiter.hit(tenant)
        headers = self._rate_headers(rate)
        if not rate.allowed:
            return kombo_error(
                429,
                "PLATFORM.RATE_LIMIT_EXCEEDED",
                f"Rate limit of {rate.limit} requests per window exceeded.",
                headers,
            )
        if tenant in self.options.kombo_not_ready_tenants:
            return kombo_error(
                409,
                "INTEGRATION.SETUP_SYNC_PENDING",
                "The integration's initial sync has not finished yet. Try again later.",
                headers,
            )
        model_name = req.path.removeprefix("/lms/")
        if not req.path.startswith("/lms/") or model_name not in KOMBO_MODELS:
            return kombo_error(404, None, f"Route GET {req.path} not found.", headers)
        try:
            body = self._list(tenant, model_name, req.params, fault_kind)
        except InputInvalid as exc:
            return kombo_error(400, "PLATFORM.INPUT_INVALID", str(exc), headers)
        return json_response(200, body, headers)

    def _list(
        self, tenant: str, model_name: str, params: dict[str, str], fault_kind: str | None
    ) -> dict[str, Any]:
        model = self.data.kombo(tenant).model(model_name)
        page_size = _page_size(params.get("page_size"))
        include_deleted = params.get("include_deleted", "false")
        if include_deleted not in ("true", "false"):
            raise InputInvalid("include_deleted must be 'true' or 'false'.")
        ua = params.get("updated_after")
        key = filter_key(
            include_deleted == "true",
            None if ua is None else parse_updated_after(ua),
            _csv(params.get("ids")),
            _csv(params.get("remote_ids")),
        )
        fingerprint = _fingerprint(tenant, model_name, key)
        sent = params.get("cursor")
        after = -1 if sent is None else _decode_cursor(sent, fingerprint)
        selection = model.select(key)
        if fault_kind == "empty_page":
            return _envelope(sent or _encode_cursor(after, fingerprint), [])
        chunk, more = model.page(selection, after, page_size)
        results = [model.render(i) for i in chunk]
        nxt = _encode_cursor(chunk[-1], fingerprint) if more and chunk else None
        if fault_kind == "repeat_cursor":
            nxt = sent or _encode_cursor(after, fingerprint)
        return _envelope(nxt, results)

    def _rate_headers(self, rate: RateState) -> dict[str, str]:
        if rate.limit is None and rate.remaining is None:
            # No budget enforced: never announce one running out (clients would wait).
            return self._nominal_headers()
        limit = NOMINAL_LIMIT if rate.limit is None else rate.limit
        remaining = max(0, limit - rate.count) if rate.remaining is None else rate.remaining
        return {
            "ratelimit-limit": str(limit),
            "ratelimit-remaining": str(remaining),
            "ratelimit-reset": str(rate.reset_in()),
        }

    def _nominal_headers(self) -> dict[str, str]:
        limit = self.limiter.limit or NOMINAL_LIMIT
        return {
            "ratelimit-limit": str(limit),
            "ratelimit-remaining": str(limit),
            "ratelimit-reset": str(max(1, int(self.limiter.window_s))),
        }


def _envelope(nxt: str | None, results: list[Any]) -> dict[str, Any]:
    return {"status": "success", "data": {"next": nxt, "results": results}}


def _page_size(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE_SIZE
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise InputInvalid(f"page_size must be an integer between 1 and {MAX_PAGE_SIZE}.")
    return int(raw)


def _csv(raw: str | None) -> tuple[str, ...] | None:
    if raw is None:
        return None
    return tuple(sorted({p.strip() for p in raw.split(",") if p.strip()}))


def _fingerprint(tenant: str, model: str, key: tuple[Any, ...]) -> str:
    text = json.dumps([tenant, model, *key])
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def _encode_cursor(after: int, fingerprint: str) -> str:
    raw = json.dumps({"after": after, "filters": fingerprint}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, fingerprint: str) -> int:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        after, filters = data["after"], data["filters"]
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise InputInvalid("The cursor is invalid.") from exc
    if filters != fingerprint or not isinstance(after, int):
        raise InputInvalid(
            "The cursor was created with different filters; send the same filters with "
            "every page of a cursor."
        )
    return after
