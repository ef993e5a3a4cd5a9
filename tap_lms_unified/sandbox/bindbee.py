"""The Bindbee fake: ``GET {sandbox}/bindbee/api/lms/v1/...`` with deterministic data.

One module holds all of it: the data of each connector (users, enrollments,
completions, courses, contents, skills, categories), the API handler (auth, rate
budget, validation, keyset cursors, error shape), the sizes and options, and the CLI
flags.  :mod:`.providers` registers :class:`BindbeeFake`.

Ids are UUIDv7-shaped with the record index as timestamp offset, so records sort by id
in index order (Bindbee's cursor is keyset-like: base64 of the last id).  Nothing is
stored per record unless it was mutated (``overrides``) or deleted (``deleted``:
Bindbee has no tombstones, a deleted record simply disappears).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import copy
import dataclasses
import random
import threading
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

from tap_lms_unified.providers import bindbee as tap_bindbee  # the tap's streams (model list)
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
    derive_seed,
    iso_duration,
    iso_s,
    mix64,
    now_ms,
    salt_bytes,
    tenant_slug,
    uuid7_id,
    uuid7_index,
)
from tap_lms_unified.sandbox.fake import (
    SANDBOX_API_KEY,
    FakeOptions,
    ProviderFake,
    Record,
    served_models,
)
from tap_lms_unified.sandbox.limiter import FixedWindowLimiter, RateState
from tap_lms_unified.sandbox.wire import ApiRequest, Response, json_response

DEFAULT_TOKENS: Mapping[str, str] = {"sandbox-connector-acme": "acme"}


@dataclass(frozen=True)
class BindbeeSizes:
    """Record counts per connector; ``None`` derives the count from the others."""

    users: int = 40
    courses: int = 10
    contents: int | None = None  # default: 3 per course
    skills: int = 8
    categories: int = 5
    enrollments: int | None = None  # default: 2 per user
    completions: int | None = None  # default: half of the enrollments

    def resolved(self) -> dict[str, int]:
        enrollments = self.users * 2 if self.enrollments is None else self.enrollments
        return {
            "users": self.users,
            "courses": self.courses,
            "contents": self.courses * 3 if self.contents is None else self.contents,
            "skills": self.skills,
            "categories": self.categories,
            "enrollments": enrollments,
            "completions": enrollments // 2 if self.completions is None else self.completions,
        }


@dataclass
class BindbeeOptions(FakeOptions):
    """Runtime options; the budget counts requests per ``budget_window_s`` fixed window."""

    tokens: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_TOKENS))  # -> name
    non_lms_connectors: tuple[str, ...] = ()  # connector names answered with 403
    budget_per_minute: int | None = 200
    budget_window_s: float = 60.0
    empty_page_every: int = 0  # insert an empty page (with a cursor) every n pages
    #: The largest page_size accepted (the spec says 200, older docs said 100).
    max_page_size: int = field(default=200, metadata={"minimum": 1})

    def public(self) -> dict[str, Any]:
        """With the connector tokens replaced by their names."""
        out = dataclasses.asdict(self)
        out["tokens"] = sorted(self.tokens.values())
        return out


class BindbeeSettings(TypedDict, total=False):
    """``Sandbox(...)`` keyword arguments of this fake (sizes and options, see fake.py)."""

    bindbee_users: int
    bindbee_courses: int
    bindbee_contents: int | None
    bindbee_skills: int
    bindbee_categories: int
    bindbee_enrollments: int | None
    bindbee_completions: int | None
    bindbee_tokens: Mapping[str, str]
    bindbee_non_lms_connectors: tuple[str, ...] | list[str]
    bindbee_budget_per_minute: int | None
    bindbee_budget_window_s: float
    bindbee_empty_page_every: int
    bindbee_max_page_size: int


# --- data ------------------------------------------------------------------------------
#: The models served: those the tap's Bindbee streams read.
#: (getattr: for mypy, the SDK's ``name`` is an instance attribute.)
BINDBEE_MODELS: tuple[str, ...] = tuple(str(getattr(s, "name")) for s in tap_bindbee.STREAMS)  # noqa: B009
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
        return uuid7_id(self.salt, self.base_ms, i)

    def index_of(self, uid: str) -> int | None:
        i = uuid7_index(self.base_ms, uid.lower())
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
        self.models: dict[str, BindbeeModel] = served_models(
            BINDBEE_MODELS,
            self.users,
            self.enrollments,
            self.completions,
            self.courses,
            self.contents,
            self.skills,
            self.categories,
        )

    def model(self, name: str) -> BindbeeModel:
        if name not in self.models:
            raise KeyError(f"unknown Bindbee model {name!r}; expected one of {BINDBEE_MODELS}")
        return self.models[name]


# --- API -------------------------------------------------------------------------------
API_PATH = "/api/lms/v1/"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = BindbeeOptions.max_page_size
_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})
_DETAILS = {
    400: "Bad request",
    401: "Invalid authentication credentials",
    403: "Forbidden",
    404: "Not found",
    409: "Conflict",
    429: "Rate limit exceeded",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Gateway timeout",
}


def detail(status: int, text: str, headers: dict[str, str] | None = None) -> Response:
    return json_response(status, {"detail": text}, headers)


def default_error(status: int) -> Response:
    """The error a Bindbee fault of kind ``status`` answers when no body is given."""
    headers = {}
    if status == 429:
        headers = {"Retry-After": "1", "X-RateLimit-Limit": "200", "X-RateLimit-Remaining": "0"}
    elif status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    return detail(status, _DETAILS.get(status, f"HTTP {status}"), headers)


@dataclass(frozen=True)
class Cursor:
    """Position after record index ``after``; ``pages``/``empty`` drive empty-page insertion."""

    after: int = -1
    pages: int = 0
    empty: bool = False


class BindbeeFake(ProviderFake[BindbeeSizes, BindbeeOptions, BindbeeTenant]):
    """Bindbee's LMS API: one dataset per connector, keyed by the connector's NAME.

    Requests authenticate with ``x-connector-token``; the token maps to the name
    (``options.tokens``), and only the name is ever logged or shown.
    """

    name = "bindbee"
    title = "Bindbee"
    prefix = "/bindbee"
    sizes_type = BindbeeSizes
    options_type = BindbeeOptions

    def __init__(self, seed: int, sizes: BindbeeSizes, options: BindbeeOptions) -> None:
        super().__init__(seed, sizes, options)
        self.limiter = FixedWindowLimiter(options.budget_per_minute, options.budget_window_s)

    def new_tenant(self, name: str) -> BindbeeTenant:
        return BindbeeTenant(self.seed, name, **self.sizes.resolved())

    def options_changed(self, fields: set[str]) -> None:
        o = self.options
        if {"budget_per_minute", "budget_window_s"} & fields:
            self.limiter.configure(o.budget_per_minute, o.budget_window_s)

    def connector_name(self, headers: Mapping[str, str]) -> str | None:
        token = headers.get("x-connector-token")
        return None if token is None else self.options.tokens.get(token)

    def _named(self, tenant: str) -> BindbeeTenant:
        """The dataset of a connector given by token or by name."""
        return self.tenant(self.options.tokens.get(tenant, tenant))

    def records(self, tenant: str, model: str) -> list[Record]:
        """Live records, with ``raw_data`` and ``custom_fields`` filled in."""
        return self._named(tenant).model(model).all_records()

    def mutate(self, tenant: str, model: str, change: int, delete: int) -> dict[str, list[str]]:
        return self._named(tenant).model(model).mutate(change, delete)

    def set_fields(self, tenant: str, model: str, ids: Sequence[str], fields: Record) -> None:
        self._named(tenant).model(model).set_fields(ids, fields)

    def default_error(self, status: int, code: str | None = None) -> Response:
        return default_error(status)

    default_tenants = tuple(DEFAULT_TOKENS.values())

    @classmethod
    def token_of(cls, name: str) -> str:
        """The connector token of a tenant named ``name`` (see ``tenant_settings``)."""
        defaults = {n: token for token, n in DEFAULT_TOKENS.items()}
        return defaults.get(name) or f"sandbox-connector-{name}"

    @classmethod
    def tenant_settings(cls, names: Sequence[str]) -> dict[str, Any]:
        return {"bindbee_tokens": {cls.token_of(name): name for name in names}}

    @classmethod
    def tap_config(cls, url: str, names: Sequence[str]) -> dict[str, Any]:
        config: dict[str, Any] = {"provider": "bindbee", "api_key": SANDBOX_API_KEY, "api_url": url}
        if len(names) == 1:
            config.update(connector_token=cls.token_of(names[0]), connector_name=names[0])
        else:
            config["integrations"] = [
                {"connector_token": cls.token_of(name), "name": name} for name in names
            ]
        return config

    @classmethod
    def tenant_secrets(cls, names: Sequence[str]) -> list[str]:
        return [cls.token_of(name) for name in names]

    def identify(self, req: ApiRequest) -> tuple[str | None, tuple[str, ...]]:
        name = self.connector_name(req.headers)
        token = req.headers.get("x-connector-token")
        return name, tuple(x for x in (name, token) if x)

    def handle(self, req: ApiRequest, fault_kind: str | None) -> Response:
        if req.headers.get("authorization") != f"Bearer {SANDBOX_API_KEY}":
            return detail(401, "Invalid or missing API key", {"WWW-Authenticate": "Bearer"})
        token = req.headers.get("x-connector-token")
        if not token:
            return detail(401, "Missing x-connector-token header")
        name = self.options.tokens.get(token)
        if name is None:
            return detail(401, "Invalid connector token")
        if name in self.options.non_lms_connectors:
            return detail(403, "This connector token does not belong to the LMS category")
        rate = self.limiter.hit(name)
        headers = _rate_headers(rate)
        if not rate.allowed:
            headers["Retry-After"] = str(rate.reset_in())
            return detail(429, "Rate limit exceeded", headers)
        parts = req.path.removeprefix(API_PATH).split("/") if req.path.startswith(API_PATH) else []
        if not parts or parts[0] not in BINDBEE_MODELS or len(parts) > 2:
            return detail(404, "Not Found", headers)
        model = self.tenant(name).model(parts[0])
        errors, flags = _validate(req.params, self.options.max_page_size)
        if errors:
            return json_response(422, {"detail": errors}, headers)
        raw, custom, page_size = flags
        if len(parts) == 2:
            idx = model.index_of(parts[1])
            if idx is None or idx in model.deleted:
                return detail(404, f"{parts[0][:-1].capitalize()} not found", headers)
            return json_response(200, model.render(idx, raw, custom), headers)
        try:
            cursor = _decode(req.params.get("cursor"), model)
        except ValueError:
            return detail(400, "Invalid cursor", headers)
        body = self._list(
            model,
            params=req.params,
            cursor=cursor,
            page_size=page_size,
            flags=(raw, custom),
            fault_kind=fault_kind,
        )
        return json_response(200, body, headers)

    def _list(
        self,
        model: BindbeeModel,
        *,
        params: dict[str, str],
        cursor: Cursor,
        page_size: int,
        flags: tuple[bool, bool],
        fault_kind: str | None,
    ) -> dict[str, Any]:
        every = self.options.empty_page_every
        sent = params.get("cursor")
        insert_empty = every > 0 and cursor.pages > 0 and cursor.pages % every == 0
        if fault_kind == "empty_page" or (insert_empty and not cursor.empty):
            same = Cursor(cursor.after, cursor.pages, empty=True)
            return _envelope(_encode(same, model), [])
        ids = params.get("ids")
        if ids is None:
            chunk, more = model.page_after(cursor.after, page_size)
        else:
            wanted = {model.index_of(p.strip()) for p in ids.split(",")}
            selection = sorted(i for i in wanted if i is not None and i not in model.deleted)
            pos = bisect_right(selection, cursor.after)
            chunk, more = selection[pos : pos + page_size], pos + page_size < len(selection)
        items = [model.render(i, *flags) for i in chunk]
        nxt = _encode(Cursor(chunk[-1], cursor.pages + 1), model) if more and chunk else None
        if fault_kind == "repeat_cursor":
            nxt = sent or _encode(cursor, model)
        return _envelope(nxt, items)

    # --- command line ------------------------------------------------------------------
    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        group.add_argument("--bindbee-users", type=int, default=BindbeeSizes.users)
        group.add_argument("--bindbee-courses", type=int, default=BindbeeSizes.courses)
        group.add_argument("--bindbee-enrollments", type=int, default=None)
        group.add_argument("--bindbee-completions", type=int, default=None)
        group.add_argument(
            "--bindbee-token",
            action="append",
            metavar="TOKEN=NAME",
            help="accepted x-connector-token and its connector name (repeatable; "
            f"default {next(iter(DEFAULT_TOKENS))}=acme)",
        )
        group.add_argument(
            "--bindbee-budget-per-minute", type=int, default=BindbeeOptions.budget_per_minute
        )
        group.add_argument(
            "--bindbee-budget-window-s",
            type=float,
            default=BindbeeOptions.budget_window_s,
            help="length of a budget window in seconds (default 60): a benchmark of "
            "budget use can take a few short windows instead of minutes",
        )
        group.add_argument("--bindbee-empty-page-every", type=int, default=0)

    @classmethod
    def settings_from(cls, args: argparse.Namespace) -> dict[str, Any]:
        return {
            "bindbee_users": args.bindbee_users,
            "bindbee_courses": args.bindbee_courses,
            "bindbee_enrollments": args.bindbee_enrollments,
            "bindbee_completions": args.bindbee_completions,
            "bindbee_tokens": _tokens(args.bindbee_token),
            "bindbee_budget_per_minute": args.bindbee_budget_per_minute,
            "bindbee_budget_window_s": args.bindbee_budget_window_s,
            "bindbee_empty_page_every": args.bindbee_empty_page_every,
        }


def _tokens(values: list[str] | None) -> dict[str, str]:
    if not values:
        return dict(DEFAULT_TOKENS)
    out = {}
    for value in values:
        token, sep, name = value.partition("=")
        if not sep or not token or not name:
            raise SystemExit(f"--bindbee-token expects TOKEN=NAME, got {value!r}")
        out[token] = name
    return out


def _envelope(cursor: str | None, items: list[Any]) -> dict[str, Any]:
    return {"cursor": cursor, "page_size": len(items), "items": items}


def _rate_headers(rate: RateState) -> dict[str, str]:
    if rate.limit is None:
        return {}
    return {
        "X-RateLimit-Limit": str(rate.limit),
        "X-RateLimit-Remaining": str(rate.remaining),
        "X-RateLimit-Reset": str(int(rate.reset_at + 0.999)),
    }


def _validate(
    params: dict[str, str], max_page_size: int = MAX_PAGE_SIZE
) -> tuple[list[dict[str, Any]], tuple[bool, bool, int]]:
    """FastAPI-style validation of the common query parameters."""
    errors: list[dict[str, Any]] = []
    flags = []
    for name in ("include_raw_data", "include_custom_fields"):
        raw = params.get(name, "false")
        if raw.lower() in _TRUE:
            flags.append(True)
            continue
        flags.append(False)
        if raw.lower() not in _FALSE:
            errors.append(
                {
                    "type": "bool_parsing",
                    "loc": ["query", name],
                    "msg": "Input should be a valid boolean, unable to interpret input",
                    "input": raw,
                }
            )
    raw_size = params.get("page_size", str(DEFAULT_PAGE_SIZE))
    page_size = DEFAULT_PAGE_SIZE
    try:
        page_size = int(raw_size)
    except ValueError:
        errors.append(
            {
                "type": "int_parsing",
                "loc": ["query", "page_size"],
                "msg": "Input should be a valid integer, unable to parse string as an integer",
                "input": raw_size,
            }
        )
    else:
        if page_size > max_page_size:
            errors.append(
                {
                    "type": "less_than_equal",
                    "loc": ["query", "page_size"],
                    "msg": f"Input should be less than or equal to {max_page_size}",
                    "input": raw_size,
                    "ctx": {"le": max_page_size},
                }
            )
        elif page_size < 1:
            errors.append(
                {
                    "type": "greater_than_equal",
                    "loc": ["query", "page_size"],
                    "msg": "Input should be greater than or equal to 1",
                    "input": raw_size,
                    "ctx": {"ge": 1},
                }
            )
    return errors, (flags[0], flags[1], page_size)


def _encode(cursor: Cursor, model: BindbeeModel) -> str:
    last = model.id(cursor.after) if cursor.after >= 0 else ""
    raw = f"{last}|{cursor.pages}|{int(cursor.empty)}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode(raw: str | None, model: BindbeeModel) -> Cursor:
    """Raises ``ValueError`` for a malformed cursor."""
    if raw is None:
        return Cursor()
    try:
        text = base64.urlsafe_b64decode((raw + "=" * (-len(raw) % 4)).encode()).decode()
        last, pages, empty = text.split("|")
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ValueError("invalid cursor") from exc
    after = -1
    if last:
        # keyset: the position is the last id served, even if that record was deleted since
        idx = model.index_of(last)
        if idx is None:
            raise ValueError("invalid cursor")
        after = idx
    return Cursor(after, int(pages), empty == "1")
