"""The registry of unified APIs: one module per provider, one line each here."""

from __future__ import annotations

from tap_lms_unified.provider import Provider
from tap_lms_unified.providers import bindbee, kombo

PROVIDERS: dict[str, Provider] = {p.name: p for p in (kombo.PROVIDER, bindbee.PROVIDER)}
