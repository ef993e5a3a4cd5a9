"""Allow ``python -m tap_lms_unified``."""

from tap_lms_unified.cli import main

main()
