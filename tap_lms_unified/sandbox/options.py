"""Runtime options of a running sandbox (settable in-process and via ``/_sandbox/options``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SANDBOX_API_KEY = "sandbox-api-key"
DEFAULT_KOMBO_TENANTS: tuple[str, ...] = ("sandbox:acme", "sandbox:globex")
DEFAULT_BINDBEE_TOKENS: Mapping[str, str] = {"sandbox-connector-acme": "acme"}


@dataclass
class Options:
    """Behaviour switches.  Budgets count requests per ``*_budget_window_s`` fixed window."""

    kombo_legacy_users: bool = True
    latency_ms: float = 0
    kombo_tenants: tuple[str, ...] = DEFAULT_KOMBO_TENANTS
    kombo_not_ready_tenants: tuple[str, ...] = ()
    kombo_budget_per_minute: int | None = None
    kombo_budget_window_s: float = 60.0
    bindbee_tokens: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_BINDBEE_TOKENS))
    bindbee_non_lms_connectors: tuple[str, ...] = ()
    bindbee_budget_per_minute: int | None = 200
    bindbee_budget_window_s: float = 60.0
    bindbee_empty_page_every: int = 0
    #: The largest page_size Bindbee accepts (its spec says 200, older docs said 100).
    bindbee_max_page_size: int = 200

    def update(self, values: Mapping[str, Any]) -> None:
        """Validate and set options; raises ``ValueError`` on unknown names or bad values."""
        known = {f.name: f for f in dataclasses.fields(self)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown option(s) {unknown}; known: {sorted(known)}")
        coerced = {name: _coerce(name, value) for name, value in values.items()}
        for name, value in coerced.items():
            setattr(self, name, value)

    def public(self) -> dict[str, Any]:
        """Options as JSON-able data, with connector tokens replaced by their names."""
        out = dataclasses.asdict(self)
        out["bindbee_tokens"] = sorted(self.bindbee_tokens.values())
        return out


def _coerce(name: str, value: Any) -> Any:
    if name == "kombo_legacy_users":
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be a boolean")
        return value
    if name in ("kombo_tenants", "kombo_not_ready_tenants", "bindbee_non_lms_connectors"):
        if isinstance(value, str) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{name} must be a list of strings")
        return tuple(value)
    if name == "bindbee_tokens":
        if not isinstance(value, Mapping):
            raise ValueError(f"{name} must be an object token -> connector name")
        return {str(k): str(v) for k, v in value.items()}
    if name in ("kombo_budget_per_minute", "bindbee_budget_per_minute"):
        if value is None:
            return None
        return _number(name, value, int, minimum=0)
    if name == "bindbee_empty_page_every":
        return _number(name, value, int, minimum=0)
    if name == "bindbee_max_page_size":
        return _number(name, value, int, minimum=1)
    return _number(name, value, float, minimum=0)


def _number(name: str, value: Any, kind: type[int] | type[float], minimum: float) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}")
    return kind(value)
