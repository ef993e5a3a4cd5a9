"""Runtime options of a running sandbox (settable in-process and via ``/_sandbox/options``).

``latency_ms`` is shared; every other option belongs to one provider's fake (its
``options_type``) and is named ``<provider>_<field>`` outside, e.g. ``<provider>_tenants``
for the field ``tenants`` of that provider's fake.  :func:`split_settings` maps the
flat ``Sandbox(...)`` keyword arguments onto sizes and options the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import UnionType
from typing import Any

from tap_lms_unified.sandbox.fake import SANDBOX_API_KEY, FakeOptions
from tap_lms_unified.sandbox.providers import PROVIDERS

__all__ = ["SANDBOX_API_KEY", "Options", "split_settings"]
_SHARED: dict[str, Any] = {"latency_ms": float}


class Options:
    """The shared options plus one options object per provider (``of(name)``)."""

    def __init__(self) -> None:
        self.latency_ms: float = 0
        self._providers: dict[str, FakeOptions] = {p.name: p.options_type() for p in PROVIDERS}
        self._known: dict[str, tuple[str | None, str, Any]] = {
            name: (None, name, kind) for name, kind in _SHARED.items()
        }
        for p in PROVIDERS:
            types = p.option_types()
            for outside, field in p.option_fields().items():
                self._known[outside] = (p.name, field, types[field])

    def of(self, provider: str) -> FakeOptions:
        """The options object of a provider's fake (shared with the running fake)."""
        return self._providers[provider]

    def update(self, values: Mapping[str, Any]) -> dict[str | None, set[str]]:
        """Validate and set options; raises ``ValueError`` on unknown names or bad values.

        Returns the fields set per provider (``None``: the shared options).
        """
        unknown = sorted(set(values) - set(self._known))
        if unknown:
            raise ValueError(f"unknown option(s) {unknown}; known: {sorted(self._known)}")
        coerced = {name: _coerce(name, self._known[name][2], v) for name, v in values.items()}
        changed: dict[str | None, set[str]] = {}
        for name, value in coerced.items():
            provider, field, _ = self._known[name]
            setattr(self if provider is None else self._providers[provider], field, value)
            changed.setdefault(provider, set()).add(field)
        return changed

    def public(self) -> dict[str, Any]:
        """Options as JSON-able data under their outside names, without secrets."""
        out: dict[str, Any] = {name: getattr(self, name) for name in _SHARED}
        for p in PROVIDERS:
            public = self._providers[p.name].public()
            out.update({p.setting_name(field): value for field, value in public.items()})
        return dict(sorted(out.items()))


def split_settings(
    settings: Mapping[str, Any],
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Flat ``Sandbox(...)`` settings -> (size fields per provider, options by outside name)."""
    sizes: dict[str, dict[str, Any]] = {p.name: {} for p in PROVIDERS}
    size_names = {outside: (p.name, f) for p in PROVIDERS for outside, f in p.size_fields().items()}
    option_names = {outside for p in PROVIDERS for outside in p.option_fields()}
    options: dict[str, Any] = {}
    for name, value in settings.items():
        if name in size_names:
            provider, field = size_names[name]
            sizes[provider][field] = value
        elif name in option_names:
            options[name] = value
        else:
            raise TypeError(f"Sandbox() got an unexpected keyword argument {name!r}")
    return sizes, options


def _coerce(name: str, kind: Any, value: Any) -> Any:
    """``value`` as an option of type ``kind`` (the option field's type annotation)."""
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be a boolean")
        return value
    if kind == tuple[str, ...]:
        if isinstance(value, str) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{name} must be a list of strings")
        return tuple(value)
    if kind == dict[str, str]:
        if not isinstance(value, Mapping):
            raise ValueError(f"{name} must be an object of strings")
        return {str(k): str(v) for k, v in value.items()}
    if isinstance(kind, UnionType) and type(None) in kind.__args__:
        if value is None:
            return None
        (kind,) = (k for k in kind.__args__ if k is not type(None))
    if kind in (int, float):
        return _number(name, value, kind, minimum=0)
    raise TypeError(f"option {name}: unsupported type {kind!r}")


def _number(name: str, value: Any, kind: type[int] | type[float], minimum: float) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}")
    return kind(value)
