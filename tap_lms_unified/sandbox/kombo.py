"""The Kombo fake: ``GET {sandbox}/kombo/v1/lms/...`` with deterministic data per tenant.

One module holds all of it: the data (users, course-progressions, courses, skills of
each integration id), the API handler (auth, rate budget, filters, cursors, error
shape), the sizes and options, and the CLI flags.  :mod:`.providers` registers
:class:`KomboFake`.

Records are never stored unless mutated: each model keeps compact per-index arrays
(timestamps, deletion flags) and rebuilds a record dict from ``(seed, tenant, model,
index)`` on demand.  Mutated records are kept whole in ``overrides``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import calendar
import copy
import hashlib
import json
import random
import re
import threading
import uuid
from array import array
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import compress
from typing import Any, TypedDict

from tap_lms_unified.providers import kombo as tap_kombo  # the tap's streams (model list)
from tap_lms_unified.sandbox.common import (
    COMMENTS,
    COURSE_TOPICS,
    DEPARTMENTS,
    FIRST_NAMES,
    INTEGRATION_FIELD_KINDS,
    LAST_NAMES,
    SKILL_NAMES,
    TS_2022,
    TS_2025,
    TS_2026,
    Draw,
    base58_id,
    derive_seed,
    integration_value,
    iso_ms,
    mix64,
    now_ms,
    salt_bytes,
    tenant_slug,
)
from tap_lms_unified.sandbox.fake import (
    SANDBOX_API_KEY,
    FakeOptions,
    PageCache,
    ProviderFake,
    Record,
    served_models,
)
from tap_lms_unified.sandbox.limiter import FixedWindowLimiter, RateState
from tap_lms_unified.sandbox.wire import ApiRequest, Response, encode_json, json_response

DEFAULT_TENANTS: tuple[str, ...] = ("sandbox:acme", "sandbox:globex")


@dataclass(frozen=True)
class KomboSizes:
    users: int = 50
    progress_per_user: int = 3  # course-progressions per user
    courses: int = 10
    skills: int = 8


@dataclass
class KomboOptions(FakeOptions):
    """Runtime options; the budget counts requests per ``budget_window_s`` fixed window."""

    legacy_users: bool = True  # users with nested progress[] (else the current shape)
    course_revisions: bool = True  # courses with their revisions[] (else an empty list)
    tenants: tuple[str, ...] = DEFAULT_TENANTS  # accepted X-Integration-Id values
    not_ready_tenants: tuple[str, ...] = ()  # answer 409 INTEGRATION.SETUP_SYNC_PENDING
    budget_per_minute: int | None = None
    budget_window_s: float = 60.0


class KomboSettings(TypedDict, total=False):
    """``Sandbox(...)`` keyword arguments of this fake (sizes and options, see fake.py)."""

    kombo_users: int
    progress_per_user: int
    kombo_courses: int
    kombo_skills: int
    kombo_legacy_users: bool
    kombo_course_revisions: bool
    kombo_tenants: tuple[str, ...] | list[str]
    kombo_not_ready_tenants: tuple[str, ...] | list[str]
    kombo_budget_per_minute: int | None
    kombo_budget_window_s: float


# --- data ------------------------------------------------------------------------------
#: The endpoints ``/lms/<model>`` served: those the tap's Kombo streams read.
#: (getattr: for mypy, the SDK's ``path`` is an instance attribute.)
KOMBO_MODELS: tuple[str, ...] = tuple(
    dict.fromkeys(str(getattr(s, "path")).removeprefix("/lms/") for s in tap_kombo.STREAMS)  # noqa: B009
)
LEGACY_USER_KEYS = (
    "id",
    "remote_id",
    "first_name",
    "last_name",
    "work_email",
    "status",
    "remote_created_at",
    "progress",
    "changed_at",
    "remote_data",
    "remote_deleted_at",
)
CURRENT_USER_KEYS = (
    "id",
    "remote_id",
    "first_name",
    "last_name",
    "work_email",
    "status",
    "remote_created_at",
    "remote_deleted_at",
    "changed_at",
    "remote_data",
    "custom_fields",
    "integration_fields",
)
_LEGACY_STATUS = {
    "ENROLLED": "ENROLLED",
    "IN_PROGRESS": "STARTED",
    "COMPLETED": "COMPLETED",
    "DROPPED": "STOPPED",
    None: "ENROLLED",
}
_USER_STATUS = (("ACTIVE", 0.8), ("INACTIVE", 0.97), (None, 1.0))
_PROGRESSION_STATUS = (
    ("COMPLETED", 0.4),
    ("IN_PROGRESS", 0.7),
    ("ENROLLED", 0.88),
    ("DROPPED", 0.96),
    (None, 1.0),
)
_PROVIDERS = ("Kombo Academy", "LinkedIn Learning", "Coursera for Business", "Udemy Business")
DELETED_SHARE = 0.05
SELECT_CACHE_SIZE = 32  # distinct filter combinations kept per model


def filter_key(
    include_deleted: bool,
    updated_after_us: int | None,
    ids: tuple[str, ...] | None,
    remote_ids: tuple[str, ...] | None,
) -> tuple[Any, ...]:
    return (include_deleted, updated_after_us, ids, remote_ids)


class KomboModel:
    """One model of one tenant: compact state + on-demand record building."""

    name = ""

    def __init__(self, tenant: KomboTenant, count: int) -> None:
        self.tenant = tenant
        self.count = max(0, count)
        self.seed = derive_seed(tenant.seed, tenant.name, "kombo", self.name)
        self.salt = salt_bytes(self.seed)
        self.draw_salt = salt_bytes(derive_seed(self.seed, "draws"))
        self.field_salt = salt_bytes(derive_seed(self.seed, "integration-fields"))
        self.lock = threading.RLock()
        self.version = 0
        self.overrides: dict[int, Record] = {}
        self._arrays: tuple[array[int], array[int], array[int]] | None = None
        self._cur_key: array[int] = array("q")
        self._alive = bytearray()
        self._select_cache: dict[tuple[Any, ...], Sequence[int]] = {}
        self._id_map: dict[str, int] | None = None
        self._remote_map: dict[str, int] | None = None
        self._mutate_rng = random.Random(self.seed ^ 0x5A5A)
        self._ids: list[str | None] = []

    # --- compact per-index state --------------------------------------------------
    def arrays(self) -> tuple[array[int], array[int], array[int]]:
        """Base (created_ms, changed_ms, deleted_ms) arrays, built once per model."""
        arrays = self._arrays
        if arrays is None:
            with self.lock:
                if self._arrays is None:
                    self._arrays = self._build_arrays()
                arrays = self._arrays
        return arrays

    def _build_arrays(self) -> tuple[array[int], array[int], array[int]]:
        rand = random.Random(self.seed).random
        span_created = TS_2025 - TS_2022
        created = array("q", bytes(8 * self.count))
        changed = array("q", bytes(8 * self.count))
        deleted = array("q", bytes(8 * self.count))
        for i in range(self.count):
            c = TS_2022 + int(rand() * span_created)
            ch = c + int(rand() * (TS_2026 - 1 - c))
            created[i] = c
            changed[i] = ch
            if rand() < DELETED_SHARE:
                deleted[i] = ch
        self._cur_key = array("q", changed)
        self._alive = bytearray(0 if d else 1 for d in deleted)
        return created, changed, deleted

    def draw(self, i: int) -> Draw:
        return Draw(self.draw_salt, i)

    # --- identity -----------------------------------------------------------------
    def id(self, i: int) -> str:
        """The Kombo id of record ``i`` (memoized: ids are referenced a lot)."""
        ids = self._ids
        if not ids:
            ids = self._ids = [None] * self.count
        rid = ids[i]
        if rid is None:
            rid = ids[i] = base58_id(self.salt, i)
        return rid

    def remote_id(self, i: int) -> str | None:
        return str(i + 1)

    def index_of(self, record_id: str) -> int | None:
        if self._id_map is None:
            with self.lock:
                if self._id_map is None:
                    self._id_map = {self.id(i): i for i in range(self.count)}
        return self._id_map.get(record_id)

    def index_of_remote(self, remote_id: str) -> int | None:
        if self._remote_map is None:
            with self.lock:
                if self._remote_map is None:
                    pairs = ((self.remote_id(i), i) for i in range(self.count))
                    self._remote_map = {rid: i for rid, i in pairs if rid is not None}
        return self._remote_map.get(remote_id)

    # --- records ------------------------------------------------------------------
    def build(self, i: int) -> Record:
        """The record's own fields as generated (before any mutation)."""
        raise NotImplementedError

    def own(self, i: int) -> Record:
        """The record's own fields: the stored override, else freshly built."""
        rec = self.overrides.get(i)
        return rec if rec is not None else self.build(i)

    def render(self, i: int) -> Record:
        """The record as served by the API (nested objects, shape projection)."""
        return self.own(i)

    def all_records(self) -> list[Record]:
        return [copy.deepcopy(self.render(i)) for i in range(self.count)]

    # --- selection (filters) --------------------------------------------------------
    def select(self, key: tuple[Any, ...]) -> Sequence[int]:
        """Indices (ascending) matching the filters; cached per (filters, data version)."""
        self.arrays()
        with self.lock:
            cache = self._select_cache
            cached = cache.get(key)
            if cached is None:
                cached = cache[key] = self._compute_select(*key)
                if len(cache) > SELECT_CACHE_SIZE:  # drop the oldest filter
                    del cache[next(iter(cache))]
            return cached

    def _compute_select(
        self,
        include_deleted: bool,
        updated_after_us: int | None,
        ids: tuple[str, ...] | None,
        remote_ids: tuple[str, ...] | None,
    ) -> Sequence[int]:
        candidates: Sequence[int]
        if ids is not None or remote_ids is not None:
            wanted: set[int] | None = None
            if ids is not None:
                wanted = {i for i in map(self.index_of, ids) if i is not None}
            if remote_ids is not None:
                by_remote = {i for i in map(self.index_of_remote, remote_ids) if i is not None}
                wanted = by_remote if wanted is None else wanted & by_remote
            candidates = sorted(wanted or ())
            if not include_deleted:
                alive = self._alive
                candidates = [i for i in candidates if alive[i]]
        elif include_deleted:
            candidates = range(self.count)
        else:
            candidates = list(compress(range(self.count), self._alive))
        if updated_after_us is not None:
            threshold = -(-updated_after_us // 1000)  # ms >= ceil(us / 1000)
            key = self._cur_key
            candidates = [i for i in candidates if key[i] >= threshold]
        return candidates

    @staticmethod
    def page(selection: Sequence[int], after: int, size: int) -> tuple[Sequence[int], bool]:
        """Up to ``size`` indices after index ``after``; and whether more follow."""
        pos = bisect_right(selection, after)
        chunk = selection[pos : pos + size]
        return chunk, pos + size < len(selection)

    # --- mutation -------------------------------------------------------------------
    def mutate(self, change: int, delete: int) -> dict[str, list[str]]:
        with self.lock:
            self.arrays()
            picked = self._pick_alive(change + delete)
            changed_idx, deleted_idx = picked[:change], picked[change:]
            for i in changed_idx:
                now = now_ms()
                rec = copy.deepcopy(self.own(i))
                self.materialize(i, rec)
                self.apply_change(rec, iso_ms(now), self._mutate_rng)
                self.overrides[i] = rec
                self._cur_key[i] = now
            for i in deleted_idx:
                now = now_ms()
                rec = copy.deepcopy(self.own(i))
                self.materialize(i, rec)
                rec["remote_deleted_at"] = iso_ms(now)
                rec["changed_at"] = iso_ms(now)
                self.overrides[i] = rec
                self._cur_key[i] = now
                self._alive[i] = 0
            self.version += 1
            self._select_cache.clear()
            self.after_mutation(changed_idx + deleted_idx)
        return {
            "changed": [self.id(i) for i in changed_idx],
            "deleted": [self.id(i) for i in deleted_idx],
        }

    def set_fields(self, ids: Sequence[str], fields: dict[str, Any]) -> None:
        """Give records (by id) new field values, as a change made now."""
        with self.lock:
            self.arrays()
            indices = []
            for record_id in ids:
                i = self.index_of(record_id)
                if i is None:
                    raise KeyError(f"{self.name}: no record {record_id!r}")
                indices.append(i)
                now = now_ms()
                rec = copy.deepcopy(self.own(i))
                self.materialize(i, rec)
                rec.update(copy.deepcopy(fields))
                rec["changed_at"] = iso_ms(now)
                self.overrides[i] = rec
                self._cur_key[i] = now
            self.version += 1
            self._select_cache.clear()
            self.after_mutation(indices)

    def _pick_alive(self, n: int) -> list[int]:
        alive = self._alive
        n_alive = sum(alive)
        n = min(n, n_alive)
        if n == 0:
            return []
        rng = self._mutate_rng
        if n * 4 > n_alive:
            return rng.sample(list(compress(range(self.count), alive)), n)
        picked: dict[int, None] = {}
        while len(picked) < n:
            i = rng.randrange(self.count)
            if alive[i]:
                picked[i] = None
        return list(picked)

    def apply_change(self, rec: Record, now: str, rng: random.Random) -> None:
        """Make a visible change to ``rec`` (a private copy) at time ``now``."""
        raise NotImplementedError

    def after_mutation(self, indices: list[int]) -> None:
        """Hook for caches that depend on this model's records."""

    def materialize(self, i: int, rec: Record) -> None:
        """Complete ``rec`` before it is stored as an override (see users)."""

    # --- shared field generators ------------------------------------------------------
    def extras(self, d: Draw, path: str, remote_id: str | None) -> Record:
        """``remote_data``, ``custom_fields`` and ``integration_fields`` of a record."""
        remote_data = None
        if d.chance(0.3):
            remote_data = {path: {"id": remote_id, "source": "sandbox", "version": d.below(9)}}
        custom_fields = None
        if d.chance(0.8):
            custom_fields = {
                "department": d.pick(DEPARTMENTS),
                "cost_center": 1000 + d.below(9000),
                "remote_worker": d.chance(0.4),
            }
        fields = []
        for n in d.sample(range(INTEGRATION_FIELD_KINDS), d.below(4)):
            key, kind, value, label = integration_value(d, n)
            field_id = base58_id(self.field_salt, (d.u32() << 32) | d.u32())
            fields.append(
                {"id": field_id, "key": key, "type": kind, "value": value, "label": label}
            )
        return {
            "remote_data": remote_data,
            "custom_fields": custom_fields,
            "integration_fields": fields,
        }


class KomboUsers(KomboModel):
    name = "users"

    def _names(self, i: int, d: Draw) -> tuple[str, str, str | None]:
        """(first, last, work_email): the first draws of a user's stream."""
        first, fslug = d.pick(FIRST_NAMES)
        last, lslug = d.pick(LAST_NAMES)
        email = None if d.chance(0.05) else f"{fslug}.{lslug}{i}@{self.tenant.domain}"
        return first, last, email

    def brief(self, i: int) -> Record:
        """The nested ``user`` object of a course progression."""
        rec = self.overrides.get(i)
        if rec is not None:
            first, last, email = rec["first_name"], rec["last_name"], rec["work_email"]
        else:
            first, last, email = self._names(i, self.draw(i))
        return {
            "id": self.id(i),
            "remote_id": self.remote_id(i),
            "first_name": first,
            "last_name": last,
            "work_email": email,
        }

    def build(self, i: int) -> Record:
        created, changed, deleted = self.arrays()
        d = self.draw(i)
        first, last, email = self._names(i, d)
        remote_id = self.remote_id(i)
        rec: Record = {
            "id": self.id(i),
            "remote_id": remote_id,
            "first_name": first,
            "last_name": last,
            "work_email": email,
            "status": d.weighted(_USER_STATUS),
            "remote_created_at": iso_ms(created[i]),
            "remote_deleted_at": iso_ms(deleted[i]) if deleted[i] else None,
            "changed_at": iso_ms(changed[i]),
            **self.extras(d, f"/users/{remote_id}", remote_id),
        }
        return rec

    def render(self, i: int) -> Record:
        """Legacy or current shape; ``progress`` is only stored on mutated users."""
        rec = self.own(i)
        if not self.tenant.legacy_users:
            return {k: rec[k] for k in CURRENT_USER_KEYS}
        progress = rec.get("progress")
        if progress is None:
            progress = self.tenant.progressions.legacy_items(i)
        out = {k: progress if k == "progress" else rec[k] for k in LEGACY_USER_KEYS}
        if out["status"] is None:  # the legacy model's status is not nullable
            out["status"] = "INACTIVE"
        return out

    def materialize(self, i: int, rec: Record) -> None:
        """A stored user keeps its legacy ``progress[]`` (so a change can touch it)."""
        if "progress" not in rec:
            rec["progress"] = self.tenant.progressions.legacy_items(i)

    def apply_change(self, rec: Record, now: str, rng: random.Random) -> None:
        rec["last_name"] = f"{rec['last_name']}-{rng.choice(LAST_NAMES)[0]}"
        rec["changed_at"] = now
        if rec["progress"]:
            item = rng.choice(rec["progress"])
            nxt = {"ENROLLED": "STARTED", "STARTED": "COMPLETED"}.get(item["status"])
            if nxt is not None:
                item["status"] = nxt
            if item["status"] == "COMPLETED" and item["completion_date"] is None:
                item["completion_date"] = now
                item["score"] = round(rng.uniform(50, 100), 1)
            item["duration"] = (item["duration"] or 0) + 30
            item["comments"] = "Progress updated."


class KomboProgressions(KomboModel):
    name = "course-progressions"

    def remote_id(self, i: int) -> str | None:
        return f"progress-{i + 1}"

    def refs(self, j: int) -> tuple[int, int, int]:
        """(user index, course index, revision index) of progression ``j``."""
        t = self.tenant
        h = mix64(self.seed ^ j)
        course = h % t.courses.count
        return j // t.progress_per_user, course, (h >> 32) % t.courses.n_revisions(course)

    def _core(self, j: int, d: Draw) -> tuple[str | None, str, str | None]:
        """(status, enrolled_at, completed_at): shared with the legacy progress items."""
        created, changed, _ = self.arrays()
        status = d.weighted(_PROGRESSION_STATUS)
        completed = None
        if status == "COMPLETED":
            completed = iso_ms(created[j] + int(d.random() * (changed[j] - created[j])))
        return status, iso_ms(created[j]), completed

    def build(self, j: int) -> Record:
        _, changed, deleted = self.arrays()
        user, course, rev = self.refs(j)
        d = self.draw(j)
        status, enrolled, completed = self._core(j, d)
        remote_data = None
        if d.chance(0.3):
            remote_data = {f"/enrollments/{j + 1}": {"state": status, "attempts": d.below(4)}}
        t = self.tenant
        return {
            "id": self.id(j),
            "remote_id": self.remote_id(j),
            "user_id": t.users.id(user),
            "course_revision_id": t.courses.revision_id(course, rev),
            "status": status,
            "enrolled_at": enrolled,
            "completed_at": completed,
            "changed_at": iso_ms(changed[j]),
            "remote_deleted_at": iso_ms(deleted[j]) if deleted[j] else None,
            "remote_data": remote_data,
        }

    def render(self, j: int) -> Record:
        rec = dict(self.own(j))
        user, course, rev = self.refs(j)
        rec["user"] = self.tenant.users.brief(user)
        rec["course_revision"] = self.tenant.courses.revision_brief(course, rev)
        return rec

    def legacy_items(self, user: int) -> list[Record]:
        """The legacy nested ``progress[]`` of a user (one item per progression)."""
        t = self.tenant
        items = []
        ppu = t.progress_per_user
        for j in range(user * ppu, min((user + 1) * ppu, self.count)):
            _, course, _ = self.refs(j)
            d = self.draw(j)
            status, enrolled, completed = self._core(j, d)
            legacy = _LEGACY_STATUS[status]
            score = None
            if legacy == "COMPLETED" or (legacy == "STARTED" and d.chance(0.3)):
                score = round(35 + 65 * d.random(), 1)
            items.append(
                {
                    "course_id": t.courses.id(course),
                    "progress_id": self.id(j),
                    "status": legacy,
                    "enrollment_date": enrolled,
                    "completion_date": completed,
                    "score": score,
                    "duration": 15 + d.below(585) if d.chance(0.9) else None,
                    "comments": d.pick(COMMENTS) if d.chance(0.3) else None,
                }
            )
        return items

    def apply_change(self, rec: Record, now: str, rng: random.Random) -> None:
        nxt = {"ENROLLED": "IN_PROGRESS", "IN_PROGRESS": "COMPLETED", None: "ENROLLED"}
        rec["status"] = nxt.get(rec["status"], "IN_PROGRESS")
        if rec["status"] == "COMPLETED":
            rec["completed_at"] = now
        rec["changed_at"] = now


class KomboCourses(KomboModel):
    name = "courses"

    def __init__(self, tenant: KomboTenant, count: int) -> None:
        super().__init__(tenant, count)
        self.rev_salt = salt_bytes(derive_seed(self.seed, "revisions"))
        self.provider_salt = salt_bytes(derive_seed(self.seed, "providers"))
        self._own_cache: dict[int, Record] = {}

    def render(self, i: int) -> Record:
        rec = self.own(i)
        return rec if self.tenant.course_revisions else {**rec, "revisions": []}

    def remote_id(self, i: int) -> str | None:
        return f"course-{i + 1}"

    def n_revisions(self, c: int) -> int:
        return 1 + mix64(self.seed ^ (c + 0x7F)) % 3

    def revision_id(self, c: int, rev: int) -> str:
        return base58_id(self.rev_salt, c * 3 + rev)

    def own(self, i: int) -> Record:
        """Courses are few and nested into every progression: cache their dicts."""
        rec = self._own_cache.get(i)
        if rec is None:
            rec = super().own(i)
            self._own_cache[i] = rec
        return rec

    def after_mutation(self, indices: list[int]) -> None:
        for i in indices:
            self._own_cache.pop(i, None)

    def revision_brief(self, c: int, rev: int) -> Record:
        course = self.own(c)
        revision = course["revisions"][rev]
        return {
            "id": revision["id"],
            "remote_id": revision["remote_id"],
            "title": revision["title"],
            "course": {"id": course["id"], "remote_id": course["remote_id"]},
        }

    def build(self, i: int) -> Record:
        created, changed, deleted = self.arrays()
        t = self.tenant
        d = self.draw(i)
        course_id = self.id(i)
        remote_id = self.remote_id(i)
        topic = COURSE_TOPICS[i % len(COURSE_TOPICS)]
        if i >= len(COURSE_TOPICS):
            topic = f"{topic} {i // len(COURSE_TOPICS) + 1}"
        provider = None
        if d.chance(0.9):
            p = d.below(len(_PROVIDERS))
            provider = {
                "id": base58_id(self.provider_salt, p),
                "remote_id": f"provider-{p + 1}",
                "name": _PROVIDERS[p],
            }
        n_rev = self.n_revisions(i)
        revisions = []
        for rev in range(n_rev):
            latest = rev == n_rev - 1
            rev_created = created[i] + (changed[i] - created[i]) * rev // n_rev
            rev_changed = rev_created + int(d.random() * (changed[i] - rev_created))
            skills = d.sample(range(t.skills.count), d.below(4))
            revisions.append(
                {
                    "id": self.revision_id(i, rev),
                    "remote_id": f"revision-{i + 1}-{rev + 1}",
                    "course_id": course_id,
                    "title": topic if latest else f"{topic} (v{rev + 1})",
                    "description": f"{topic}: module overview and assessment."
                    if d.chance(0.85)
                    else None,
                    "remote_url": f"https://learning.{t.domain}/courses/{i + 1}/v{rev + 1}",
                    "status": ("ACTIVE" if latest else "INACTIVE") if d.chance(0.95) else None,
                    "remote_created_at": iso_ms(rev_created),
                    "remote_deleted_at": None,
                    "changed_at": iso_ms(rev_changed),
                    **self.extras(d, f"/courses/{i + 1}/v/{rev + 1}", remote_id),
                    "skill_assignments": [{"skill": t.skills.brief(s)} for s in sorted(skills)],
                }
            )
        extras = self.extras(d, f"/courses/{i + 1}", remote_id)
        return {
            "id": course_id,
            "remote_id": remote_id,
            "provider_id": provider["id"] if provider else None,
            "origin_id": f"origin-{i + 1}" if d.chance(0.6) else None,
            "remote_created_at": iso_ms(created[i]),
            "remote_deleted_at": iso_ms(deleted[i]) if deleted[i] else None,
            "changed_at": iso_ms(changed[i]),
            "remote_data": extras["remote_data"],
            "custom_fields": extras["custom_fields"],
            "integration_fields": extras["integration_fields"],
            "provider": provider,
            "revisions": revisions,
        }

    def apply_change(self, rec: Record, now: str, rng: random.Random) -> None:
        """Kombo quirk: a revision changes, the course's own ``changed_at`` does not."""
        revision = rec["revisions"][-1]
        revision["title"] = f"{revision['title']} (updated)"
        revision["changed_at"] = now


class KomboSkills(KomboModel):
    name = "skills"

    def remote_id(self, i: int) -> str | None:
        return None if mix64(self.seed ^ i) % 10 == 0 else f"skill-{i + 1}"

    def _name(self, i: int) -> str:
        name = SKILL_NAMES[i % len(SKILL_NAMES)]
        return name if i < len(SKILL_NAMES) else f"{name} {i // len(SKILL_NAMES) + 1}"

    def brief(self, i: int) -> Record:
        rec = self.overrides.get(i)
        name = rec["name"] if rec is not None else self._name(i)
        return {"id": self.id(i), "remote_id": self.remote_id(i), "name": name}

    def build(self, i: int) -> Record:
        created, changed, deleted = self.arrays()
        remote_id = self.remote_id(i)
        return {
            "id": self.id(i),
            "remote_id": remote_id,
            "name": self._name(i),
            "remote_created_at": iso_ms(created[i]),
            "remote_deleted_at": iso_ms(deleted[i]) if deleted[i] else None,
            "changed_at": iso_ms(changed[i]),
            **self.extras(self.draw(i), f"/skills/{remote_id}", remote_id),
        }

    def apply_change(self, rec: Record, now: str, rng: random.Random) -> None:
        rec["name"] = f"{rec['name']} (updated)"
        rec["changed_at"] = now


class KomboTenant:
    """All Kombo models of one integration id."""

    def __init__(
        self,
        seed: int,
        name: str,
        *,
        users: int,
        progress_per_user: int,
        courses: int,
        skills: int,
        legacy_users: bool = True,
        course_revisions: bool = True,
    ) -> None:
        self.seed = seed
        self.name = name
        self.course_revisions = course_revisions
        self.domain = f"{tenant_slug(name)}.example.com"
        self.legacy_users = legacy_users
        self.progress_per_user = max(0, progress_per_user) if courses > 0 else 0
        self.users = KomboUsers(self, users)
        self.courses = KomboCourses(self, courses)
        self.skills = KomboSkills(self, skills)
        self.progressions = KomboProgressions(self, users * self.progress_per_user)
        self.models: dict[str, KomboModel] = served_models(
            KOMBO_MODELS, self.users, self.progressions, self.courses, self.skills
        )

    def model(self, name: str) -> KomboModel:
        key = name.replace("_", "-")
        if key not in self.models:
            raise KeyError(f"unknown Kombo model {name!r}; expected one of {KOMBO_MODELS}")
        return self.models[key]


# --- API -------------------------------------------------------------------------------
UPDATED_AFTER_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?)?Z?", re.ASCII
)
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 250
NOMINAL_LIMIT = 1000

_TITLES = {
    "PLATFORM.AUTHENTICATION_INVALID": "The provided API key is invalid.",
    "PLATFORM.INPUT_INVALID": "The input you provided is invalid.",
    "PLATFORM.INTEGRATION_NOT_FOUND": "The integration could not be found.",
    "PLATFORM.RATE_LIMIT_EXCEEDED": "You have exceeded the rate limit.",
    "PLATFORM.CONCURRENCY_LIMIT_EXCEEDED": "You have exceeded the concurrency limit.",
    "PLATFORM.UNKNOWN_ERROR": "An unknown error occurred.",
    "PLATFORM.TASK_TIMED_OUT": "The task timed out.",
    "INTEGRATION.SETUP_SYNC_PENDING": "The initial sync of this integration is still running.",
}
_DEFAULT_CODES = {
    400: "PLATFORM.INPUT_INVALID",
    401: "PLATFORM.AUTHENTICATION_INVALID",
    404: "PLATFORM.INTEGRATION_NOT_FOUND",
    409: "INTEGRATION.SETUP_SYNC_PENDING",
    429: "PLATFORM.RATE_LIMIT_EXCEEDED",
    504: "PLATFORM.TASK_TIMED_OUT",
}


class InputInvalid(Exception):
    """A query parameter was rejected (400 ``PLATFORM.INPUT_INVALID``)."""


def kombo_error(
    status: int,
    code: str | None,
    message: str,
    headers: dict[str, str] | None = None,
) -> Response:
    body = {
        "status": "error",
        "error": {
            "code": code,
            "title": _TITLES.get(code or ""),
            "message": message,
            "log_url": f"https://app.kombo.dev/logs?id={uuid.uuid4().hex[:24]}",
        },
    }
    return json_response(status, body, headers)


def default_error(status: int, code: str | None = None) -> Response:
    """The error a Kombo fault of kind ``status`` answers when no body is given."""
    code = code or _DEFAULT_CODES.get(status, "PLATFORM.UNKNOWN_ERROR")
    headers = {}
    if status == 429:
        headers = {"ratelimit-limit": str(NOMINAL_LIMIT), "ratelimit-remaining": "0"}
        headers["ratelimit-reset"] = "1"
    return kombo_error(status, code, f"Sandbox fault: HTTP {status}.", headers)


def parse_updated_after(value: str) -> int:
    """Microseconds since the epoch; raises :class:`InputInvalid` like Kombo does."""
    m = UPDATED_AFTER_RE.fullmatch(value)
    if m is None:
        raise InputInvalid(
            "updated_after must match ^\\d{4}-\\d{2}-\\d{2}(T\\d{2}:\\d{2}:\\d{2}(\\.\\d+)?)?Z?$ "
            f"(got {value!r})."
        )
    y, mo, d, h, mi, s, frac = m.groups()
    parts = (int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0))
    if not (1 <= parts[1] <= 12 and 1 <= parts[2] <= 31 and parts[3] < 24 and parts[4] < 60):
        raise InputInvalid(f"updated_after is not a valid date-time: {value!r}.")
    micros = int((frac or "0")[:6].ljust(6, "0"))
    return calendar.timegm((*parts, 0, 0, 0)) * 1_000_000 + micros


class KomboFake(ProviderFake[KomboSizes, KomboOptions, KomboTenant]):
    """Kombo's unified LMS API: one dataset per integration id (``X-Integration-Id``)."""

    name = "kombo"
    title = "Kombo"
    prefix = "/kombo/v1"
    sizes_type = KomboSizes
    options_type = KomboOptions
    unprefixed = frozenset({"progress_per_user"})  # Sandbox(progress_per_user=...)

    def __init__(self, seed: int, sizes: KomboSizes, options: KomboOptions) -> None:
        super().__init__(seed, sizes, options)
        self.limiter = FixedWindowLimiter(options.budget_per_minute, options.budget_window_s)
        self.pages = PageCache()  # rendered pages (see PageCache)

    def new_tenant(self, name: str) -> KomboTenant:
        s = self.sizes
        return KomboTenant(
            self.seed,
            name,
            users=s.users,
            progress_per_user=s.progress_per_user,
            courses=s.courses,
            skills=s.skills,
            legacy_users=self.options.legacy_users,
            course_revisions=self.options.course_revisions,
        )

    def options_changed(self, fields: set[str]) -> None:
        o = self.options
        if "legacy_users" in fields:
            for tenant in self.tenants():
                tenant.legacy_users = o.legacy_users
        if "course_revisions" in fields:
            for tenant in self.tenants():
                tenant.course_revisions = o.course_revisions
        if {"budget_per_minute", "budget_window_s"} & fields:
            self.limiter.configure(o.budget_per_minute, o.budget_window_s)

    def records(self, tenant: str, model: str) -> list[Record]:
        """Including soft-deleted records, in the current user shape setting."""
        return self.tenant(tenant).model(model).all_records()

    def mutate(self, tenant: str, model: str, change: int, delete: int) -> dict[str, list[str]]:
        return self.tenant(tenant).model(model).mutate(change, delete)

    def set_fields(self, tenant: str, model: str, ids: Sequence[str], fields: Record) -> None:
        self.tenant(tenant).model(model).set_fields(ids, fields)

    def default_error(self, status: int, code: str | None = None) -> Response:
        return default_error(status, code)

    default_tenants = DEFAULT_TENANTS

    @classmethod
    def tenant_settings(cls, names: Sequence[str]) -> dict[str, Any]:
        return {"kombo_tenants": tuple(names)}

    @classmethod
    def tap_config(cls, url: str, names: Sequence[str]) -> dict[str, Any]:
        config: dict[str, Any] = {"provider": "kombo", "api_key": SANDBOX_API_KEY, "api_url": url}
        if len(names) == 1:
            config["integration_id"] = names[0]
        else:
            config["integrations"] = [{"integration_id": name} for name in names]
        return config

    def identify(self, req: ApiRequest) -> tuple[str | None, tuple[str, ...]]:
        tenant = req.headers.get("x-integration-id")
        return tenant, (tenant,) if tenant else ()

    def handle(self, req: ApiRequest, fault_kind: str | None) -> Response:
        if req.headers.get("authorization") != f"Bearer {SANDBOX_API_KEY}":
            return kombo_error(
                401,
                "PLATFORM.AUTHENTICATION_INVALID",
                "The API key in the Authorization header is missing or invalid.",
                self._nominal_headers(),
            )
        tenant = req.headers.get("x-integration-id")
        if not tenant:
            return kombo_error(
                400,
                "PLATFORM.INPUT_INVALID",
                "The X-Integration-Id header is required.",
                self._nominal_headers(),
            )
        if tenant not in self.options.tenants:
            return kombo_error(
                404,
                "PLATFORM.INTEGRATION_NOT_FOUND",
                f"No integration with the ID {tenant!r} exists.",
                self._nominal_headers(),
            )
        rate = self.limiter.hit(tenant)
        headers = self._rate_headers(rate)
        if not rate.allowed:
            return kombo_error(
                429,
                "PLATFORM.RATE_LIMIT_EXCEEDED",
                f"Rate limit of {rate.limit} requests per window exceeded.",
                headers,
            )
        if tenant in self.options.not_ready_tenants:
            return kombo_error(
                409,
                "INTEGRATION.SETUP_SYNC_PENDING",
                "The integration's initial sync has not finished yet. Try again later.",
                headers,
            )
        model_name = req.path.removeprefix("/lms/")
        if not req.path.startswith("/lms/") or model_name not in KOMBO_MODELS:
            return kombo_error(404, None, f"Route GET {req.path} not found.", headers)
        try:
            body = self._list(tenant, model_name, req.params, fault_kind)
        except InputInvalid as exc:
            return kombo_error(400, "PLATFORM.INPUT_INVALID", str(exc), headers)
        return Response(200, body, headers)

    def _list(
        self, tenant_name: str, model_name: str, params: dict[str, str], fault_kind: str | None
    ) -> bytes:
        tenant = self.tenant(tenant_name)
        model = tenant.model(model_name)
        page_size = _page_size(params.get("page_size"))
        include_deleted = params.get("include_deleted", "false")
        if include_deleted not in ("true", "false"):
            raise InputInvalid("include_deleted must be 'true' or 'false'.")
        ua = params.get("updated_after")
        key = filter_key(
            include_deleted == "true",
            None if ua is None else parse_updated_after(ua),
            _csv(params.get("ids")),
            _csv(params.get("remote_ids")),
        )
        fingerprint = _fingerprint(tenant_name, model_name, key)
        sent = params.get("cursor")
        after = -1 if sent is None else _decode_cursor(sent, fingerprint)
        if fault_kind == "empty_page":
            return encode_json(_envelope(sent or _encode_cursor(after, fingerprint), []))
        # Everything the page depends on; versions only grow, so their sum changes on
        # every mutation of any model (users nest progress, progress nests courses).
        cache_key = (
            tenant_name,
            model_name,
            key,
            after,
            page_size,
            tenant.legacy_users,
            tenant.course_revisions,
            sum(m.version for m in tenant.models.values()),
        )
        cached = self.pages.get(cache_key) if fault_kind is None else None
        if cached is not None:
            return cached
        selection = model.select(key)
        chunk, more = model.page(selection, after, page_size)
        results = [model.render(i) for i in chunk]
        nxt = _encode_cursor(chunk[-1], fingerprint) if more and chunk else None
        if fault_kind == "repeat_cursor":
            nxt = sent or _encode_cursor(after, fingerprint)
        body = encode_json(_envelope(nxt, results))
        if fault_kind is None:
            self.pages.put(cache_key, body)
        return body

    def _rate_headers(self, rate: RateState) -> dict[str, str]:
        if rate.limit is None and rate.remaining is None:
            # No budget enforced: never announce one running out (clients would wait).
            return self._nominal_headers()
        limit = NOMINAL_LIMIT if rate.limit is None else rate.limit
        remaining = max(0, limit - rate.count) if rate.remaining is None else rate.remaining
        return {
            "ratelimit-limit": str(limit),
            "ratelimit-remaining": str(remaining),
            "ratelimit-reset": str(rate.reset_in()),
        }

    def _nominal_headers(self) -> dict[str, str]:
        limit = self.limiter.limit or NOMINAL_LIMIT
        return {
            "ratelimit-limit": str(limit),
            "ratelimit-remaining": str(limit),
            "ratelimit-reset": str(max(1, int(self.limiter.window_s))),
        }

    # --- command line ------------------------------------------------------------------
    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        group.add_argument("--kombo-users", type=int, default=KomboSizes.users)
        group.add_argument("--progress-per-user", type=int, default=KomboSizes.progress_per_user)
        group.add_argument("--kombo-courses", type=int, default=KomboSizes.courses)
        group.add_argument("--kombo-skills", type=int, default=KomboSizes.skills)
        group.add_argument("--kombo-shape", choices=("legacy", "current"), default="legacy")
        group.add_argument(
            "--kombo-tenant",
            action="append",
            metavar="INTEGRATION_ID",
            help=f"accepted X-Integration-Id (repeatable; default {list(DEFAULT_TENANTS)})",
        )
        group.add_argument("--kombo-budget-per-minute", type=int, default=None)
        group.add_argument(
            "--kombo-budget-window-s",
            type=float,
            default=KomboOptions.budget_window_s,
            help="length of a budget window in seconds (default 60)",
        )

    @classmethod
    def settings_from(cls, args: argparse.Namespace) -> dict[str, Any]:
        return {
            "kombo_users": args.kombo_users,
            "progress_per_user": args.progress_per_user,
            "kombo_courses": args.kombo_courses,
            "kombo_skills": args.kombo_skills,
            "kombo_legacy_users": args.kombo_shape == "legacy",
            "kombo_tenants": tuple(args.kombo_tenant or DEFAULT_TENANTS),
            "kombo_budget_per_minute": args.kombo_budget_per_minute,
            "kombo_budget_window_s": args.kombo_budget_window_s,
        }


def _envelope(nxt: str | None, results: list[Any]) -> dict[str, Any]:
    return {"status": "success", "data": {"next": nxt, "results": results}}


def _page_size(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE_SIZE
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise InputInvalid(f"page_size must be an integer between 1 and {MAX_PAGE_SIZE}.")
    return int(raw)


def _csv(raw: str | None) -> tuple[str, ...] | None:
    if raw is None:
        return None
    return tuple(sorted({p.strip() for p in raw.split(",") if p.strip()}))


def _fingerprint(tenant: str, model: str, key: tuple[Any, ...]) -> str:
    text = json.dumps([tenant, model, *key])
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def _encode_cursor(after: int, fingerprint: str) -> str:
    raw = json.dumps({"after": after, "filters": fingerprint}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, fingerprint: str) -> int:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        after, filters = data["after"], data["filters"]
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise InputInvalid("The cursor is invalid.") from exc
    if filters != fingerprint or not isinstance(after, int):
        raise InputInvalid(
            "The cursor was created with different filters; send the same filters with "
            "every page of a cursor."
        )
    return after
