"""Deterministic Bindbee LMS data per connector.

Ids are UUIDv7-shaped with the record index as timestamp offset, so records sort by id
in index order (Bindbee's cursor is keyset-like: base64 of the last id).  Nothing is
stored per record unless it was mutated (``overrides``) or deleted (``deleted``:
Bindbee has no tombstones, a deleted record simply disappears).
"""

from __future__ import annotations

import copy
import random
import threading
from collections.abc import Callable, Sequence
from typing import Any

from tap_lms_unified.sandbox.common import (
    CATEGORY_NAMES,
    COURSE_TOPICS,
    DEPARTMENTS,
    FIRST_NAMES,
    LAST_NAMES,
    MIDDLE_NAMES,
    SKILL_NAMES,
    TS_2022,
    TS_2025,
    TS_2026,
    Draw,
    bindbee_index,
    bindbee_uuid,
    derive_seed,
    iso_duration,
    iso_s,
    mix64,
    now_ms,
    salt_bytes,
    tenant_slug,
)

Record = dict[str, Any]

BINDBEE_MODELS = (
    "users",
    "enrollments",
    "completions",
    "courses",
    "contents",
    "skills",
    "categories",
)
_STATUS = (
    ("ACTIVE", 0.8),
    ("INACTIVE", 0.9),
    ("PENDING", 0.95),
    ("ARCHIVED", 0.98),  # open enum: unknown source values pass through
    (None, 1.0),
)
_GRADES = (
    ("PASS", 0.45),
    ("FAIL", 0.55),
    ("A", 0.63),
    ("B", 0.71),
    ("C", 0.77),
    ("D", 0.8),
    ("F", 0.82),
    ("-", 0.86),
    ("B+", 0.9),  # unknown value
    ("INCOMPLETE", 0.93),  # unknown value
    (None, 1.0),
)
_LANGUAGES = ("en_US", "de_DE", "fr_FR", "es_ES", "ja_JP", "pt_BR", "en_GB", "pl_PL", "nl_NL")
_VENDORS = ("Coursera", "LinkedIn Learning", "Udemy", "Internal", "Go1")
# A sync-ish window for modified_at: the last months of 2025.
_MODIFIED_FROM = TS_2025 + 180 * 86_400_000


def loose_datetime(r: Draw, ms: int) -> str | None:
    """A date/time string in one of the formats seen in the wild (or null)."""
    x = r.random()
    base = iso_s(ms)  # 2025-08-01T10:00:00Z
    if x < 0.7:
        return base
    if x < 0.78:
        return base[:10]
    if x < 0.86:
        return f"{iso_s(ms + 7_200_000)[:-1]}+02:00"  # same instant, +02:00 offset
    if x < 0.91:
        return f"{base[:-1]}.{ms % 1000:03d}{r.below(1000):03d}Z"
    if x < 0.95:
        return base[:-1]  # naive, no offset
    return None


class BindbeeModel:
    """One model of one connector."""

    def __init__(
        self,
        tenant: BindbeeTenant,
        name: str,
        count: int,
        build: Callable[[BindbeeModel, int, Draw], Record],
        change: Callable[[Record, random.Random], None],
    ) -> None:
        self.tenant = tenant
        self.name = name
        self.count = max(0, count)
        self.seed = derive_seed(tenant.seed, tenant.name, "bindbee", name)
        self.salt = salt_bytes(self.seed)
        self.draw_salt = salt_bytes(derive_seed(self.seed, "draws"))
        self.base_ms = 1_696_000_000_000 + (self.seed % 86_400_000) * 100
        self.lock = threading.RLock()
        self.version = 0
        self.overrides: dict[int, Record] = {}
        self.deleted: set[int] = set()
        self._build = build
        self._change = change
        self._mutate_rng = random.Random(self.seed ^ 0x5A5A)

    def id(self, i: int) -> str:
        return bindbee_uuid(self.salt, self.base_ms, i)

    def index_of(self, uid: str) -> int | None:
        i = bindbee_index(self.base_ms, uid.lower())
        if i is None or not 0 <= i < self.count or self.id(i) != uid.lower():
            return None
        return i

    def ref(self, i: int | None) -> str | None:
        return None if i is None else self.id(i)

    def build(self, i: int) -> Record:
        return self._build(self, i, Draw(self.draw_salt, i))

    def own(self, i: int) -> Record:
        rec = self.overrides.get(i)
        return rec if rec is not None else self.build(i)

    def render(self, i: int, raw_data: bool, custom_fields: bool) -> Record:
        rec = self.own(i)
        if raw_data and custom_fields:
            return rec
        out = dict(rec)
        if not raw_data:
            out["raw_data"] = None
        if not custom_fields:
            out["custom_fields"] = None
        return out

    def all_records(self) -> list[Record]:
        return [copy.deepcopy(self.own(i)) for i in range(self.count) if i not in self.deleted]

    def page_after(self, after: int, size: int) -> tuple[list[int], bool]:
        """Up to ``size`` live indices after ``after`` and whether any live index follows."""
        out: list[int] = []
        deleted = self.deleted
        i = after + 1
        while i < self.count and len(out) < size:
            if i not in deleted:
                out.append(i)
            i += 1
        while i < self.count and i in deleted:
            i += 1
        return out, i < self.count

    def mutate(self, change: int, delete: int) -> dict[str, list[str]]:
        with self.lock:
            picked = self._pick_alive(change + delete)
            changed_idx, deleted_idx = picked[:change], picked[change:]
            for i in changed_idx:
                rec = copy.deepcopy(self.own(i))
                self._change(rec, self._mutate_rng)
                rec["modified_at"] = iso_s(now_ms())
                self.overrides[i] = rec
            for i in deleted_idx:
                self.overrides.pop(i, None)
                self.deleted.add(i)
            self.version += 1
        return {
            "changed": [self.id(i) for i in changed_idx],
            "deleted": [self.id(i) for i in deleted_idx],
        }

    def set_fields(self, ids: Sequence[str], fields: dict[str, Any]) -> None:
        """Give records (by id) new field values, as a change made now."""
        with self.lock:
            for record_id in ids:
                i = self.index_of(record_id)
                if i is None or i in self.deleted:
                    raise KeyError(f"{self.name}: no record {record_id!r}")
                rec = copy.deepcopy(self.own(i))
                rec.update(copy.deepcopy(fields))
                rec["modified_at"] = iso_s(now_ms())
                self.overrides[i] = rec
            self.version += 1

    def _pick_alive(self, n: int) -> list[int]:
        n_alive = self.count - len(self.deleted)
        n = min(n, n_alive)
        if n <= 0:
            return []
        rng = self._mutate_rng
        if n * 4 > n_alive:
            return rng.sample([i for i in range(self.count) if i not in self.deleted], n)
        picked: dict[int, None] = {}
        while len(picked) < n:
            i = rng.randrange(self.count)
            if i not in self.deleted:
                picked[i] = None
        return list(picked)


# --- record builders -------------------------------------------------------------------
def _head(m: BindbeeModel, i: int, r: Draw, remote: str | None) -> Record:
    """Keys common to every Bindbee model, in the spec's order."""
    modified = _MODIFIED_FROM + int(r.random() * (TS_2026 - 1 - _MODIFIED_FROM))
    custom = None
    if r.chance(0.85):
        custom = {
            "department": r.pick(DEPARTMENTS),
            "hire_date": f"{2015 + r.below(10)}-0{1 + r.below(9)}-15T00:00:00",
            "cost_center": 100 + r.below(900),
        }
    return {
        "id": m.id(i),
        "remote_id": remote if r.chance(0.98) else None,
        "modified_at": iso_s(modified),
        "raw_data": {
            "id": remote,
            "source": m.tenant.vendor,
            "object": m.name,
            "fetched": iso_s(modified - 3_600_000),
        },
        "custom_fields": custom,
    }


def _pick_ids(target: BindbeeModel, r: Draw, k_max: int) -> list[str]:
    """Up to ``k_max`` distinct real ids of ``target`` (sorted)."""
    if target.count == 0:
        return []
    k = r.below(k_max + 1)
    picked = {r.below(target.count) for _ in range(k)}
    return [target.id(x) for x in sorted(picked)]


def _languages(r: Draw) -> list[str] | None:
    if r.chance(0.1):
        return None
    return sorted(r.sample(_LANGUAGES, 1 + r.below(2)))


def _status(r: Draw) -> str | None:
    return r.weighted(_STATUS)


def build_user(m: BindbeeModel, i: int, r: Draw) -> Record:
    rec = _head(m, i, r, str(10_000 + i))
    first, fslug = r.pick(FIRST_NAMES)
    last, lslug = r.pick(LAST_NAMES)
    rec.update(
        first_name=first,
        last_name=last,
        middle_name=r.pick(MIDDLE_NAMES) if r.chance(0.2) else None,
        email_address=f"{fslug}.{lslug}{i}@{m.tenant.domain}" if r.chance(0.95) else None,
        phone_number=f"+1 415 555 {r.below(10_000):04d}" if r.chance(0.6) else None,
        status=_status(r),
    )
    return rec


def _course_contents(t: BindbeeTenant, c: int) -> range:
    """Contents of course ``c``: content k belongs to course ``k % n_courses`` (max 5)."""
    nc = t.courses.count
    return range(c, min(t.contents.count, c + nc * 5), nc) if nc else range(0)


def build_course(m: BindbeeModel, i: int, r: Draw) -> Record:
    t = m.tenant
    rec = _head(m, i, r, f"C-{i + 1}")
    topic = COURSE_TOPICS[i % len(COURSE_TOPICS)]
    if i >= len(COURSE_TOPICS):
        topic = f"{topic} {i // len(COURSE_TOPICS) + 1}"
    rec.update(
        name=topic,
        description=f"Course about {topic}." if r.chance(0.8) else None,
        cover_image=f"https://img.{t.domain}/courses/{i + 1}.png" if r.chance(0.7) else None,
        url=f"https://lms.{t.domain}/course/{i + 1}",
        duration=iso_duration(30 * (1 + r.below(16))) if r.chance(0.9) else None,
        languages=_languages(r),
        categories=_pick_ids(t.categories, r, 2),
        contents=[t.contents.id(k) for k in _course_contents(t, i)],
        skills=_pick_ids(t.skills, r, 3),
        instructors=_pick_ids(t.users, r, 2),
        status=_status(r),
    )
    return rec


def build_content(m: BindbeeModel, i: int, r: Draw) -> Record:
    t = m.tenant
    rec = _head(m, i, r, f"CT-{i + 1}")
    nc = t.courses.count
    rec.update(
        title=f"Lesson {i // nc + 1 if nc else i + 1}: {r.pick(SKILL_NAMES)}",
        description="Lesson material." if r.chance(0.7) else None,
        languages=_languages(r),
        cover_image=f"https://img.{t.domain}/contents/{i + 1}.png" if r.chance(0.5) else None,
        url=f"https://lms.{t.domain}/content/{i + 1}",
        duration=iso_duration(5 * (1 + r.below(24))) if r.chance(0.9) else None,
        categories=_pick_ids(t.categories, r, 1),
        skills=_pick_ids(t.skills, r, 2),
        courses=[t.courses.id(i % nc)] if nc else [],
        order=i // nc + 1 if nc else None,
        provider=r.pick(_VENDORS) if r.chance(0.9) else None,
        status=_status(r),
    )
    return rec


def _nth_name(names: tuple[str, ...], i: int) -> str:
    """The i-th of a list of names, numbered once the list runs out."""
    name = names[i % len(names)]
    return name if i < len(names) else f"{name} {i // len(names) + 1}"


def build_skill(m: BindbeeModel, i: int, r: Draw) -> Record:
    rec = _head(m, i, r, f"SK-{i + 1}")
    rec.update(name=_nth_name(SKILL_NAMES, i), status=_status(r))
    return rec


def build_category(m: BindbeeModel, i: int, r: Draw) -> Record:
    rec = _head(m, i, r, f"CAT-{i + 1}")
    name = _nth_name(CATEGORY_NAMES, i)
    rec.update(
        name=name,
        description=f"All {name} topics" if r.chance(0.7) else None,
        status=_status(r),
    )
    return rec


def _pair(t: BindbeeTenant, k: int) -> tuple[int | None, int | None]:
    """(user, course) of enrollment ``k``; completion ``k`` (k < #completions) shares it."""
    h = mix64(t.enrollments.seed ^ k)
    user = h % t.users.count if t.users.count else None
    course = (h >> 32) % t.courses.count if t.courses.count else None
    return user, course


def _start_ms(r: Draw) -> int:
    return TS_2022 + int(r.random() * (TS_2025 + 300 * 86_400_000 - TS_2022))


def build_enrollment(m: BindbeeModel, i: int, r: Draw) -> Record:
    t = m.tenant
    rec = _head(m, i, r, f"E-{i + 1}")
    user, course = _pair(t, i)
    rec.update(
        user=t.users.ref(user),
        course=t.courses.ref(course),
        start_date=loose_datetime(r, _start_ms(r)),
        completion=t.completions.id(i) if i < t.completions.count else None,
    )
    return rec


def build_completion(m: BindbeeModel, i: int, r: Draw) -> Record:
    t = m.tenant
    rec = _head(m, i, r, f"CP-{i + 1}")
    user, course = _pair(t, i)
    content = None
    if course is not None:
        contents = _course_contents(t, course)
        if len(contents):
            content = contents[r.below(len(contents))]
    started = _start_ms(r)
    minutes = 5 + r.below(300)
    done = r.chance(0.85)
    rec.update(
        user=t.users.ref(user),
        course=t.courses.ref(course),
        content=t.contents.ref(content),
        score=r.below(101) if r.chance(0.8) else None,
        grade=r.weighted(_GRADES),
        started_at=loose_datetime(r, started),
        completed_at=loose_datetime(r, started + minutes * 60_000) if done else None,
        time_duration=iso_duration(minutes, r.below(60) if r.chance(0.2) else 0)
        if r.chance(0.95)
        else None,
    )
    return rec


# --- visible changes for mutate() --------------------------------------------------------
def change_user(rec: Record, r: random.Random) -> None:
    rec["status"] = "INACTIVE" if rec["status"] == "ACTIVE" else "ACTIVE"
    rec["phone_number"] = f"+49 30 {r.randrange(1_000_000, 9_999_999)}"


def change_named(key: str) -> Callable[[Record, random.Random], None]:
    def change(rec: Record, _r: random.Random) -> None:
        rec[key] = f"{rec[key] or ''} (updated)".strip()

    return change


def change_enrollment(rec: Record, r: random.Random) -> None:
    rec["start_date"] = iso_s(now_ms() - r.randrange(1, 30) * 86_400_000)


def change_completion(rec: Record, r: random.Random) -> None:
    rec["score"] = r.randrange(101)
    rec["grade"] = "PASS" if rec["score"] >= 50 else "FAIL"


class BindbeeTenant:
    """All Bindbee models of one connector (keyed by the connector's NAME)."""

    def __init__(
        self,
        seed: int,
        name: str,
        *,
        users: int,
        courses: int,
        contents: int,
        skills: int,
        categories: int,
        enrollments: int,
        completions: int,
    ) -> None:
        self.seed = seed
        self.name = name
        self.domain = f"{tenant_slug(name)}.example.org"
        self.vendor = _VENDORS[derive_seed(seed, name) % len(_VENDORS)]
        self.users = BindbeeModel(self, "users", users, build_user, change_user)
        self.courses = BindbeeModel(self, "courses", courses, build_course, change_named("name"))
        self.contents = BindbeeModel(
            self, "contents", contents, build_content, change_named("title")
        )
        self.skills = BindbeeModel(self, "skills", skills, build_skill, change_named("name"))
        self.categories = BindbeeModel(
            self, "categories", categories, build_category, change_named("name")
        )
        self.enrollments = BindbeeModel(
            self, "enrollments", enrollments, build_enrollment, change_enrollment
        )
        self.completions = BindbeeModel(
            self, "completions", completions, build_completion, change_completion
        )
        self.models: dict[str, BindbeeModel] = {
            m.name: m
            for m in (
                self.users,
                self.enrollments,
                self.completions,
                self.courses,
                self.contents,
                self.skills,
                self.categories,
            )
        }

    def model(self, name: str) -> BindbeeModel:
        if name not in self.models:
            raise KeyError(f"unknown Bindbee model {name!r}; expected one of {BINDBEE_MODELS}")
        return self.models[name]
