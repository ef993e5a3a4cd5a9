"""Generate the tap's stream JSON Schemas from the vendors' API specs.

Usage::

    python scripts/generate_schemas.py [--specs DIR] [--out DIR] [--check]

``--specs`` defaults to ``specs/`` of the repository and ``--out`` to
``tap_lms_unified/schemas``. One file is written per stream, to
``<out>/<provider>/<stream>.json`` (indent 2, sorted keys, trailing newline), so a
re-run on the same specs reproduces the committed files byte for byte. ``--check``
writes nothing and exits 1 when a committed file is missing, stale or extra.

Everything about a stream comes from its class in its provider module: its name,
primary key, ``split_off`` fields (left out: a partner stream has them), ``relations``
(kept as ids), and ``schema_source`` (``provider.SchemaSource``): where in which spec its
records are, the fields the tap adds, and its deliberate deviations from the spec. The
provider gives the tenant field every record carries. Nothing here names a provider.

Mapping rules (the specs are the source of truth; the deviations are declared per
stream and the script fails loudly when one of them no longer matches the spec, so
they cannot silently go stale):

* ``$ref`` is resolved; ``anyOf``/``oneOf`` with a ``null`` branch, ``type: [..,
  "null"]`` and ``nullable: true`` all mean "nullable".
* Every property is nullable (APIs omit or null things), at every depth, except the
  stream's primary key, which is ``{"type": ["string"]}``. Array items keep the
  spec's nullability.
* ``enum``, ``pattern``, ``minimum``, ``description``, ``examples`` ... are dropped:
  the APIs pass unknown enum values through, so ``status``/``grade`` are plain
  strings. Only the ``date-time`` (and ``date``) formats are kept.
* ``integer`` and ``number`` are kept as the spec says, except the integers that real
  systems send as fractions (a stream's ``numbers``), which become ``number``.
* Plain strings that are timestamps in practice (a stream's ``date_times``) become
  ``date-time``; the tap normalises them to ISO-8601 UTC.
* Objects without declared properties (``remote_data``, ``custom_fields``,
  ``raw_data``) are free-form: ``{"type": ["object", "null"],
  "additionalProperties": true}``. Objects with properties keep them, recursively.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tap_lms_unified.provider import SchemaSource, SpecSource
from tap_lms_unified.providers import PROVIDERS

JsonSchema = dict[str, Any]

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SPECS_DIR = REPO_ROOT / "specs"
DEFAULT_OUT_DIR = REPO_ROOT / "tap_lms_unified" / "schemas"

# JSON types in the order we emit them; "null" always last.
_TYPE_ORDER = ("string", "integer", "number", "boolean", "object", "array", "null")

# A value the spec types as null or leaves untyped that is really any JSON value (a
# stream's `any_json` paths). singer-sdk 0.54's record conformance crashes on the empty
# schema `{}` when the value is a list (`is_array_type({})` raises EmptySchemaTypeError),
# so every JSON type is listed instead: it accepts exactly what `{}` accepts, and the SDK
# passes the value through untouched.
ANY_JSON_VALUE: JsonSchema = {"type": ["array", "boolean", "null", "number", "object", "string"]}

# Relations (a stream class's `relations`) are typed in the spec as "anything or null"
# (`anyOf: [{}, null]`, arrays with `items: {}`): an id string, or an object when the
# relation is expanded. The tap never expands relations, so they are id strings, or arrays
# of id strings where the spec has an array.


class SpecError(Exception):
    """The spec does not look like what this script was written for."""


@dataclass(frozen=True)
class StreamDef:
    """One stream to generate: its stream class's facts and its schema source."""

    provider: str
    name: str
    source: SchemaSource
    primary_keys: tuple[str, ...]
    drop: frozenset[str]  # the class's `split_off`: fields that go to a partner stream
    relations: tuple[str, ...]  # the class's `relations`, if it has any
    extras: dict[str, JsonSchema]  # the source's extras and the provider's tenant field

    @property
    def label(self) -> str:
        return f"{self.provider}/{self.name}"

    @property
    def sources(self) -> tuple[SpecSource, ...]:
        return self.source.models


def stream_defs() -> tuple[StreamDef, ...]:
    """Every stream of the registry's providers, as its class declares it.

    Names, keys, split-off fields, relations and schema sources (`schema_source`) come
    from the provider modules; the tenant field from the provider's tenancy.
    """
    defs = []
    for provider in PROVIDERS.values():
        for cls in provider.streams:
            # The SDK types `name` and `primary_keys` as instance attributes; the stream
            # classes declare them as class attributes.
            name = str(getattr(cls, "name"))  # noqa: B009
            source = getattr(cls, "schema_source", None)
            if not isinstance(source, SchemaSource):
                raise SpecError(f"{provider.name}/{name}: the stream declares no schema_source")
            tenant = {provider.tenancy.field: {"type": ["string"]}}
            defs.append(
                StreamDef(
                    provider=provider.name,
                    name=name,
                    source=source,
                    primary_keys=tuple(getattr(cls, "primary_keys")),  # noqa: B009
                    drop=frozenset(getattr(cls, "split_off", ())),
                    relations=tuple(getattr(cls, "relations", ())),
                    extras={
                        **{k: copy.deepcopy(dict(v)) for k, v in source.extras.items()},
                        **tenant,
                    },
                )
            )
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

    def record_schema(self, source: SpecSource) -> JsonSchema:
        where = f"GET {source.path}" if source.path else "/".join(source.pointer)
        try:
            if source.path:
                op = self.doc["paths"][source.path]["get"]
                node = op["responses"]["200"]["content"]["application/json"]["schema"]
            else:
                node = self.doc
                for part in source.pointer:
                    node = self.resolve(node)[part]
            node = self.resolve(node)
            for step in source.steps:
                node = self.resolve(node[step])
        except KeyError as exc:
            raise SpecError(
                f"{source.spec}: {where} has no {exc} on the way to the record"
            ) from exc
        if not isinstance(node, dict) or "properties" not in node:
            raise SpecError(f"{source.spec}: {where} record has no properties")
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
        return self.stream.source.date_times

    @property
    def widened_paths(self) -> frozenset[str]:
        return self.stream.source.numbers

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
        node = self.flatten(node)
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

    def flatten(self, node: JsonSchema) -> JsonSchema:
        """`node` resolved, with an `allOf` merged into it (its own keys win)."""
        node = self.spec.resolve(node)
        if "allOf" not in node:
            return node
        merged: JsonSchema = {}
        for part in node["allOf"]:
            merged = _deep_merge(merged, self.flatten(part))
        return _deep_merge(merged, {k: v for k, v in node.items() if k != "allOf"})

    def branch_types(self, node: JsonSchema) -> set[str]:
        """The JSON types of a oneOf/anyOf's branches, nested ones included."""
        node = self.flatten(node)
        branches = node.get("oneOf") or node.get("anyOf")
        if not branches:
            return set(_types_of(node))
        return {kind for branch in branches for kind in self.branch_types(branch)}

    def any_value(self, node: JsonSchema) -> bool:
        """A oneOf/anyOf of every JSON type (an open enum's `source_value`): any value."""
        types = self.branch_types(node)
        if "integer" in types:
            types.add("number")
        return {"string", "number", "boolean", "object", "array"} <= types

    def convert(self, node: JsonSchema, path: str, *, is_property: bool) -> JsonSchema:
        """Convert one spec (sub)schema found at `path` (`a.b`, `a[].b`) to ours."""
        if path in self.stream.source.any_json:
            if self.any_value(node):
                raise self.fail(path, "any_json no longer needed: the spec allows any value")
            self.used_overrides.add(f"any:{path}")
            return copy.deepcopy(ANY_JSON_VALUE)

        if self.any_value(node):
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
            raise self.fail(path, "typed as null only; add it to the stream's any_json if so")

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
    used: set[str] = set()
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
        used |= converter.used_overrides
    unused = {f"any:{p}" for p in stream.source.any_json} - used
    if unused:  # in any of the stream's models (a field may be in one version only)
        raise SpecError(f"{stream.label}: any_json paths not found in the spec: {unused}")
    if stream.drop - dropped:
        raise SpecError(f"{stream.label}: split-off fields in no spec: {stream.drop - dropped}")

    for pk in stream.primary_keys:
        if pk in stream.extras:  # the tenant field, part of the key: added below
            continue
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
