"""Bindbee LMS API emulation (``GET {bindbee_url}/api/lms/v1/...``)."""

from __future__ import annotations

import base64
import binascii
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any

from tap_lms_unified.sandbox.bindbee_data import BindbeeModel
from tap_lms_unified.sandbox.data import BINDBEE_MODELS, DataStore
from tap_lms_unified.sandbox.limiter import FixedWindowLimiter, RateState
from tap_lms_unified.sandbox.options import SANDBOX_API_KEY, Options
from tap_lms_unified.sandbox.wire import ApiRequest, Response, json_response

PREFIX = "/api/lms/v1/"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})
_DETAILS = {
    400: "Bad request",
    401: "Invalid authentication credentials",
    403: "Forbidden",
    404: "Not found",
    409: "Conflict",
    429: "Rate limit exceeded",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Gateway timeout",
}


def detail(status: int, text: str, headers: dict[str, str] | None = None) -> Response:
    return json_response(status, {"detail": text}, headers)


def default_error(status: int) -> Response:
    """The error a Bindbee fault of kind ``status`` answers when no body is given."""
    headers = {}
    if status == 429:
        headers = {"Retry-After": "1", "X-RateLimit-Limit": "200", "X-RateLimit-Remaining": "0"}
    elif status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    return detail(status, _DETAILS.get(status, f"HTTP {status}"), headers)


@dataclass(frozen=True)
class Cursor:
    """Position after record index ``after``; ``pages``/``empty`` drive empty-page insertion."""

    after: int = -1
    pages: int = 0
    empty: bool = False


class BindbeeApi:
    def __init__(self, data: DataStore, options: Options, limiter: FixedWindowLimiter) -> None:
        self.data = data
        self.options = options
        self.limiter = limiter

    def connector_name(self, headers: dict[str, str]) -> str | None:
        token = headers.get("x-connector-token")
        return None if token is None else self.options.bindbee_tokens.get(token)

    def handle(self, req: ApiRequest, fault_kind: str | None) -> Response:
        if req.headers.get("authorization") != f"Bearer {SANDBOX_API_KEY}":
            return detail(401, "Invalid or missing API key", {"WWW-Authenticate": "Bearer"})
        token = req.headers.get("x-connector-token")
        if not token:
            return detail(401, "Missing x-connector-token header")
        name = self.options.bindbee_tokens.get(token)
        if name is None:
            return detail(401, "Invalid connector token")
        if name in self.options.bindbee_non_lms_connectors:
            return detail(403, "This connector token does not belong to the LMS category")
        rate = self.limiter.hit(name)
        headers = _rate_headers(rate)
        if not rate.allowed:
            headers["Retry-After"] = str(rate.reset_in())
            return detail(429, "Rate limit exceeded", headers)
        parts = req.path.removeprefix(PREFIX).split("/") if req.path.startswith(PREFIX) else []
        if not parts or parts[0] not in BINDBEE_MODELS or len(parts) > 2:
            return detail(404, "Not Found", headers)
        model = self.data.bindbee(name).model(parts[0])
        errors, flags = _validate(req.params, self.options.bindbee_max_page_size)
        if errors:
            return json_response(422, {"detail": errors}, headers)
        raw, custom, page_size = flags
        if len(parts) == 2:
            idx = model.index_of(parts[1])
            if idx is None or idx in model.deleted:
                return detail(404, f"{parts[0][:-1].capitalize()} not found", headers)
            return json_response(200, model.render(idx, raw, custom), headers)
        try:
            cursor = _decode(req.params.get("cursor"), model)
        except ValueError:
            return detail(400, "Invalid cursor", headers)
        body = self._list(
            model,
            params=req.params,
            cursor=cursor,
            page_size=page_size,
            flags=(raw, custom),
            fault_kind=fault_kind,
        )
        return json_response(200, body, headers)

    def _list(
        self,
        model: BindbeeModel,
        *,
        params: dict[str, str],
        cursor: Cursor,
        page_size: int,
        flags: tuple[bool, bool],
        fault_kind: str | None,
    ) -> dict[str, Any]:
        every = self.options.bindbee_empty_page_every
        sent = params.get("cursor")
        insert_empty = every > 0 and cursor.pages > 0 and cursor.pages % every == 0
        if fault_kind == "empty_page" or (insert_empty and not cursor.empty):
            same = Cursor(cursor.after, cursor.pages, empty=True)
            return _envelope(_encode(same, model), [])
        ids = params.get("ids")
        if ids is None:
            chunk, more = model.page_after(cursor.after, page_size)
        else:
            wanted = {model.index_of(p.strip()) for p in ids.split(",")}
            selection = sorted(i for i in wanted if i is not None and i not in model.deleted)
            pos = bisect_right(selection, cursor.after)
            chunk, more = selection[pos : pos + page_size], pos + page_size < len(selection)
        items = [model.render(i, *flags) for i in chunk]
        nxt = _encode(Cursor(chunk[-1], cursor.pages + 1), model) if more and chunk else None
        if fault_kind == "repeat_cursor":
            nxt = sent or _encode(cursor, model)
        return _envelope(nxt, items)


def _envelope(cursor: str | None, items: list[Any]) -> dict[str, Any]:
    return {"cursor": cursor, "page_size": len(items), "items": items}


def _rate_headers(rate: RateState) -> dict[str, str]:
    if rate.limit is None:
        return {}
    return {
        "X-RateLimit-Limit": str(rate.limit),
        "X-RateLimit-Remaining": str(rate.remaining),
        "X-RateLimit-Reset": str(int(rate.reset_at + 0.999)),
    }


def _validate(
    params: dict[str, str], max_page_size: int = MAX_PAGE_SIZE
) -> tuple[list[dict[str, Any]], tuple[bool, bool, int]]:
    """FastAPI-style validation of the common query parameters."""
    errors: list[dict[str, Any]] = []
    flags = []
    for name in ("include_raw_data", "include_custom_fields"):
        raw = params.get(name, "false")
        if raw.lower() in _TRUE:
            flags.append(True)
            continue
        flags.append(False)
        if raw.lower() not in _FALSE:
            errors.append(
                {
                    "type": "bool_parsing",
                    "loc": ["query", name],
                    "msg": "Input should be a valid boolean, unable to interpret input",
                    "input": raw,
                }
            )
    raw_size = params.get("page_size", str(DEFAULT_PAGE_SIZE))
    page_size = DEFAULT_PAGE_SIZE
    try:
        page_size = int(raw_size)
    except ValueError:
        errors.append(
            {
                "type": "int_parsing",
                "loc": ["query", "page_size"],
                "msg": "Input should be a valid integer, unable to parse string as an integer",
                "input": raw_size,
            }
        )
    else:
        if page_size > max_page_size:
            errors.append(
                {
                    "type": "less_than_equal",
                    "loc": ["query", "page_size"],
                    "msg": f"Input should be less than or equal to {max_page_size}",
                    "input": raw_size,
                    "ctx": {"le": max_page_size},
                }
            )
        elif page_size < 1:
            errors.append(
                {
                    "type": "greater_than_equal",
                    "loc": ["query", "page_size"],
                    "msg": "Input should be greater than or equal to 1",
                    "input": raw_size,
                    "ctx": {"ge": 1},
                }
            )
    return errors, (flags[0], flags[1], page_size)


def _encode(cursor: Cursor, model: BindbeeModel) -> str:
    last = model.id(cursor.after) if cursor.after >= 0 else ""
    raw = f"{last}|{cursor.pages}|{int(cursor.empty)}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode(raw: str | None, model: BindbeeModel) -> Cursor:
    """Raises ``ValueError`` for a malformed cursor."""
    if raw is None:
        return Cursor()
    try:
        text = base64.urlsafe_b64decode((raw + "=" * (-len(raw) % 4)).encode()).decode()
        last, pages, empty = text.split("|")
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ValueError("invalid cursor") from exc
    after = -1
    if last:
        # keyset: the position is the last id served, even if that record was deleted since
        idx = model.index_of(last)
        if idx is None:
            raise ValueError("invalid cursor")
        after = idx
    return Cursor(after, int(pages), empty == "1")
