"""Every registered provider, as a provider-parametrised test needs it.

A suite that runs for every provider takes a `Case` (`CASES`, or `cases(...)` for those with
some capability) and learns everything from the provider's declarations (provider.py:
tenancy, paging, incremental filter, ...) and from its fake's client side
(sandbox/fake.py: default tenants, the sandbox settings that make tenants exist, the tap
settings that read them, their secrets). No test branches on a provider's name: a newly
registered provider (and its fake) runs through every such suite as it is.
"""

from __future__ import annotations

import copy
import typing as t
from dataclasses import dataclass
from functools import cached_property

import pytest

from tap_lms_unified.paging import OffsetPaging
from tap_lms_unified.providers import PROVIDERS
from tap_lms_unified.sandbox import SANDBOX_API_KEY, Sandbox
from tap_lms_unified.sandbox import providers as fakes

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from tap_lms_unified.provider import Provider
    from tap_lms_unified.sandbox.fake import ProviderFake
    from tap_lms_unified.streams import LmsStream

#: Settings every test run gets unless it says otherwise: short waits.
TEST_SETTINGS: dict[str, t.Any] = {"max_retry_wait_seconds": 2}


@dataclass(frozen=True)
class Case:
    """One registered provider and its fake."""

    name: str

    def __str__(self) -> str:
        return self.name

    @cached_property
    def provider(self) -> Provider:
        return PROVIDERS[self.name]

    @cached_property
    def fake(self) -> type[ProviderFake[t.Any, t.Any, t.Any]]:
        return fakes.get(self.name)

    # -- the provider's declarations ------------------------------------------------------

    @property
    def label(self) -> str:
        return self.provider.label

    @property
    def tenant_field(self) -> str:
        return self.provider.tenancy.field

    @cached_property
    def classes(self) -> dict[str, type[LmsStream]]:
        """The stream classes by name, in discovery order."""
        streams = t.cast("tuple[type[LmsStream], ...]", self.provider.streams)
        return {str(getattr(cls, "name")): cls for cls in streams}  # noqa: B009

    @property
    def streams(self) -> tuple[str, ...]:
        return tuple(self.classes)

    def keys(self, stream: str) -> tuple[str, ...]:
        return tuple(getattr(self.classes[stream], "primary_keys"))  # noqa: B009

    def bookmark(self, stream: str) -> str | None:
        """The stream's replication key, when the provider filters by it (else None)."""
        key = getattr(self.classes[stream], "replication_key", None)
        return key if isinstance(key, str) and self.provider.incremental else None

    @property
    def incremental_streams(self) -> tuple[str, ...]:
        return tuple(s for s in self.streams if self.bookmark(s))

    @property
    def full_table_streams(self) -> tuple[str, ...]:
        return tuple(s for s in self.streams if not self.bookmark(s))

    @property
    def offset_paging(self) -> bool:
        return isinstance(self.provider.paging, OffsetPaging)

    @property
    def paired(self) -> dict[str, str]:
        """Streams that share one walk with a partner: stream -> partner."""
        return {
            name: str(cls.partner) for name, cls in self.classes.items() if hasattr(cls, "partner")
        }

    def model(self, stream: str) -> str:
        """The fake's model behind a stream: the last segment of its endpoint."""
        return self.endpoint(stream).rsplit("/", 1)[-1]

    def endpoint(self, stream: str) -> str:
        """The stream's path, as the fake sees it (relative to its prefix)."""
        return str(getattr(self.example_tap.streams[stream], "path"))  # noqa: B009

    @cached_property
    def example_tap(self) -> t.Any:
        """A tap of this provider (not run), for what only its stream objects say."""
        return self.tap(self.config("http://127.0.0.1:9"))

    # -- the fake's client side ----------------------------------------------------------

    @property
    def default_tenant(self) -> str:
        return self.fake.default_tenants[0]

    def tenants(self, count: int, prefix: str = "tenant") -> list[str]:
        """`count` tenant names (sandbox_settings makes them exist)."""
        return [f"{prefix}-{i}" for i in range(1, count + 1)]

    def sandbox_settings(self, names: Sequence[str]) -> dict[str, t.Any]:
        """`Sandbox(...)` settings under which tenants called `names` exist."""
        return self.fake.tenant_settings(names)

    def config(self, url: str, names: Sequence[str] | None = None, **overrides: t.Any) -> dict:
        """The tap's settings reading `names` (default: the fake's own tenant) at `url`
        (the fake's base URL: `Sandbox.url_of`, or a test server's)."""
        config = self.fake.tap_config(url, list(names or [self.default_tenant]))
        return {**config, **TEST_SETTINGS, **overrides}

    def secrets(self, names: Sequence[str] | None = None) -> list[str]:
        """Every secret in `config(url, names)`."""
        return [SANDBOX_API_KEY, *self.fake.tenant_secrets(list(names or [self.default_tenant]))]

    def tap(self, config: dict[str, t.Any]) -> t.Any:
        """A tap for `config` (not run)."""
        from tap_lms_unified.tap import TapLmsUnified

        return TapLmsUnified(config=config, validate_config=False)

    def expected_rows(self, sb: Sandbox, tenant: str, stream: str) -> list[dict[str, t.Any]]:
        """The rows the tap should emit for a tenant's stream: the fake's records of the
        stream's model, split into rows as the stream does, with the tenant field."""
        url = sb.url_of(self.name)
        tap = self.tap(self.config(url, [tenant]))
        reader = tap.streams[stream]
        rows = []
        for record in sb.records(self.name, tenant, self.model(stream)):
            for row in reader.rows(copy.deepcopy(record)):
                row[self.tenant_field] = tenant
                rows.append(row)
        return rows

    def expected_keys(self, sb: Sandbox, tenant: str, stream: str) -> list[tuple[t.Any, ...]]:
        keys = self.keys(stream)
        return [tuple(row[k] for k in keys) for row in self.expected_rows(sb, tenant, stream)]


CASES: tuple[Case, ...] = tuple(Case(name) for name in PROVIDERS)


def cases(where: Callable[[Case], object] | None = None) -> list[t.Any]:
    """Every provider (or those `where` holds for) as pytest parameters, named."""
    return [pytest.param(c, id=c.name) for c in CASES if where is None or where(c)]


def sandbox_for(names: Iterable[str] = (), seed: int = 7, **settings: t.Any) -> Sandbox:
    """A sandbox (not started) in which every provider has the tenants `names`, besides
    its own default ones."""
    merged: dict[str, t.Any] = {}
    for case in CASES:
        wanted = [*case.fake.default_tenants, *names]
        merged.update(case.sandbox_settings(list(dict.fromkeys(wanted))))
    merged.update(settings)
    return Sandbox(seed=seed, **merged)
