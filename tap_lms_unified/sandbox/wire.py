"""Request/response value types shared by the provider fakes and the HTTP server."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

_encoder = msgspec.json.Encoder()


def encode_json(obj: Any) -> bytes:
    return _encoder.encode(obj)


@dataclass
class ApiRequest:
    provider: str  # the name of the fake that answers it
    path: str  # relative to the fake's URL prefix, e.g. "/lms/users"
    params: dict[str, str]
    headers: dict[str, str]  # lower-cased names


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    cut_at: int | None = None  # "reset" fault: bytes sent before the socket is aborted


def json_response(status: int, obj: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status, encode_json(obj), dict(headers or {}))


@dataclass
class RequestLog:
    """One API request as seen by the sandbox (never contains a connector token)."""

    provider: str
    tenant: str | None  # as the fake names it in logs (e.g. a connector NAME, not its token)
    path: str
    params: dict[str, str]
    status: int
    fault: str | None
    time: float
