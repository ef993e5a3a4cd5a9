"""Contract tests: the committed stream schemas against the vendors' OpenAPI specs.

The streams, their keys, split-off fields and relations are the provider modules'; where
in the specs each stream's records are is `scripts/generate_schemas.py`'s table
(`stream_defs`). Everything else is done here independently of the generator (own `$ref`
resolution, own reading of the models, own lists of deliberate deviations), so a bug in
its conversion is not mirrored by the test. Every property of every model, at every
depth, is one test case named ``<provider>/<stream>:<path>`` (``a.b`` for a nested
property, ``a[]`` for array items; ``#2`` marks a stream's second model).
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from scripts import generate_schemas
from tap_lms_unified.providers import PROVIDERS
from tests.conftest import primary_key, relations_of, stream_classes

REPO_ROOT = Path(__file__).resolve().parents[1]
SPECS_DIR = REPO_ROOT / "specs"
SCHEMAS_DIR = REPO_ROOT / "tap_lms_unified" / "schemas"
GENERATOR = REPO_ROOT / "scripts" / "generate_schemas.py"

JSON_TYPES = ("string", "integer", "number", "boolean", "object", "array", "null")
# One sample per JSON type, for "accepts any JSON value".
ANY_SAMPLES: tuple[Any, ...] = ("x", 3, 2.5, True, {"a": [1]}, [1, "b", None], None)


@dataclass(frozen=True)
class Model:
    """A record model in a spec and the stream (schema file) that must cover it."""

    label: str
    stream: str  # <provider>/<stream>
    spec: str
    pointer: tuple[str, ...]  # from the spec root down to the record schema
    key: str  # the stream's primary key
    excluded: frozenset[str]  # the stream's split-off fields: deliberately not in the file
    relations: tuple[str, ...]  # the stream's relations, kept as ids

    @property
    def provider(self) -> str:
        return self.stream.split("/")[0]

    @property
    def schema_file(self) -> str:
        return f"{self.stream}.json"


def _models() -> tuple[Model, ...]:
    models = []
    for stream in generate_schemas.stream_defs():
        provider, name = stream.provider, stream.name
        for number, source in enumerate(stream.sources, 1):
            response = ("paths", source.path, "get", "responses", "200", "content")
            where = (*response, "application/json", "schema") if source.path else source.pointer
            models.append(
                Model(
                    label=stream.label + ("" if number == 1 else f"#{number}"),
                    stream=stream.label,
                    spec=source.spec,
                    pointer=(*where, *source.steps),
                    key=primary_key(provider, name),
                    excluded=frozenset(stream_classes(provider)[name].split_off),
                    relations=relations_of(provider, name),
                )
            )
    return tuple(models)


MODELS = _models()
SCHEMA_FILES = tuple(sorted({m.schema_file for m in MODELS}))
PRIMARY_KEYS = {m.schema_file: m.key for m in MODELS}

_DT: dict[str, Any] = {"type": ["string", "null"], "format": "date-time"}
# Fields the tap adds to a stream (not in any spec), with their exact schema: the tenant
# field in every stream, ...
TENANT_FIELDS = {name: {p.tenancy.field: {"type": ["string"]}} for name, p in PROVIDERS.items()}
# ... Kombo's deletions in every Kombo stream, ...
PROVIDER_EXTRAS: dict[str, dict[str, dict[str, Any]]] = {"kombo": {"_sdc_deleted_at": _DT}}
# ... and the parent user of a progress row.
STREAM_EXTRAS: dict[str, dict[str, dict[str, Any]]] = {
    "kombo/progress.json": {"user_id": {"type": ["string", "null"]}, "user_changed_at": _DT},
}


def extras(rel: str) -> dict[str, dict[str, Any]]:
    provider = rel.split("/", maxsplit=1)[0]
    return {
        **TENANT_FIELDS[provider],
        **PROVIDER_EXTRAS.get(provider, {}),
        **STREAM_EXTRAS.get(rel, {}),
    }


# Deliberate deviations from the spec (each must still match a spec field):
# plain-string dates the tap normalises to ISO-8601 UTC, by stream ...
DATE_TIME_OVERRIDES = {
    ("kombo/progress", "enrollment_date"),
    ("kombo/progress", "completion_date"),
    ("bindbee/enrollments", "start_date"),
    ("bindbee/completions", "started_at"),
    ("bindbee/completions", "completed_at"),
}
# ... integers the real APIs send as fractions (Bindbee's completion `score`: 87.5),
# widened to `number` so such records still match their SCHEMA ...
WIDENED_TO_NUMBER = {("bindbee/completions", "score")}
# ... relations (the stream classes' `relations`; spec: untyped, an id string or an
# expanded object) kept as ids: see `relation_paths` ...
# ... and Kombo's `integration_fields[].value`, typed null in the spec but any JSON value.
ANY_VALUE_PATHS = {"integration_fields[].value"}


# --------------------------------------------------------------------------- spec reading


@cache
def load_spec(rel: str) -> Any:
    path = SPECS_DIR / rel
    with path.open(encoding="utf-8") as fh:
        return json.load(fh) if path.suffix == ".json" else yaml.safe_load(fh)


def deref(doc: Any, node: Any) -> Any:
    for _ in range(50):
        if not (isinstance(node, dict) and "$ref" in node):
            return node
        target = doc
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    raise AssertionError("$ref chain too long")


@dataclass(frozen=True)
class SpecField:
    """What the spec says about one value: its non-null types and flags."""

    types: frozenset[str]  # non-null JSON types; empty if untyped or null-only
    nullable: bool
    untyped: bool  # the spec allows anything (`{}` branch)
    fmt: str | None
    node: dict[str, Any]  # the merged non-null branch (for properties/items)


def describe(doc: Any, node: Any) -> SpecField:
    node = deref(doc, node)
    branches = node.get("anyOf") or node.get("oneOf")
    if branches:
        types: set[str] = set()
        nullable, untyped, fmt = bool(node.get("nullable")), False, node.get("format")
        merged = {k: v for k, v in node.items() if k not in ("anyOf", "oneOf")}
        for branch in branches:
            sub = describe(doc, branch)
            types |= sub.types
            nullable = nullable or sub.nullable
            untyped = untyped or sub.untyped
            fmt = fmt or sub.fmt
            if sub.types:
                merged = {**merged, **sub.node}
        return SpecField(frozenset(types), nullable, untyped, fmt, merged)
    raw = node.get("type", [])
    raw_types = {raw} if isinstance(raw, str) else set(raw)
    if not raw_types and "properties" in node:
        raw_types = {"object"}
    return SpecField(
        types=frozenset(raw_types - {"null"}),
        nullable="null" in raw_types or bool(node.get("nullable")),
        untyped=not raw_types,
        fmt=node.get("format"),
        node=node,
    )


def spec_record(model: Model) -> dict[str, Any]:
    doc = load_spec(model.spec)
    node: Any = doc
    for step in model.pointer:
        node = deref(doc, node)[step]
    return deref(doc, node)


def walk(model: Model) -> list[tuple[str, SpecField, bool]]:
    """Every (path, spec field, is_property) of a model, depth first."""
    doc = load_spec(model.spec)
    out: list[tuple[str, SpecField, bool]] = []

    def visit(path: str, node: Any, is_property: bool) -> None:
        field = describe(doc, node)
        out.append((path, field, is_property))
        if "object" in field.types:
            for name, sub in field.node.get("properties", {}).items():
                visit(f"{path}.{name}", sub, True)
        if "array" in field.types and "items" in field.node:
            visit(f"{path}[]", field.node["items"], False)

    for name, sub in spec_record(model)["properties"].items():
        if name not in model.excluded:
            visit(name, sub, True)
    return out


def relation_paths(model: Model) -> set[str]:
    """Where a model's relations hold ids: the field, or its items when the spec has a list."""
    doc, properties = load_spec(model.spec), spec_record(model)["properties"]
    return {
        f"{name}[]" if "array" in describe(doc, properties[name]).types else name
        for name in model.relations
        if name in properties
    }


# --------------------------------------------------------------------------- our schemas


@cache
def our_schema(rel: str) -> dict[str, Any]:
    return json.loads((SCHEMAS_DIR / rel).read_text(encoding="utf-8"))


def our_field(rel: str, path: str) -> dict[str, Any]:
    node = our_schema(rel)
    for part in path.split("."):
        name, arrays = part.rstrip("[]"), part.count("[]")
        props = node.get("properties", {})
        assert name in props, f"{rel}: `{path}` missing (no `{name}`)"
        node = props[name]
        for _ in range(arrays):
            assert "items" in node, f"{rel}: `{path}` has no items"
            node = node["items"]
    return node


def our_types(node: dict[str, Any]) -> set[str]:
    raw = node.get("type")
    assert isinstance(raw, list), f"type must be a list, got {raw!r}"
    return set(raw)


def all_paths(node: dict[str, Any], prefix: str = "") -> set[str]:
    paths: set[str] = set()
    for name, sub in node.get("properties", {}).items():
        path = f"{prefix}{name}"
        paths.add(path)
        paths |= all_paths(sub, f"{path}.")
        item, item_path = sub, path
        while "items" in item:
            item, item_path = item["items"], f"{item_path}[]"
            paths.add(item_path)
            paths |= all_paths(item, f"{item_path}.")
    return paths


def accepts(schema: dict[str, Any], value: Any) -> bool:
    return jsonschema.Draft7Validator(schema).is_valid(value)


# --------------------------------------------------------------------------- cases


def _cases() -> list[Any]:
    return [
        pytest.param(model, path, field, is_prop, id=f"{model.label}:{path}")
        for model in MODELS
        for path, field, is_prop in walk(model)
    ]


def _streams_with(attribute: str) -> list[Any]:
    """The streams (schema files) whose models have a split-off field or a relation."""
    return sorted({m.schema_file for m in MODELS if getattr(m, attribute)})


@pytest.mark.parametrize(("model", "path", "spec", "is_property"), _cases())
def test_field_matches_spec(model: Model, path: str, spec: SpecField, is_property: bool) -> None:
    rel = model.schema_file
    ours = our_field(rel, path)
    types = our_types(ours)
    key = (model.stream, path)
    relations = relation_paths(model)

    assert "enum" not in ours, f"{rel} `{path}`: enums must be dropped (open enums)"
    assert "pattern" not in ours, f"{rel} `{path}`: patterns must be dropped"

    # Nullability: the primary key never, every other property always, items as the spec.
    if path == PRIMARY_KEYS[rel]:
        assert ours == {"type": ["string"]}, f"{rel}: primary key `{path}` must be a string"
    elif is_property or spec.nullable:
        assert "null" in types, f"{rel} `{path}` must be nullable"
    non_null = types - {"null"}

    if path in ANY_VALUE_PATHS and model.spec.startswith("kombo/"):
        assert not spec.types, f"spec now types `{path}` as {set(spec.types)}: revisit"
        for value in ANY_SAMPLES:
            assert accepts(ours, value), f"{rel} `{path}` must accept {value!r}"
        # The SDK's record conformance needs a `type`: `{}` crashes it on lists.
        assert set(JSON_TYPES) - {"integer"} <= types, f"{rel} `{path}` must list all types"
        return
    if path in relations or (spec.untyped and not spec.types):
        assert path in relations, f"`{path}` is untyped in the spec and not a known relation"
        assert non_null == {"string"}, f"{rel} relation `{path}` must be an id string"
        assert accepts(ours, "018b18ef-c487-703c-afd9-0ca478ccd9d6")
        return

    assert spec.types, f"spec gives no type for `{path}`"
    if key in WIDENED_TO_NUMBER:
        assert set(spec.types) == {"integer"}, f"spec now types `{path}` as {spec.types}: revisit"
        assert non_null == {"number"}, f"{rel} `{path}` is widened to number"
        assert accepts(ours, 87.5)
        assert accepts(ours, 92)
        assert accepts(ours, None)
        return
    assert non_null == set(spec.types), f"{rel} `{path}`: spec {set(spec.types)}, ours {types}"

    if "string" in spec.types:
        expected = "date-time" if spec.fmt == "date-time" or key in DATE_TIME_OVERRIDES else None
        assert ours.get("format") == expected, f"{rel} `{path}`: format should be {expected}"
        if key in DATE_TIME_OVERRIDES:
            assert spec.fmt is None, f"spec now formats `{path}`: drop the override"
        assert accepts(ours, "2024-03-01T10:00:00.000000Z")
    if "integer" in spec.types:
        assert accepts(ours, 92)
        assert not accepts(ours, 92.5), f"{rel} `{path}` must stay integer"
    if "number" in spec.types:
        assert accepts(ours, 92.5), f"{rel} `{path}` must stay number"
        assert accepts(ours, 480)
    if "object" in spec.types:
        if spec.node.get("properties"):
            assert ours.get("properties"), f"{rel} `{path}` must keep the spec's properties"
        else:
            assert "properties" not in ours, f"{rel} `{path}` is free-form in the spec"
            assert ours.get("additionalProperties") is True, f"{rel} `{path}` must be free-form"
            assert accepts(ours, {"/users": {"any": ["thing", 1]}})
    if "array" in spec.types:
        assert "items" in ours, f"{rel} `{path}` must declare items"
        assert accepts(ours, [])
    if spec.nullable or (is_property and path != PRIMARY_KEYS[rel]):
        assert accepts(ours, None)


@pytest.mark.parametrize("rel", SCHEMA_FILES)
def test_no_fields_beyond_spec_and_extras(rel: str) -> None:
    expected: set[str] = set()
    for model in MODELS:
        if model.schema_file == rel:
            expected |= {path for path, _, _ in walk(model)}
    added = extras(rel)
    expected |= set(added)
    actual = all_paths(our_schema(rel))
    assert actual - expected == set(), f"{rel}: fields in neither spec nor extras"
    assert expected - actual == set(), f"{rel}: fields missing"
    for name, schema in added.items():
        assert our_schema(rel)["properties"][name] == schema, f"{rel}: extra `{name}`"


def _stream_fields(rel: str) -> set[str]:
    """The top-level fields of all of a stream's models, in the specs."""
    return {name for m in MODELS if m.schema_file == rel for name in spec_record(m)["properties"]}


@pytest.mark.parametrize("rel", _streams_with("excluded"))
def test_split_off_fields_are_real(rel: str) -> None:
    """Fields split off into another stream exist in a spec (else the split is stale)."""
    (excluded,) = {m.excluded for m in MODELS if m.schema_file == rel}
    assert excluded <= _stream_fields(rel), f"{rel}: {excluded - _stream_fields(rel)} not in spec"
    for name in excluded:
        assert name not in our_schema(rel)["properties"]


@pytest.mark.parametrize("rel", _streams_with("relations"))
def test_relations_are_untyped_in_the_spec(rel: str) -> None:
    """Each relation is a spec field that is untyped (or a list of untyped items)."""
    (model,) = [m for m in MODELS if m.schema_file == rel]
    assert set(model.relations) <= _stream_fields(rel), f"{rel}: relations not in the spec"
    cases = {path: field for path, field, _ in walk(model)}
    for path in relation_paths(model):
        assert cases[path].untyped, f"{rel} `{path}`: typed in the spec, not a relation"


@pytest.mark.parametrize("rel", SCHEMA_FILES)
def test_primary_key_is_non_nullable_string(rel: str) -> None:
    schema = our_schema(rel)
    pk = PRIMARY_KEYS[rel]
    assert schema["properties"][pk] == {"type": ["string"]}
    assert not accepts(schema, {pk: None})
    assert accepts(schema, {pk: "26vafvWSRmbhNcxJYqjCzuJg"})


@pytest.mark.parametrize("rel", SCHEMA_FILES)
def test_is_valid_draft7_object_schema(rel: str) -> None:
    schema = our_schema(rel)
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["type"] == "object"
    assert schema.get("additionalProperties", True) is not False
    assert schema["properties"]


def test_schema_files_are_exactly_the_streams() -> None:
    on_disk = {p.relative_to(SCHEMAS_DIR).as_posix() for p in SCHEMAS_DIR.glob("*/*.json")}
    assert on_disk == set(SCHEMA_FILES)


def test_regenerating_reproduces_committed_files(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--specs", str(SPECS_DIR), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    generated = {p.relative_to(tmp_path).as_posix() for p in tmp_path.glob("*/*.json")}
    assert generated == set(SCHEMA_FILES)
    for rel in SCHEMA_FILES:
        assert (tmp_path / rel).read_bytes() == (SCHEMAS_DIR / rel).read_bytes(), (
            f"{rel} is stale: run scripts/generate_schemas.py"
        )


# --------------------------------------------------------------------------- examples


def _kombo_examples() -> list[Any]:
    """The record examples Kombo's specs embed in each model (plus the seed's shape)."""
    cases = []
    for model in MODELS:
        if not model.spec.startswith("kombo/"):
            continue
        for i, example in enumerate(spec_record(model).get("examples", [])):
            record = {k: v for k, v in example.items() if k not in model.excluded}
            cases.append(pytest.param(model, record, id=f"{model.label}#{i}"))
    return cases


@pytest.mark.parametrize(("model", "record"), _kombo_examples())
def test_spec_examples_validate_and_conform(model: Model, record: dict[str, Any]) -> None:
    """Spec examples pass our schema and the SDK's conformance keeps every field."""
    from singer_sdk.helpers._typing import conform_record_data_types  # private, 0.54.x
    from singer_sdk.helpers.conform import TypeConformanceLevel

    schema = our_schema(model.schema_file)
    if "integration_fields" in schema["properties"]:
        # Integration field values can be lists/objects: the SDK must pass them through.
        record = {
            **record,
            "integration_fields": [
                {"id": "i1", "key": "k", "type": "CUSTOM", "label": None, "value": value}
                for value in ANY_SAMPLES
            ],
        }
    jsonschema.Draft7Validator(schema).validate(record)
    conformed = conform_record_data_types(
        model.label,
        record,
        schema,
        TypeConformanceLevel.RECURSIVE,
        logging.getLogger(__name__),
    )
    assert conformed == record


SEEDS_DIR = REPO_ROOT / "tests" / "seeds"


def _seed_records() -> list[Any]:
    """Records of the example documents in `seeds/`, split the way the tap splits them."""
    cases = []
    decoder = json.JSONDecoder()
    for seed in sorted(SEEDS_DIR.iterdir()):
        text = seed.read_text(encoding="utf-8")
        match = re.search(r'\{\s*"(status|cursor)"', text)
        assert match, f"{seed.name}: no response document found"
        doc, _ = decoder.raw_decode(text, match.start())
        if "data" in doc:  # Kombo legacy users with nested progress[]
            for user in doc["data"]["results"]:
                parent = {k: v for k, v in user.items() if k != "progress"}
                cases.append(pytest.param("kombo/users.json", parent, id=f"{seed.name}:user"))
                for item in user["progress"]:
                    record = {
                        **item,
                        "user_id": user["id"],
                        "user_changed_at": user["changed_at"],
                        "_sdc_deleted_at": None,
                    }
                    cases.append(
                        pytest.param("kombo/progress.json", record, id=f"{seed.name}:progress")
                    )
        else:  # Bindbee enrollments
            for item in doc["items"]:
                cases.append(
                    pytest.param("bindbee/enrollments.json", item, id=f"{seed.name}:enrollment")
                )
    return cases


@pytest.mark.parametrize(("rel", "record"), _seed_records())
def test_seed_records_validate_and_conform(rel: str, record: dict[str, Any]) -> None:
    from singer_sdk.helpers._typing import conform_record_data_types  # private, 0.54.x
    from singer_sdk.helpers.conform import TypeConformanceLevel

    schema = our_schema(rel)
    jsonschema.Draft7Validator(schema).validate(record)
    conformed = conform_record_data_types(
        rel, record, schema, TypeConformanceLevel.RECURSIVE, logging.getLogger(__name__)
    )
    assert conformed == record
