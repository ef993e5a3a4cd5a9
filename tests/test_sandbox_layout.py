"""The sandbox's layout: one module per provider's fake, provider-neutral shared modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from tap_lms_unified.sandbox import providers

SANDBOX = Path(providers.__file__).parent
# Modules allowed to name providers: the fakes themselves, the registry, the public facade.
NAMING = {*(f"{p.name}.py" for p in providers.PROVIDERS), "providers.py", "__init__.py"}
# Sample data shared by every fake (a course title), not a reference to a provider.
ALLOWED_TEXT = ("Building LMS integrations with Kombo",)


@pytest.mark.parametrize(
    "module", sorted(p.name for p in SANDBOX.glob("*.py") if p.name not in NAMING)
)
def test_shared_modules_name_no_provider(module: str) -> None:
    text = (SANDBOX / module).read_text()
    for allowed in ALLOWED_TEXT:
        text = text.replace(allowed, "")
    for provider in providers.PROVIDERS:
        assert provider.name not in text.lower(), f"{module} names {provider.name}"


def test_each_fake_is_its_own_module() -> None:
    for provider in providers.PROVIDERS:
        assert provider.__module__ == f"tap_lms_unified.sandbox.{provider.name}"
    assert len({p.name for p in providers.PROVIDERS}) == len(providers.PROVIDERS)
    prefixes = [p.prefix for p in providers.PROVIDERS]
    assert all(a == b or not a.startswith(b + "/") for a in prefixes for b in prefixes)


def test_settings_typeddict_matches_the_fakes() -> None:
    """``Sandbox(...)``'s typed keyword arguments are exactly the fakes' sizes and options."""
    declared = providers.Settings.__optional_keys__ | providers.Settings.__required_keys__
    fields = set()
    for provider in providers.PROVIDERS:
        fields |= set(provider.size_fields()) | set(provider.option_fields())
    assert declared == fields
