"""Allow ``python -m tap_lms_unified.airbyte``."""

from tap_lms_unified.airbyte.cli import run

run()
