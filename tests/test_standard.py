"""The singer-sdk standard tap tests, for a Kombo and a Bindbee config, against the sandbox."""

from __future__ import annotations

import typing as t

import pytest
from singer_sdk.testing import SuiteConfig, get_tap_test_class

from tap_lms_unified.sandbox import Sandbox
from tap_lms_unified.tap import TapLmsUnified
from tests.conftest import bindbee_config, kombo_config

# The standard test classes take their config when they are built, so this module's
# sandbox starts at import (in well under a second) and stops when the module is done.
_SANDBOX = Sandbox(
    seed=11,
    kombo_users=30,
    progress_per_user=2,
    kombo_courses=6,
    kombo_skills=5,
    bindbee_users=20,
    bindbee_courses=6,
)
_SANDBOX.start()


@pytest.fixture(scope="module", autouse=True)
def _stop_sandbox() -> t.Iterator[None]:
    yield
    _SANDBOX.stop()


# No record limit: an unsorted incremental stream cut short is (rightly) not resumable.
_SUITE = SuiteConfig(max_records_limit=None)

TestKomboStandard = get_tap_test_class(
    TapLmsUnified, config=kombo_config(_SANDBOX), suite_config=_SUITE
)
TestBindbeeStandard = get_tap_test_class(
    TapLmsUnified, config=bindbee_config(_SANDBOX), suite_config=_SUITE
)
