"""Local HTTP sandbox imitating the Kombo and Bindbee unified LMS APIs.

Example::

    from tap_lms_unified.sandbox import Sandbox, SANDBOX_API_KEY

    with Sandbox(seed=7) as sb:
        print(sb.kombo_url, sb.bindbee_url)
"""

from tap_lms_unified.sandbox.faults import FAULT_KINDS, Fault
from tap_lms_unified.sandbox.options import (
    DEFAULT_BINDBEE_TOKENS,
    DEFAULT_KOMBO_TENANTS,
    SANDBOX_API_KEY,
    Options,
)
from tap_lms_unified.sandbox.server import Sandbox
from tap_lms_unified.sandbox.wire import RequestLog

__all__ = [
    "DEFAULT_BINDBEE_TOKENS",
    "DEFAULT_KOMBO_TENANTS",
    "FAULT_KINDS",
    "SANDBOX_API_KEY",
    "Fault",
    "Options",
    "RequestLog",
    "Sandbox",
]
