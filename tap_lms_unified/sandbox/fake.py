"""The contract of a provider's fake, and the generic plumbing around it.

A provider's fake is one module of this package holding its data generator, its
API handler, its options and sizes, its CLI flags and its URL prefix, in a subclass of
:class:`ProviderFake` that :mod:`.providers` registers.  The shared modules (server,
options, CLI, faults) only ever talk to that class.

Settings naming: the fields of a fake's ``sizes_type`` (data sizes, fixed at start)
and ``options_type`` (runtime options) are addressed from outside as
``<name>_<field>`` -- ``Sandbox(<name>_users=5)``, ``set_option(<name>_tenants=[...])``,
``/_sandbox/options`` -- except the fields listed in ``unprefixed``.
"""

from __future__ import annotations

import argparse
import dataclasses
import threading
import typing
from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from tap_lms_unified.sandbox.wire import ApiRequest, Response, json_response

SANDBOX_API_KEY = "sandbox-api-key"  # the bearer token every fake accepts

Record = dict[str, Any]


@dataclass
class FakeOptions:
    """Base class of a fake's runtime options (a dataclass of JSON-able fields)."""

    def public(self) -> dict[str, Any]:
        """The options as shown by ``/_sandbox/options`` (override to hide secrets)."""
        return dataclasses.asdict(self)


class PageCache:
    """Rendered page bodies by a key naming everything a body depends on.

    A fake keys a page by tenant, model, filters, cursor, page size, the options that
    shape records, and the tenant's data version: a repeat request is answered without
    rendering it again. A real API answers each page within its latency however many
    clients ask; the sandbox renders in one Python process, so without this, concurrent
    walks would measure the sandbox's rendering, not the client. Bounded in bytes; the
    oldest pages go first.
    """

    def __init__(self, max_bytes: int = 64 << 20) -> None:
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._pages: dict[Hashable, bytes] = {}
        self._bytes = 0

    def get(self, key: Hashable) -> bytes | None:
        with self._lock:
            return self._pages.get(key)

    def put(self, key: Hashable, body: bytes) -> None:
        if len(body) > self.max_bytes:
            return
        with self._lock:
            old = self._pages.pop(key, None)
            self._bytes -= len(old) if old is not None else 0
            while self._pages and self._bytes + len(body) > self.max_bytes:
                self._bytes -= len(self._pages.pop(next(iter(self._pages))))
            self._pages[key] = body
            self._bytes += len(body)

    def clear(self) -> None:
        with self._lock:
            self._pages.clear()
            self._bytes = 0


class Named(Protocol):
    name: str


ModelT = TypeVar("ModelT", bound=Named)


def served_models(names: Sequence[str], *models: ModelT) -> dict[str, ModelT]:
    """``{name: model}`` in the order of ``names``; fails if a named model is missing."""
    by_name = {m.name: m for m in models}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise NotImplementedError(f"the fake implements no model {missing}")
    return {n: by_name[n] for n in names}


SizesT = TypeVar("SizesT")
OptionsT = TypeVar("OptionsT", bound=FakeOptions)
TenantT = TypeVar("TenantT")


class ProviderFake(ABC, Generic[SizesT, OptionsT, TenantT]):
    """One provider's API imitation, mounted at ``{sandbox url}{prefix}``.

    Holds one lazily created dataset (``TenantT``) per tenant; each dataset derives from
    ``(seed, tenant)`` only, so the same seed always produces the same records.
    """

    name: ClassVar[str]  # lower case; prefix of its settings and CLI flags; Fault.provider
    title: ClassVar[str]  # for humans, e.g. in --help
    prefix: ClassVar[str]  # URL path prefix, e.g. "/<name>/v1"
    sizes_type: ClassVar[type[Any]]  # frozen dataclass: record counts
    options_type: ClassVar[type[FakeOptions]]
    unprefixed: ClassVar[frozenset[str]] = frozenset()  # fields set without the name prefix

    def __init__(self, seed: int, sizes: SizesT, options: OptionsT) -> None:
        self.seed = seed
        self.sizes = sizes
        self.options = options
        self._lock = threading.Lock()
        self._tenants: dict[str, TenantT] = {}

    # --- tenants --------------------------------------------------------------------
    def tenant(self, name: str) -> TenantT:
        """The dataset of tenant ``name`` (created on first use)."""
        tenant = self._tenants.get(name)
        if tenant is None:
            with self._lock:
                tenant = self._tenants.get(name)
                if tenant is None:
                    tenant = self._tenants[name] = self.new_tenant(name)
        return tenant

    def tenants(self) -> list[TenantT]:
        with self._lock:
            return list(self._tenants.values())

    @abstractmethod
    def new_tenant(self, name: str) -> TenantT:
        """Create the dataset of one tenant."""

    # --- HTTP -----------------------------------------------------------------------
    @abstractmethod
    def identify(self, req: ApiRequest) -> tuple[str | None, tuple[str, ...]]:
        """(tenant name for the request log, every identity a fault's ``tenant`` matches).

        From the request's headers or its path (an API may name the tenant in either);
        called before :meth:`handle`, for every request. The log name must never be a
        secret (such as a connector token).
        """

    @abstractmethod
    def handle(self, req: ApiRequest, fault_kind: str | None) -> Response:
        """Answer a GET below ``prefix`` (``req.path`` is relative to it)."""

    @abstractmethod
    def default_error(self, status: int, code: str | None = None) -> Response:
        """The error a ``status`` fault without a body answers, in the provider's shape."""

    def bad_envelope(self) -> Response:
        """The 200 a ``bad_envelope`` fault answers: JSON that is not this API's envelope.

        The default is an object no provider answers; an API whose lists are not objects
        (a bare array) says what is not its envelope.
        """
        return json_response(200, {"unexpected": True})

    # --- admin ----------------------------------------------------------------------
    @abstractmethod
    def records(self, tenant: str, model: str) -> list[Record]:
        """Deep copies of a model's stored records, as the API would serve them."""

    @abstractmethod
    def mutate(self, tenant: str, model: str, change: int, delete: int) -> dict[str, list[str]]:
        """Change and/or delete records (chosen deterministically); returns their ids."""

    @abstractmethod
    def set_fields(self, tenant: str, model: str, ids: Sequence[str], fields: Record) -> None:
        """Give records (by id) new field values, as a change made now."""

    def options_changed(self, fields: set[str]) -> None:
        """Called after ``fields`` of ``self.options`` were set at runtime."""

    # --- the client's side: how the tap (tests, demo, benchmark) reads this fake ----------
    #: Tenant names that exist without any setting (the first: the README's example).
    default_tenants: ClassVar[tuple[str, ...]]

    @classmethod
    @abstractmethod
    def tenant_settings(cls, names: Sequence[str]) -> dict[str, Any]:
        """``Sandbox(...)`` settings under which the tenants called ``names`` exist."""

    @classmethod
    @abstractmethod
    def tap_config(cls, url: str, names: Sequence[str]) -> dict[str, Any]:
        """The tap's settings reading the tenants ``names`` of this fake served at ``url``.

        One name: the single-tenant settings; several: ``integrations``. ``url`` is the
        fake's base URL (``Sandbox.url_of``).
        """

    @classmethod
    def tenant_secrets(cls, names: Sequence[str]) -> list[str]:  # noqa: ARG003 (none here)
        """Secrets in ``tap_config(url, names)`` besides the API key (none by default)."""
        return []

    # --- command line ------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        """Add the fake's ``--<name>-...`` flags to the CLI."""

    @classmethod
    @abstractmethod
    def settings_from(cls, args: argparse.Namespace) -> dict[str, Any]:
        """The ``Sandbox(...)`` keyword arguments the parsed flags ask for."""

    # --- settings naming ---------------------------------------------------------------
    @classmethod
    def setting_name(cls, field: str) -> str:
        """The outside name of a sizes/options field: ``<name>_<field>`` as a rule."""
        return field if field in cls.unprefixed else f"{cls.name}_{field}"

    @classmethod
    def size_fields(cls) -> dict[str, str]:
        """Outside name -> field of ``sizes_type``."""
        return {cls.setting_name(f.name): f.name for f in dataclasses.fields(cls.sizes_type)}

    @classmethod
    def option_fields(cls) -> dict[str, str]:
        """Outside name -> field of ``options_type``."""
        return {cls.setting_name(f.name): f.name for f in dataclasses.fields(cls.options_type)}

    @classmethod
    def option_minimums(cls) -> dict[str, float]:
        """Field -> smallest value of a number option (``metadata={"minimum": ...}``; 0)."""
        return {f.name: f.metadata.get("minimum", 0) for f in dataclasses.fields(cls.options_type)}

    @classmethod
    def option_types(cls) -> dict[str, Any]:
        """Field -> resolved type of ``options_type`` (drives validation of new values)."""
        return typing.get_type_hints(cls.options_type)
