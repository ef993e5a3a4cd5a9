"""The tap's typed errors, and which of them end one tenant's run rather than the whole run."""

from __future__ import annotations

import requests
from singer_sdk.exceptions import FatalAPIError, RetriableAPIError


class LmsAPIError(FatalAPIError):
    """An error the provider answered and retrying cannot fix."""


class AuthenticationError(LmsAPIError):
    """401/403: the API key or the tenant's credential was refused."""


class IntegrationNotReadyError(LmsAPIError):
    """The provider has not finished the integration's first sync (e.g. a 409)."""


class TLSError(LmsAPIError):
    """The API's TLS certificate could not be verified: retrying will not help."""


class RedirectRefusedError(LmsAPIError):
    """A redirect to another origin, or from https to http: credentials must not follow."""


class ResponseTooLargeError(LmsAPIError):
    """A response beyond `max_response_bytes`: retrying would fetch it again."""


class PaginationLoopError(LmsAPIError):
    """The API sent back a cursor it had already sent: paging would never end."""


class PageSizeRejectedError(LmsAPIError):
    """A 422 that names `page_size`: the API accepts smaller pages than requested."""


class UnsupportedModelError(LmsAPIError):
    """The tenant's integration does not offer this model (e.g. a 501): that stream is
    skipped for that tenant, and the run goes on."""


class FilterRefusedError(LmsAPIError):
    """The tenant's integration refused the incremental filter (its walk goes on in full)."""


class WalkEndedEarly(Exception):
    """An offset walk stopped before its end because the API ignores the offset or the
    limit: what it read is kept, the bookmark stays, and no version is activated."""


class BadDataError(LmsAPIError):
    """A page or record of one tenant that cannot be read or shaped: that tenant fails."""


class UnreadableRecord(ValueError):
    """A record that is not what the API documents (raised while reading or shaping it)."""


class InvalidRecordsError(LmsAPIError):
    """Records without a usable primary key were not emitted (`invalid_records: fail`)."""


class TenantsFailedError(LmsAPIError):
    """At least one tenant failed; the others finished and their state was kept."""


#: Transport failures retried like a 5xx: timeouts, resets, truncated bodies.
TRANSPORT_ERRORS = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
    ConnectionError,
)

#: Errors that end one tenant's run (the others go on): the provider refused or kept failing.
TENANT_ERRORS = (
    FatalAPIError,
    RetriableAPIError,
    requests.exceptions.RequestException,
    ConnectionError,
)


class Interrupted(SystemExit):
    """SIGTERM or SIGINT: the run stops after the message being written, with the final
    STATE, and exits with 128 + the signal number (143 for SIGTERM, 130 for Ctrl-C)."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum
