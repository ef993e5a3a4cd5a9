"""Injectable faults: wrong statuses, slow/broken/odd responses, pagination traps."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tap_lms_unified.sandbox import providers

FAULT_KINDS = (
    "status",  # respond with `status` (+ optional headers/body; default: the fake's error)
    "delay",  # sleep `seconds`, then answer normally
    "reset",  # headers + part of the body, then abort the connection
    "truncate",  # 200 with half of the body (Content-Length matches the cut body)
    "html200",  # 200 text/html proxy error page
    "repeat_cursor",  # normal page, but next cursor == the cursor that was sent
    "bad_envelope",  # 200 JSON that is not the provider's envelope
    "empty_page",  # 200, zero items, non-null cursor pointing at the same position
)
# Kinds answered without running the API emulation at all.
SHORT_CIRCUIT = frozenset({"status", "html200", "bad_envelope"})


@dataclass
class Fault:
    """A fault applied to matching API requests.

    ``provider``/``path``/``tenant`` select requests (None = any; ``provider`` is a
    registered fake's name, ``path`` a substring of the request path, ``tenant`` one of
    the identities the fake reports for the request, e.g. a tenant id or name).
    The first ``after`` matching requests pass, then the next ``times`` ones get the
    fault (``times=None``: all of them).
    """

    kind: str
    provider: str | None = None
    path: str | None = None
    tenant: str | None = None
    after: int = 0
    times: int | None = 1
    status: int | None = None  # kind="status"
    headers: dict[str, str] | None = None  # kind="status"
    body: dict[str, Any] | list[Any] | str | None = None  # kind="status"
    code: str | None = None  # kind="status", error code for the fake's default error
    seconds: float = 1.0  # kind="delay"
    seen: int = field(default=0, compare=False)
    applied: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {FAULT_KINDS}")
        if self.provider is not None and self.provider not in providers.names():
            raise ValueError(f"provider must be one of {providers.names()} or null")
        if self.kind == "status" and self.status is None:
            raise ValueError("a 'status' fault needs a status code")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fault:
        names = {f.name for f in dataclasses.fields(cls)} - {"seen", "applied"}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown fault field(s) {unknown}")
        return cls(**data)

    def matches(self, provider: str, path: str, tenants: tuple[str, ...]) -> bool:
        if self.provider is not None and self.provider != provider:
            return False
        if self.path is not None and self.path not in path:
            return False
        return self.tenant is None or self.tenant in tenants

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.applied >= self.times


class FaultSet:
    """Thread-safe list of faults; :meth:`take` decides which one (if any) fires."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def list(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def take(self, provider: str, path: str, tenants: tuple[str, ...]) -> Fault | None:
        """Count this request against every matching fault; return the first that fires."""
        fired: Fault | None = None
        with self._lock:
            for fault in self._faults:
                if fault.exhausted or not fault.matches(provider, path, tenants):
                    continue
                fault.seen += 1
                if fired is None and fault.seen > fault.after:
                    fault.applied += 1
                    fired = fault
        return fired


HTML_ERROR_PAGE = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
