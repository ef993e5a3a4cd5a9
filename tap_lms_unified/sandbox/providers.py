"""The registry of provider fakes: each one is a module of this package.

To add a provider's fake, write its module (see :mod:`.fake` for the contract and
:mod:`.kombo` or :mod:`.bindbee` for examples) and add it here: to ``PROVIDERS`` and to
the bases of ``Settings``.  The server, options, admin API and CLI iterate ``PROVIDERS``.
"""

from __future__ import annotations

import typing as t

from tap_lms_unified.sandbox import bindbee, kombo
from tap_lms_unified.sandbox.fake import ProviderFake

#: Every provider's fake, in the order of URL matching, CLI help and option listings.
PROVIDERS: tuple[type[ProviderFake[t.Any, t.Any, t.Any]], ...] = (
    kombo.KomboFake,
    bindbee.BindbeeFake,
)


class Settings(kombo.KomboSettings, bindbee.BindbeeSettings, total=False):
    """All providers' ``Sandbox(...)`` keyword arguments (for type checkers)."""


def names() -> tuple[str, ...]:
    return tuple(p.name for p in PROVIDERS)


def get(name: str) -> type[ProviderFake[t.Any, t.Any, t.Any]]:
    for provider in PROVIDERS:
        if provider.name == name:
            return provider
    raise ValueError(f"unknown provider {name!r}; expected one of {names()}")
