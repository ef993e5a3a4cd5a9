"""Local HTTP sandbox imitating the Kombo and Bindbee unified LMS APIs.

One module per provider's fake (:mod:`.kombo`, :mod:`.bindbee`), registered in
:mod:`.providers`, behind a provider-neutral server (:mod:`.server`).  Example::

    from tap_lms_unified.sandbox import Sandbox, SANDBOX_API_KEY

    with Sandbox(seed=7) as sb:
        print(sb.kombo_url, sb.bindbee_url)
"""

from tap_lms_unified.sandbox.bindbee import DEFAULT_TOKENS as DEFAULT_BINDBEE_TOKENS
from tap_lms_unified.sandbox.fake import SANDBOX_API_KEY
from tap_lms_unified.sandbox.faults import FAULT_KINDS, Fault
from tap_lms_unified.sandbox.kombo import DEFAULT_TENANTS as DEFAULT_KOMBO_TENANTS
from tap_lms_unified.sandbox.options import Options
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
