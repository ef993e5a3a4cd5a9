"""Deterministic sandbox data: one lazily created dataset per tenant.

Each tenant's data derives from ``(seed, tenant)`` only, so two tenants have different
ids and the same seed always produces the same records.  Per-record generation lives in
:mod:`.kombo_data` and :mod:`.bindbee_data`; this module sizes and caches the tenants.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from tap_lms_unified.sandbox.bindbee_data import BINDBEE_MODELS, BindbeeModel, BindbeeTenant
from tap_lms_unified.sandbox.kombo_data import KOMBO_MODELS, KomboModel, KomboTenant

__all__ = [
    "BINDBEE_MODELS",
    "KOMBO_MODELS",
    "BindbeeModel",
    "BindbeeSizes",
    "BindbeeTenant",
    "DataStore",
    "KomboModel",
    "KomboSizes",
    "KomboTenant",
]


@dataclass(frozen=True)
class KomboSizes:
    users: int = 50
    progress_per_user: int = 3
    courses: int = 10
    skills: int = 8


@dataclass(frozen=True)
class BindbeeSizes:
    """Record counts per connector; ``None`` derives the count from the others."""

    users: int = 40
    courses: int = 10
    contents: int | None = None  # default: 3 per course
    skills: int = 8
    categories: int = 5
    enrollments: int | None = None  # default: 2 per user
    completions: int | None = None  # default: half of the enrollments

    def resolved(self) -> dict[str, int]:
        enrollments = self.users * 2 if self.enrollments is None else self.enrollments
        return {
            "users": self.users,
            "courses": self.courses,
            "contents": self.courses * 3 if self.contents is None else self.contents,
            "skills": self.skills,
            "categories": self.categories,
            "enrollments": enrollments,
            "completions": enrollments // 2 if self.completions is None else self.completions,
        }


class DataStore:
    """Holds the per-tenant datasets (created on first use)."""

    def __init__(
        self,
        seed: int,
        kombo: KomboSizes,
        bindbee: BindbeeSizes,
        kombo_legacy_users: bool = True,
    ) -> None:
        self.seed = seed
        self.kombo_sizes = kombo
        self.bindbee_sizes = bindbee
        self._legacy = kombo_legacy_users
        self._lock = threading.Lock()
        self._kombo: dict[str, KomboTenant] = {}
        self._bindbee: dict[str, BindbeeTenant] = {}

    @property
    def kombo_legacy_users(self) -> bool:
        return self._legacy

    @kombo_legacy_users.setter
    def kombo_legacy_users(self, value: bool) -> None:
        with self._lock:
            self._legacy = value
            for tenant in self._kombo.values():
                tenant.legacy_users = value

    def kombo(self, integration_id: str) -> KomboTenant:
        tenant = self._kombo.get(integration_id)
        if tenant is None:
            with self._lock:
                tenant = self._kombo.get(integration_id)
                if tenant is None:
                    s = self.kombo_sizes
                    tenant = KomboTenant(
                        self.seed,
                        integration_id,
                        users=s.users,
                        progress_per_user=s.progress_per_user,
                        courses=s.courses,
                        skills=s.skills,
                        legacy_users=self._legacy,
                    )
                    self._kombo[integration_id] = tenant
        return tenant

    def bindbee(self, connector_name: str) -> BindbeeTenant:
        tenant = self._bindbee.get(connector_name)
        if tenant is None:
            with self._lock:
                tenant = self._bindbee.get(connector_name)
                if tenant is None:
                    tenant = BindbeeTenant(
                        self.seed, connector_name, **self.bindbee_sizes.resolved()
                    )
                    self._bindbee[connector_name] = tenant
        return tenant
