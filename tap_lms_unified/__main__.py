"""Allow ``python -m tap_lms_unified``."""

from tap_lms_unified.tap import TapLmsUnified

TapLmsUnified.cli()
