"""Helpers shared by the Airbyte tests: what the sandbox holds, per Kombo stream."""

from __future__ import annotations

import typing as t
from collections import Counter

if t.TYPE_CHECKING:
    from tap_lms_unified.sandbox import Sandbox


def expected_kombo_counts(sandbox: Sandbox, tenants: t.Iterable[str]) -> Counter[str]:
    """Rows per Kombo stream the sandbox serves (deleted records included)."""
    counts: Counter[str] = Counter()
    for tenant in tenants:
        users = sandbox.records("kombo", tenant, "users")
        courses = sandbox.records("kombo", tenant, "courses")
        counts["users"] += len(users)
        counts["progress"] += sum(len(u.get("progress") or ()) for u in users)
        counts["course_progressions"] += len(
            sandbox.records("kombo", tenant, "course_progressions")
        )
        counts["courses"] += len(courses)
        counts["course_revisions"] += sum(len(c.get("revisions") or ()) for c in courses)
        counts["skills"] += len(sandbox.records("kombo", tenant, "skills"))
    return counts
