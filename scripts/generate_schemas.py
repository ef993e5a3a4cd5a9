"""Generate the tap's stream JSON Schemas from the vendors' OpenAPI specs.

Usage::

    python scripts/generate_schemas.py [--specs DIR] [--out DIR] [--check]

``--specs`` defaults to ``../shared/specs`` relative to the repository root and
``--out`` to ``tap_lms_unified/schemas``. One file is written per stream, to
``<out>/<provider>/<stream>.json`` (indent 2, sorted keys, trailing newline), so a
re-run on the same specs reproduces the committed files byte for byte. ``--check``
writes nothing and exits 1 when a committed file is missing, stale or extra.

The streams are the registry's (``tap_lms_unified.providers.PROVIDERS``): each stream
class gives its name, primary key, ``split_off`` fields (left out: a partner stream has
them) and, for Bindbee, ``relations``; the provider gives the tenant field every record
carries. This script only adds where in the specs each stream's records are
(``GENERATION``), the other fields the tap adds, and the exceptions below; a stream
without generation input, or input for no stream, is an error.

Mapping rules (the specs are the source of truth; the exceptions are listed
explicitly below and the script fails loudly when one of them no longer matches
the spec, so the lists cannot silently go stale):

* ``$ref`` is resolved; ``anyOf``/``oneOf`` with a ``null`` branch, ``type: [..,
  "null"]`` and ``nullable: true`` all mean "nullable".
* Every property is nullable (APIs omit or null things), at every depth, except the
  stream's primary key, which is ``{"type": ["string"]}``. Array items keep the
  spec's nullability.
* ``enum``, ``pattern``, ``minimum``, ``description``, ``examples`` ... are dropped:
  the APIs pass unknown enum values through, so ``status``/``grade`` are plain
  strings. Only the ``date-time`` (and ``date``) formats are kept.
* ``integer`` and ``number`` are kept as the spec says, except the integers that real
  systems send as fractions (``WIDENED_TO_NUMBER``: Bindbee's completion ``score``),
  which become ``number``.
* Objects without declared properties (``remote_data``, ``custom_fields``,
  ``raw_data``) are free-form: ``{"type": ["object", "null"],
  "additionalProperties": true}``. Objects with properties keep them, recursively.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tap_lms_unified.providers import PROVIDERS

JsonSchema = dict[str, Any]

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SPECS_DIR = REPO_ROOT.parent / "shared" / "specs"
DEFAULT_OUT_DIR = REPO_ROOT / "tap_lms_unified" / "schemas"

KOMBO_CURRENT = "kombo/kombo-openapi.2026-05-01.api-evangelist.json"
KOMBO_LEGACY = "kombo/kombo-openapi.2025-11-19.acaloiaro-0.0.1.json"
# Kombo envelope: {"status": "success", "data": {"next": ..., "results": [<record>]}}
KOMBO_RECORD = ("properties", "data", "properties", "results", "items")
# Bindbee envelope: {"cursor": ..., "page_size": ..., "items": [<record>]}
BINDBEE_RECORD = ("properties", "items", "items")

# JSON types in the order we emit them; "null" always last.
_TYPE_ORDER = ("string", "integer", "number", "boolean", "object", "array", "null")

# Kombo types `integration_fields[].value` as `{"type": "null"}`, but the API really
# sends any JSON value there (strings, numbers, booleans, objects, lists). The brief
# asked for the empty schema `{}`; singer-sdk 0.54's record conformance crashes on it
# when the value is a list (`is_array_type({})` raises EmptySchemaTypeError), so we
# list every JSON type instead: it accepts exactly what `{}` accepts, and the SDK
# passes the value through untouched.
ANY_JSON_VALUE: JsonSchema = {"type": ["array", "boolean", "null", "number", "object", "string"]}
ANY_JSON_PATHS = frozenset({"integration_fields[].value"})

DATE_TIME: JsonSchema = {"type": ["string", "null"], "format": "date-time"}

# Dates the specs leave as plain strings although they are timestamps in practice.
# The tap normalises them to ISO-8601 UTC, so they are typed date-time here (which
# makes targets create timestamp columns). Keyed by (provider, stream).
DATE_TIME_OVERRIDES: dict[tuple[str, str], frozenset[str]] = {
    # Legacy Kombo `progress[]` items: "Date when the user enrolled/completed".
    ("kombo", "progress"): frozenset({"enrollment_date", "completion_date"}),
    # Bindbee: only `modified_at` is declared date-time in the spec.
    ("bindbee", "enrollments"): frozenset({"start_date"}),
    ("bindbee", "completions"): frozenset({"started_at", "completed_at"}),
}

# Integers in the spec that real systems send with a fraction (a Bindbee completion
# `score` of 87.5): widened to `number`, or such records would not match their SCHEMA.
WIDENED_TO_NUMBER: dict[tuple[str, str], frozenset[str]] = {
    ("bindbee", "completions"): frozenset({"score"}),
}

# Relations (a stream class's `relations`, Bindbee's) are typed in the spec as "anything or
# null" (`anyOf: [{}, null]`, arrays with `items: {}`): an id string, or an object when the
# relation is expanded with `expand=`. The tap never expands relations, so they are id
# strings, or arrays of id strings where the spec has an array. Durations (`duration`,
# `time_duration`) and `contents.provider` are typed strings in the spec and stay strings.


class SpecError(Exception):
    """The spec does not look like what this script was written for."""


@dataclass(frozen=True)
class Source:
    """Where a stream's record model lives in a spec."""

    spec: str  # file, relative to the specs dir
    http_path: str  # list endpoint; the record is found below its 200 response
    steps: tuple[str, ...]  # keys from the response schema down to the record schema


@dataclass(frozen=True)
class Generation:
    """What a stream's schema is made of beyond what its stream class declares."""

    sources: tuple[Source, ...]  # record models; several (spec versions) are united
    extras: dict[str, JsonSchema] = field(default_factory=dict)  # fields the tap adds


@dataclass(frozen=True)
class StreamDef:
    """One stream to generate: its stream class's facts and its generation input."""

    provider: str
    name: str
    sources: tuple[Source, ...]
    primary_keys: tuple[str, ...]
    drop: frozenset[str]  # the class's `split_off`: fields that go to a partner stream
    relations: tuple[str, ...]  # the class's `relations`, if it has any
    extras: dict[str, JsonSchema]  # the generation's extras and the provider's tenant field

    @property
    def label(self) -> str:
        return f"{self.provider}/{self.name}"


def _kombo(http_path: str, *more_steps: str, spec: str = KOMBO_CURRENT) -> Source:
    return Source(spec, http_path, KOMBO_RECORD + more_steps)


_KOMBO_DELETED = {"_sdc_deleted_at": DATE_TIME}

# Kombo: each stream's models, by stream name.
KOMBO: dict[str, Generation] = {
    # Users: union of the current and the legacy model; legacy `progress[]` is its own stream.
    "users": Generation(
        (_kombo("/lms/users"), _kombo("/lms/users", spec=KOMBO_LEGACY)), _KOMBO_DELETED
    ),
    "progress": Generation(
        (_kombo("/lms/users", "properties", "progress", "items", spec=KOMBO_LEGACY),),
        {
            "user_id": {"type": ["string", "null"]},  # the parent user's id
            "user_changed_at": DATE_TIME,  # the parent user's changed_at (replication key)
            "_sdc_deleted_at": DATE_TIME,  # set when the parent user is deleted
        },
    ),
    "course_progressions": Generation((_kombo("/lms/course-progressions"),), _KOMBO_DELETED),
    "courses": Generation((_kombo("/lms/courses"),), _KOMBO_DELETED),
    "course_revisions": Generation(
        (_kombo("/lms/courses", "properties", "revisions", "items"),),
        # `course_id` is in the revision model already; it is added only if it disappears.
        {"course_id": {"type": ["string", "null"]}, **_KOMBO_DELETED},
    ),
    "skills": Generation((_kombo("/lms/skills"),), _KOMBO_DELETED),
}


def _bindbee(stream: str) -> Generation:
    """Bindbee: every stream has its own spec file and endpoint, both named after it."""
    return Generation(
        (
            Source(
                f"bindbee/bindbee-{stream}-api-openapi.yml", f"/api/lms/v1/{stream}", BINDBEE_RECORD
            ),
        )
    )


#: Generation input by provider: a table by stream name, or a rule for every stream.
GENERATION: dict[str, Mapping[str, Generation] | Callable[[str], Generation]] = {
    "kombo": KOMBO,
    "bindbee": _bindbee,
}


def stream_defs() -> tuple[StreamDef, ...]:
    """Every stream of the registry's providers, with its generation input.

    Names, keys, split-off fields and relations come from the provider modules; the
    tables above only say where in the specs each stream's records are.
    """
    if set(GENERATION) != set(PROVIDERS):
        raise SpecError(
            f"generation input for providers {sorted(GENERATION)}, registry: {sorted(PROVIDERS)}"
        )
    defs = []
    for provider in PROVIDERS.values():
        rule = GENERATION[provider.name]
        # The SDK types `name` and `primary_keys` as instance attributes; the stream
        # classes declare them as class attributes.
        classes = {str(getattr(cls, "name")): cls for cls in provider.streams}  # noqa: B009
        if isinstance(rule, Mapping) and set(rule) != set(classes):
            raise SpecError(
                f"{provider.name}: streams without generation input "
                f"{sorted(set(classes) - set(rule))}, input for no stream "
                f"{sorted(set(rule) - set(classes))}"
            )
        for name, cls in classes.items():
            generation = rule[name] if isinstance(rule, Mapping) else rule(name)
            tenant = {provider.tenancy.field: {"type": ["string"]}}
            defs.append(
                StreamDef(
                    provider=provider.name,
                    name=name,
                    sources=generation.sources,
                    primary_keys=tuple(getattr(cls, "primary_keys")),  # noqa: B009
                    drop=frozenset(cls.split_off),
                    relations=tuple(getattr(cls, "relations", ())),
                    extras={**generation.extras, **tenant},
                )
            )
    unknown = set(DATE_TIME_OVERRIDES) - {(d.provider, d.name) for d in defs}
    if unknown:
        raise SpecError(f"DATE_TIME_OVERRIDES for no stream: {sorted(unknown)}")
    return tuple(defs)


# --------------------------------------------------------------------------- spec access


class Spec:
    """One OpenAPI document with local `$ref` resolution."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with path.open(encoding="utf-8") as fh:
            self.doc: Any = json.load(fh) if path.suffix == ".json" else yaml.safe_load(fh)

    def resolve(self, node: Any) -> Any:
        """Follow `$ref`s (siblings of a `$ref` override the target, as in OAS 3.1)."""
        seen: set[str] = set()
        while isinstance(node, dict) and "$ref" in node:
            ref = node["$ref"]
            if not isinstance(ref, str) or not ref.startswith("#/"):
                raise SpecError(f"{self.path.name}: unsupported $ref {ref!r}")
            if ref in seen:
                raise SpecError(f"{self.path.name}: $ref cycle at {ref}")
            seen.add(ref)
            target: Any = self.doc
            for part in ref[2:].split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            siblings = {k: v for k, v in node.items() if k != "$ref"}
            node = {**target, **siblings} if siblings else target
        return node

    def record_schema(self, source: Source) -> JsonSchema:
        try:
            op = self.doc["paths"][source.http_path]["get"]
            node = self.resolve(op["responses"]["200"]["content"]["application/json"]["schema"])
            for step in source.steps:
                node = self.resolve(node[step])
        except KeyError as exc:
            raise SpecError(
                f"{source.spec}: GET {source.http_path} has no {exc} on the way to the record"
            ) from exc
        if not isinstance(node, dict) or "properties" not in node:
            raise SpecError(f"{source.spec}: GET {source.http_path} record has no properties")
        return node


# --------------------------------------------------------------------------- conversion


def _types_of(node: JsonSchema) -> list[str]:
    raw = node.get("type")
    if raw is None:
        return []
    return [raw] if isinstance(raw, str) else list(raw)


def _ordered(types: Iterable[str]) -> list[str]:
    unique = set(types)
    unknown = unique.difference(_TYPE_ORDER)
    if unknown:
        raise SpecError(f"unknown JSON types {sorted(unknown)}")
    return [t for t in _TYPE_ORDER if t in unique]


def _deep_merge(base: JsonSchema, over: JsonSchema) -> JsonSchema:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


@dataclass
class Converter:
    """Converts one stream's record model; records which explicit exceptions it used."""

    spec: Spec
    stream: StreamDef
    used_overrides: set[str] = field(default_factory=set)

    @property
    def date_time_paths(self) -> frozenset[str]:
        return DATE_TIME_OVERRIDES.get((self.stream.provider, self.stream.name), frozenset())

    @property
    def widened_paths(self) -> frozenset[str]:
        return WIDENED_TO_NUMBER.get((self.stream.provider, self.stream.name), frozenset())

    @property
    def relations(self) -> tuple[str, ...]:
        return self.stream.relations

    def fail(self, path: str, message: str) -> SpecError:
        return SpecError(f"{self.stream.label} ({self.spec.path.name}) `{path}`: {message}")

    def split(self, node: JsonSchema, path: str) -> tuple[JsonSchema | None, bool]:
        """Return (the non-null part of `node`, whether the spec allows null).

        The non-null part is None when the spec does not constrain the value at all
        (`{}`), and `{"type": []}` when the spec allows nothing but null.
        """
        node = self.spec.resolve(node)
        nullable = bool(node.get("nullable"))
        siblings = {k: v for k, v in node.items() if k not in ("anyOf", "oneOf", "nullable")}
        branches = node.get("anyOf") or node.get("oneOf")
        if not branches:
            types = _types_of(node)
            nullable = nullable or "null" in types
            non_null = [t for t in types if t != "null"]
            if not non_null:
                if types:  # typed null only
                    return {**siblings, "type": []}, nullable
                if "properties" in node:
                    return {**siblings, "type": ["object"]}, nullable
                return None, nullable
            return {**siblings, "type": non_null}, nullable

        parts: list[JsonSchema] = []
        untyped = False
        for branch in branches:
            part, branch_nullable = self.split(branch, path)
            nullable = nullable or branch_nullable
            if part is None:
                untyped = True
            elif part["type"]:
                parts.append(part)
        if untyped:
            return None, nullable
        if not parts:
            return {**siblings, "type": []}, nullable
        if len(parts) == 1:
            merged = _deep_merge(siblings, parts[0])
            merged["type"] = _ordered(parts[0]["type"])
            return merged, nullable
        structured = [p for p in parts if {"object", "array"} & set(p["type"])]
        if structured:
            raise self.fail(path, "anyOf/oneOf mixing structured types is not supported")
        return {
            **siblings,
            "type": _ordered(t for p in parts for t in p["type"]),
        }, nullable

    def convert(self, node: JsonSchema, path: str, *, is_property: bool) -> JsonSchema:
        """Convert one spec (sub)schema found at `path` (`a.b`, `a[].b`) to ours."""
        if path in ANY_JSON_PATHS:
            part, _ = self.split(node, path)
            if part is not None and part["type"] not in ([], ["string"]):
                raise self.fail(path, f"expected the spec's untyped/null value, got {part}")
            return copy.deepcopy(ANY_JSON_VALUE)

        part, spec_nullable = self.split(node, path)
        nullable = is_property or spec_nullable

        def typed(*types: str) -> list[str]:
            return _ordered([*types, "null"] if nullable else types)

        if path in self.relations:
            self.used_overrides.add(f"relation:{path}")
            if part is None or part["type"] != ["array"]:  # to one: an id
                if part is not None and part["type"] != ["string"]:
                    raise self.fail(path, f"relation is no longer untyped/string: {part}")
                return {"type": typed("string")}
            items, _ = self.split(part.get("items", {}), f"{path}[]")  # to many: ids
            if items is not None and items["type"] != ["string"]:
                raise self.fail(path, f"relation items are no longer untyped/string: {items}")
            return {"type": typed("array"), "items": {"type": ["string"]}}

        if part is None:
            raise self.fail(path, "untyped in the spec and not a known relation/any-value field")
        types = part["type"]
        if not types:
            raise self.fail(path, "typed as null only; add it to ANY_JSON_PATHS if intended")

        if path in self.widened_paths:
            self.used_overrides.add(f"number:{path}")
            if types != ["integer"]:
                raise self.fail(path, f"widening to number no longer needed: {part}")
            types = ["number"]
        out: JsonSchema = {"type": typed(*types)}
        if "object" in types:
            props = part.get("properties")
            if props:
                out["properties"] = {
                    name: self.convert(sub, f"{path}.{name}" if path else name, is_property=True)
                    for name, sub in props.items()
                }
            else:
                out["additionalProperties"] = True
        if "array" in types:
            if "items" not in part:
                raise self.fail(path, "array without items")
            out["items"] = self.convert(part["items"], f"{path}[]", is_property=False)
        if "string" in types:
            fmt = part.get("format")
            if path in self.date_time_paths:
                self.used_overrides.add(f"date-time:{path}")
                if fmt is not None or types != ["string"]:
                    raise self.fail(path, f"date-time override no longer needed: {part}")
                fmt = "date-time"
            if fmt in ("date-time", "date"):
                out["format"] = fmt
        return out

    def check_overrides_used(self) -> None:
        expected = (
            {f"relation:{p}" for p in self.relations}
            | {f"date-time:{p}" for p in self.date_time_paths}
            | {f"number:{p}" for p in self.widened_paths}
        )
        missing = expected - self.used_overrides
        if missing:
            raise SpecError(f"{self.stream.label}: overrides not found in the spec: {missing}")


def merge_schemas(a: JsonSchema, b: JsonSchema, path: str) -> JsonSchema:
    """Union of two of our schemas for the same field (for models seen in two specs)."""
    if a == b:
        return a
    out: JsonSchema = {"type": _ordered([*a["type"], *b["type"]])}
    formats = {a.get("format"), b.get("format")}
    if len(formats) > 1 and formats - {None, "date-time"}:
        raise SpecError(f"`{path}`: conflicting formats {a} / {b}")
    fmt = a.get("format") or b.get("format")
    if fmt:
        out["format"] = fmt
    if "properties" in a or "properties" in b:
        pa, pb = a.get("properties", {}), b.get("properties", {})
        out["properties"] = {
            k: merge_schemas(pa[k], pb[k], f"{path}.{k}")
            if k in pa and k in pb
            else pa.get(k, pb.get(k))
            for k in {**pa, **pb}
        }
    elif a.get("additionalProperties") or b.get("additionalProperties"):
        out["additionalProperties"] = True
    if "items" in a and "items" in b:
        out["items"] = merge_schemas(a["items"], b["items"], f"{path}[]")
    elif "items" in a or "items" in b:
        out["items"] = a.get("items", b.get("items"))
    return out


def build_stream(stream: StreamDef, specs_dir: Path, cache: dict[str, Spec]) -> JsonSchema:
    properties: dict[str, JsonSchema] = {}
    dropped: set[str] = set()
    for source in stream.sources:
        if source.spec not in cache:
            if not (specs_dir / source.spec).is_file():
                raise SpecError(f"{stream.label}: no spec {source.spec}")
            cache[source.spec] = Spec(specs_dir / source.spec)
        spec = cache[source.spec]
        record = spec.record_schema(source)
        converter = Converter(spec, stream)
        for name, node in record["properties"].items():
            if name in stream.drop:
                dropped.add(name)
                continue
            ours = converter.convert(node, name, is_property=True)
            properties[name] = (
                merge_schemas(properties[name], ours, name) if name in properties else ours
            )
        converter.check_overrides_used()
    if stream.drop - dropped:
        raise SpecError(f"{stream.label}: split-off fields in no spec: {stream.drop - dropped}")

    for pk in stream.primary_keys:
        if pk not in properties or properties[pk]["type"] != ["string", "null"]:
            raise SpecError(f"{stream.label}: primary key {pk!r} missing or not a string")
        properties[pk] = {"type": ["string"]}

    for name, extra in stream.extras.items():
        if name in properties:
            # Only tolerated when the spec already has it with the same shape.
            if properties[name] != extra:
                raise SpecError(f"{stream.label}: extra {name!r} clashes with the spec field")
            continue
        properties[name] = copy.deepcopy(extra)
    return {"type": "object", "properties": properties}


def render(schema: JsonSchema) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def generate(specs_dir: Path) -> dict[str, str]:
    """Return {"<provider>/<stream>.json": file content} for every stream."""
    cache: dict[str, Spec] = {}
    return {
        f"{s.provider}/{s.name}.json": render(build_stream(s, specs_dir, cache))
        for s in stream_defs()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--specs", type=Path, default=DEFAULT_SPECS_DIR, help="specs folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR, help="schemas folder")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if the files differ"
    )
    args = parser.parse_args(argv)
    if not args.specs.is_dir():
        parser.error(f"specs folder not found: {args.specs}")

    try:
        files = generate(args.specs)
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    out: Path = args.out
    providers = {rel.split("/")[0] for rel in files}
    existing = {
        p.relative_to(out).as_posix()
        for provider in providers
        if (out / provider).is_dir()
        for p in (out / provider).glob("*.json")
    }
    stale = sorted(existing - set(files))
    changed = sorted(
        rel
        for rel, text in files.items()
        if not (out / rel).is_file() or (out / rel).read_text(encoding="utf-8") != text
    )
    if args.check:
        for rel in changed:
            print(f"out of date: {rel}", file=sys.stderr)
        for rel in stale:
            print(f"not generated by this script: {rel}", file=sys.stderr)
        return 1 if changed or stale else 0

    for rel in changed:
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("w", encoding="utf-8", newline="\n") as fh:
            fh.write(files[rel])
        print(f"wrote {rel}")
    for rel in stale:
        (out / rel).unlink()
        print(f"removed {rel} (no such stream)")
    print(f"{len(files)} schemas up to date in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
