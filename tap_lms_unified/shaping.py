"""Reading API JSON, and records in their schema's shape and types.

Every emitted record validates against its stream's SCHEMA: every schema key is present,
unknown keys are dropped, timestamps are UTC ISO-8601, and a value of the wrong type is
converted when that loses nothing (an integer for a string, 3.0 for an integer), otherwise
emitted as null with a warning. Primary keys are not touched here: a record without a
usable one is never emitted (see `LmsStream.get_records`).
"""

from __future__ import annotations

import json
import math
import re
import typing as t
from collections import Counter
from datetime import UTC, datetime
from types import NoneType

import msgspec

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

_DECODE = msgspec.json.Decoder()
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def decode_json(data: bytes) -> t.Any:
    """Decode a JSON body: msgspec, or the standard parser for valid JSON msgspec refuses.

    msgspec rejects two kinds of valid JSON text: a lone surrogate escape (`"\\ud83d"`,
    read here as U+FFFD) and numbers beyond a double (`1e400`, read as infinity, which
    the shaper turns into null with a warning). Raises `msgspec.DecodeError` when the
    body is not JSON, RecursionError when it is nested too deeply to read.
    """
    try:
        return _DECODE.decode(data)
    except msgspec.DecodeError as exc:
        try:
            value = json.loads(data.decode("utf-8"), parse_constant=_not_json)
        except ValueError:  # UnicodeDecodeError included
            raise exc from None
        return _replace_lone_surrogates(value)


def _not_json(name: str) -> t.NoReturn:
    raise ValueError(f"{name} is not JSON")


def _replace_lone_surrogates(value: t.Any) -> t.Any:
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_replace_lone_surrogates(item) for item in value]
    if isinstance(value, dict):
        return {_replace_lone_surrogates(k): _replace_lone_surrogates(v) for k, v in value.items()}
    return value


_fromisoformat = datetime.fromisoformat


def utc_iso(value: object) -> str | None:
    """Return `value` as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC), or None when it is no timestamp.

    One fixed format matters: the SDK compares bookmark strings as strings.
    """
    # The fast path, first: the APIs' usual `2024-01-01T10:00:00.123Z` and values already
    # in our format (a partner's row), a timestamp per field of most records. The layout is
    # checked here (Python also reads week dates such as `2024-W01-1`), the digits and the
    # calendar (no Feb 30) by `fromisoformat`, ASCII digits only.
    if value.__class__ is str:
        size = len(value)
        if (
            (size == 24 or size == 27)  # noqa: PLR1714 (faster than `in` on this path)
            and value[size - 1] == "Z"
            and value[19] == "."
            and value[10] == "T"
            and value[4] == "-"
            and value[7] == "-"
            and value[13] == ":"
            and value[16] == ":"
            and value.isascii()
        ):
            try:
                _fromisoformat(value)
            except ValueError:
                return None
            return value if size == 27 else value[:23] + "000Z"
    if not isinstance(value, str) or not value or not value.isascii():
        return None  # ASCII only: Python also reads other scripts' digits (e.g. Arabic-Indic)
    # RFC 3339 separates date and time with `T` (or `t`, or a space); Python takes any.
    if len(value) > 10 and value[10] not in "Tt ":
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        utc = parsed.astimezone(UTC).replace(tzinfo=None)
    except (OverflowError, ValueError):  # e.g. year 0001 with a positive offset
        return None
    return utc.isoformat(timespec="microseconds") + "Z"  # four-digit years (not strftime's)


def parse_utc(value: str) -> datetime:
    """A timestamp string as an aware datetime (naive ones are taken as UTC)."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}
_JSON_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    dict: "an object",
    list: "an array",
    type(None): "null",
}


def json_type_name(value: object) -> str:
    """`a string`, `an object`, ...: a value's JSON type, for messages."""
    return _JSON_NAMES.get(type(value), type(value).__name__)


class WrongType(ValueError):
    """A value that does not fit its schema and cannot be converted without loss."""

    def __init__(self, path: str, value: object, expected: str) -> None:
        shown = repr(value) if type(value) in (int, float) else json_type_name(value)
        super().__init__(f"{shown} where the schema says {expected}")
        self.path = path
        #: The value set to null: this one, or the nearest nullable one around it.
        self.nulled_at = path


#: check(value, path, nulled) -> the value, converted if that is lossless; raises
#: WrongType, or (nullable nodes) answers None and appends the WrongType to `nulled`.
Check = t.Callable[[t.Any, str, list[WrongType]], t.Any]
#: valid(value) -> whether the value already fits (no conversion, nothing to null).
Valid = t.Callable[[t.Any], bool]


class Compiled(t.NamedTuple):
    """A schema node, compiled: cheap checks first, the converting one when needed."""

    #: Python types whose values need no check at all.
    unchecked: frozenset[type]
    valid: Valid
    check: Check
    #: Every Python type the node accepts (some after a closer look).
    allowed: frozenset[type]

    @property
    def shallow(self) -> bool:
        """Whether a value's type alone says it fits."""
        return self.unchecked == self.allowed


def compile_check(node: Mapping[str, t.Any]) -> Compiled | None:
    """A schema node's checks; None when the node accepts any JSON value."""
    raw = node.get("type")
    kinds = {raw} if isinstance(raw, str) else set(raw or ())
    if not kinds or kinds >= set(_JSON_TYPES):
        return None
    allowed = frozenset(tp for kind in kinds for tp in _JSON_TYPES[kind])
    expected = " or ".join(sorted(kinds))
    props: list[tuple[str, Compiled]] = []
    if "object" in kinds:
        for name, sub in (node.get("properties") or {}).items():
            compiled = compile_check(sub)
            if compiled is not None:
                props.append((name, compiled))
    item: Compiled | None = None
    if "array" in kinds and isinstance(node.get("items"), dict):
        item = compile_check(node["items"])
    nullable = "null" in kinds
    unchecked = allowed - {float} - ({dict} if props else set()) - ({list} if item else set())
    # Properties whose values only need a type lookup, and those that need more.
    simple = [(name, sub.allowed) for name, sub in props if sub.shallow]
    deep = [(name, sub.valid) for name, sub in props if not sub.shallow]
    item_types = item.allowed if item is not None and item.shallow else None
    item_valid = item.valid if item is not None else None

    def valid(value: t.Any) -> bool:
        kind = type(value)
        if kind in unchecked:
            return True
        if kind not in allowed:
            return False
        if kind is dict:
            for name, types in simple:
                if name in value and type(value[name]) not in types:
                    return False
            for name, sub_valid in deep:
                if name in value and not sub_valid(value[name]):
                    return False
            return True
        if kind is list:
            # Loops, not all(generator): this runs for every record and is twice as fast.
            if item_types is not None:
                for v in value:  # noqa: SIM110
                    if type(v) not in item_types:
                        return False
                return True
            assert item_valid is not None
            for v in value:  # noqa: SIM110
                if not item_valid(v):
                    return False
            return True
        return math.isfinite(value)  # a float

    def check(value: t.Any, path: str, nulled: list[WrongType]) -> t.Any:
        kind = type(value)
        try:
            if kind in allowed:
                if kind is dict and props:
                    for name, sub in props:
                        if name in value:
                            value[name] = sub.check(value[name], f"{path}.{name}", nulled)
                elif kind is list and item is not None:
                    value[:] = [item.check(v, f"{path}[{i}]", nulled) for i, v in enumerate(value)]
                elif kind is float and not math.isfinite(value):
                    raise WrongType(path, value, f"{expected} (a number beyond a double)")
                return value
            converted = _convert(value, kinds)
            if converted is None:
                raise WrongType(path, value, expected)
            return converted
        except WrongType as wrong:
            if not nullable:
                raise
            wrong.nulled_at = path
            nulled.append(wrong)
            return None

    return Compiled(unchecked, valid, check, allowed)


def _convert(value: object, kinds: set[str]) -> object | None:
    """The value converted without loss to one of the schema's types, or None."""
    if type(value) is int or (isinstance(value, float) and math.isfinite(value)):
        if "string" in kinds:
            return str(value)
        if "integer" in kinds and isinstance(value, float) and value.is_integer():
            return int(value)
    return None


class Shaper:
    """Puts API records in one stream's schema shape and types, warning about what it changes.

    Every schema key is present (null when the API sent none), keys the schema does not
    know are dropped (one warning per key), timestamps become UTC ISO-8601, and values of
    the wrong type are converted when lossless or become null: both with a warning (the
    first few per field and stream, then a note that the rest are not logged).
    """

    #: Warnings logged per stream and field before the rest are only counted.
    WARNINGS_PER_FIELD = 20

    def __init__(
        self,
        stream: str,
        properties: Mapping[str, t.Any],
        datetime_fields: Iterable[str],
        *,
        expected_extra: Iterable[str] = (),
        unchecked: Iterable[str] = (),
        warn: Callable[..., None],
    ) -> None:
        self.stream = stream
        self.fields = tuple(properties)
        self.datetime_fields = tuple(
            dict.fromkeys(
                [
                    *datetime_fields,
                    *(k for k, v in properties.items() if v.get("format") == "date-time"),
                ]
            )
        )
        self._skip = {*self.datetime_fields, *unchecked}
        self.checks: list[tuple[str, frozenset[type], Valid, Check]] = []
        compiled: dict[str, Compiled] = {}
        for name, node in properties.items():
            check = compile_check(node)
            if check is not None:
                compiled[name] = check
                if name not in self._skip:
                    self.checks.append((name, *check[:3]))
        #: Keys a record may have without a warning: the schema's, the expected extras,
        #: and unknown keys already warned about (once is enough). Grows in place: the
        #: fast path reads it too.
        self._allowed = {*self.fields, *expected_extra}
        self._template = dict.fromkeys(self.fields)  # every key, in schema order, null
        self._warn = warn
        self.warnings: Counter[str] = Counter()
        #: `shape(record)`: the fast path for records that need no change but their
        #: timestamps, falling back to `shape_in_full` for anything else.
        self.shape = self._fast_path(compiled)

    def __call__(self, record: dict[str, t.Any]) -> dict[str, t.Any]:
        return self.shape(record)

    def _fast_path(
        self, compiled: dict[str, Compiled]
    ) -> Callable[[dict[str, t.Any]], dict[str, t.Any]]:
        """A function written for this schema: every field read once, checked inline.

        It does what `shape_in_full` does for a record whose keys the schema knows, whose
        timestamps read and whose values already have their schema types, as one flat
        function (a third of the time of the general loop over fields, which every record
        of a run takes otherwise). Anything else (a key to drop, a value to convert or
        null, a warning to give) goes to `shape_in_full`, which says what it changed.
        """
        names: dict[str, t.Any] = {"allowed": self._allowed, "full": self.shape_in_full}
        names["utc_iso"] = utc_iso
        lines = [
            "def shape(record):",
            "    if not allowed.issuperset(record):",
            "        return full(record)",
        ]
        lines.append("    get = record.get")
        for i, field in enumerate(self.fields):
            lines.append(f"    v{i} = get({field!r})")
            node = compiled.get(field)
            if field in self.datetime_fields:
                test = f"(v{i} := utc_iso(v{i})) is None"
            elif field in self._skip or node is None:
                continue
            elif node.shallow and len(node.allowed - {NoneType}) == 1:  # None: tested first
                (names[f"type{i}"],) = node.allowed - {NoneType}
                test = f"v{i}.__class__ is not type{i}"
            elif node.shallow:
                names[f"types{i}"] = node.allowed
                test = f"v{i}.__class__ not in types{i}"
            else:
                names[f"types{i}"], names[f"valid{i}"] = node.unchecked, node.valid
                test = f"v{i}.__class__ not in types{i} and not valid{i}(v{i})"
            lines += [f"    if v{i} is not None and {test}:", "        return full(record)"]
        items = ", ".join(f"{field!r}: v{i}" for i, field in enumerate(self.fields))
        lines.append(f"    return {{{items}}}")
        self.source = "\n".join(lines)
        exec(compile(self.source, f"<shaper of {self.stream}>", "exec"), names)
        return t.cast("Callable[[dict[str, t.Any]], dict[str, t.Any]]", names["shape"])

    def shape_in_full(self, record: dict[str, t.Any]) -> dict[str, t.Any]:
        """Shape any record, warning about each change (see the class's docstring)."""
        shaped = self._template.copy()
        shaped.update(record)  # schema keys keep their place; others are appended
        if len(shaped) != len(self._template):  # keys outside the schema: dropped
            if not record.keys() <= self._allowed:  # a subset test, no set built
                unknown = record.keys() - self._allowed
                self._allowed.update(unknown)
                self._warn(
                    "Stream %s: the API sent fields the schema does not have, dropped: %s",
                    self.stream,
                    ", ".join(sorted(unknown)),
                )
            shaped = {name: shaped[name] for name in self.fields}
        for name in self.datetime_fields:
            value = shaped.get(name)
            if value is not None:
                shaped[name] = utc_iso(value)
                if shaped[name] is None:
                    self.warning(
                        name,
                        "Field %s of a %s record is not a timestamp (%r): emitted as null",
                        name,
                        self.stream,
                        str(value)[:40],
                    )
        for name, unchecked, valid, check in self.checks:
            value = shaped[name]
            if type(value) in unchecked or value is None or valid(value):
                continue
            nulled: list[WrongType] = []
            try:
                shaped[name] = new = check(value, name, nulled)
            except WrongType as error:  # a field that may not be null: null all the same
                shaped[name] = new = None
                error.nulled_at = name
                nulled.append(error)
            if nulled:
                for wrong in nulled:
                    self.warning(
                        name,
                        "Stream %s, field %s: %s; %s emitted as null (a wrong type that "
                        "cannot be converted without loss)",
                        self.stream,
                        wrong.path,
                        wrong,
                        wrong.nulled_at,
                    )
            elif type(new) is not type(value):
                self.warning(
                    name,
                    "Stream %s, field %s: %r converted to %r to match the schema",
                    self.stream,
                    name,
                    value,
                    new,
                )
        return shaped

    def warning(self, field: str, message: str, *args: t.Any) -> None:
        """Log a warning about one field: the first few per field, then a note."""
        self.warnings[field] += 1
        count = self.warnings[field]
        if count <= self.WARNINGS_PER_FIELD:
            self._warn(message, *args)
        if count == self.WARNINGS_PER_FIELD:
            self._warn(
                "Stream %s, field %s: %d warnings; further ones about this field are not logged",
                self.stream,
                field,
                count,
            )
