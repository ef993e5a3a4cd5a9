"""Settings: bad input fails before any request with a message naming the setting."""

from __future__ import annotations

import re

import pytest
from singer_sdk.exceptions import ConfigValidationError

from tap_lms_unified.tap import TapLmsUnified
from tests.conftest import ROOT, bindbee_config, kombo_config, run_cli, run_tap

SDK_SETTINGS = {
    "batch_config",
    "faker_config",
    "flattening_enabled",
    "flattening_max_depth",
    "flattening_max_key_length",
    "flattening_separator",
    "stream_map_config",
    "stream_maps",
}


@pytest.mark.parametrize(
    ("provider", "changes", "setting"),
    [
        ("kombo", {"provider": "moodle"}, "provider"),
        ("kombo", {"provider": None}, "provider"),
        ("kombo", {"api_key": None}, "api_key"),
        ("kombo", {"api_key": ""}, "api_key"),
        ("kombo", {"api_key": 12345}, "api_key"),
        ("kombo", {"integration_id": None}, "integration_id"),
        ("kombo", {"integration_id": "  "}, "integration_id"),
        ("kombo", {"page_size": 0}, "page_size"),
        ("kombo", {"page_size": 251}, "page_size"),
        ("kombo", {"page_size": "100"}, "page_size"),
        ("kombo", {"region": "asia"}, "region"),
        ("kombo", {"start_date": "yesterday"}, "start_date"),
        ("kombo", {"start_date": "2024-13-45T00:00:00Z"}, "start_date"),
        ("kombo", {"include_deleted": "yes"}, "include_deleted"),
        ("kombo", {"lookback_window_minutes": -1}, "lookback_window_minutes"),
        ("kombo", {"request_timeout": 0}, "request_timeout"),
        ("kombo", {"max_retries": -2}, "max_retries"),
        ("kombo", {"api_url": "ftp://example.com/v1"}, "api_url"),
        ("kombo", {"api_url": "http://api.example.com/v1"}, "api_url"),
        ("bindbee", {"connector_token": None}, "connector_token"),
        ("bindbee", {"page_size": 201}, "page_size"),
        ("bindbee", {"max_requests_per_minute": 0}, "max_requests_per_minute"),
        ("bindbee", {"include_raw_data": "true"}, "include_raw_data"),
    ],
)
def test_bad_settings_fail_before_any_request(sandbox, provider, changes, setting):
    base = kombo_config(sandbox) if provider == "kombo" else bindbee_config(sandbox)
    config = {k: v for k, v in {**base, **changes}.items() if v is not None}
    run = run_tap(config, expect_error=True)
    assert isinstance(run.error, ConfigValidationError)
    assert any(setting in error for error in run.error.errors), run.error.errors
    assert run.messages == []
    assert sandbox.requests == []


def test_loopback_http_is_allowed_and_other_provider_settings_warn(sandbox, caplog):
    config = kombo_config(sandbox, connector_token="not-used-token", include_raw_data=True)
    tap = TapLmsUnified(config=config)
    assert tap.run.base_url == sandbox.kombo_url
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("'connector_token'" in w and "ignored" in w for w in warnings)
    assert any("'include_raw_data'" in w for w in warnings)
    assert all("not-used-token" not in w for w in warnings)


def test_region_chooses_the_kombo_host():
    eu = TapLmsUnified(config={"provider": "kombo", "api_key": "k-123", "integration_id": "a:b"})
    us = TapLmsUnified(
        config={"provider": "kombo", "api_key": "k-123", "integration_id": "a:b", "region": "us"}
    )
    assert eu.run.base_url == "https://api.kombo.dev/v1"
    assert us.run.base_url == "https://api.us.kombo.dev/v1"
    bindbee = TapLmsUnified(config={"provider": "bindbee", "api_key": "k", "connector_token": "t"})
    assert bindbee.run.base_url == "https://api.bindbee.dev"
    assert bindbee.run.page_size == 100
    assert eu.run.page_size == 250


def test_cli_reports_the_setting_and_exits_non_zero(tmp_path):
    result = run_cli({"provider": "kombo", "api_key": "secret-key-123"}, tmp_path)
    assert result.returncode != 0
    assert "'integration_id' is required" in result.stderr
    assert "secret-key-123" not in result.text


def test_readme_settings_table_lists_every_setting():
    """Keeps the README's settings table in sync with the tap's config schema."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    table = set(re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.MULTILINE))
    declared = set(TapLmsUnified.config_jsonschema["properties"]) - SDK_SETTINGS
    assert table == declared
