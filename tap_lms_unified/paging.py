"""How a provider pages, declared: a cursor in an envelope, or `limit`/`offset` pages.

- `CursorPaging`: each page carries the next page's cursor in its envelope (e.g.
  `data.next` or `cursor`); null ends the walk, an empty page with a cursor does not.
  Pages are fetched one after the other.
- `OffsetPaging`: a bare page of at most `limit` records at `offset`; the walk ends at the
  first short page. The offsets are known in advance, so the pages of one walk can be
  fetched concurrently (walking.py).

Both check a raw page without building its records (the walk threads only need the cursor,
or the ids); the main thread decodes each page once.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass, field

import msgspec
from singer_sdk.pagination import BaseAPIPaginator

from tap_lms_unified.errors import PaginationLoopError
from tap_lms_unified.shaping import decode_json

if t.TYPE_CHECKING:
    from collections.abc import Callable

    import requests

_DECODE = msgspec.json.Decoder()


@dataclass(frozen=True)
class Envelope:
    """Where a page's records (and next cursor) are: a path of keys into the body.

    `records=("data", "results")` reads `{"data": {"results": [...]}}`; `records=()` is a
    bare JSON array. Both paths must be present in every page (null is a value).
    """

    records: tuple[str, ...]
    cursor: tuple[str, ...] | None = None
    #: Decodes the envelope with its records skipped over (not built).
    _decoder: msgspec.json.Decoder[t.Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        paths: dict[tuple[str, ...], t.Any] = {self.records: list[msgspec.Raw]}
        if self.cursor is not None:
            paths[self.cursor] = t.Any
        object.__setattr__(self, "_decoder", msgspec.json.Decoder(_struct(paths)))

    def page(self, body: t.Any) -> tuple[list[t.Any], str | None]:
        """(records, next cursor) of a decoded page; KeyError/TypeError if not the envelope."""
        records = _get(body, self.records)
        if not isinstance(records, list):
            raise TypeError("the records are not a list")
        return records, (_cursor(_get(body, self.cursor)) if self.cursor else None)

    def check(self, content: bytes) -> str | None:
        """The next cursor of a raw page, after checking that it is the envelope.

        DecodeError if msgspec cannot read it (no JSON, or JSON msgspec refuses: then read
        it with `decode_json` and `page`); KeyError/TypeError if it is not the envelope.
        """
        try:
            decoded = self._decoder.decode(content)
        except msgspec.ValidationError as exc:
            _DECODE.decode(content)  # not for msgspec at all: DecodeError
            raise TypeError(str(exc)) from exc
        if self.cursor is None:
            return None
        value = decoded
        for key in self.cursor:
            value = getattr(value, key)
        return _cursor(value)


def _get(body: t.Any, path: tuple[str, ...]) -> t.Any:
    for key in path:
        if not isinstance(body, dict):
            raise TypeError(f"not an object where {key!r} was expected")
        body = body[key]
    return body


def _cursor(value: t.Any) -> str | None:
    return str(value) if value else None


def _struct(paths: dict[tuple[str, ...], t.Any]) -> t.Any:
    """A msgspec type reading exactly these paths (`()`: the whole body)."""
    if () in paths:
        return paths[()]
    fields: dict[str, dict[tuple[str, ...], t.Any]] = {}
    for path, kind in paths.items():
        fields.setdefault(path[0], {})[path[1:]] = kind
    return msgspec.defstruct("Envelope", [(name, _struct(rest)) for name, rest in fields.items()])


@dataclass(frozen=True)
class CursorPaging:
    """The next page's cursor comes in each page; `cursor_param` sends it back."""

    envelope: Envelope
    cursor_param: str = "cursor"
    size_param: str = "page_size"
    concurrent: t.ClassVar[bool] = False

    def token_params(self, token: str | None) -> dict[str, t.Any]:
        """The query parameters naming one page (none for the first)."""
        return {self.cursor_param: token} if token else {}


@dataclass(frozen=True)
class OffsetPaging:
    """`limit`/`offset` pages (zero-based) of a bare array; a short page is the last."""

    envelope: Envelope = Envelope(records=())
    size_param: str = "limit"
    offset_param: str = "offset"
    #: The record field whose repetition within a walk means the API ignores the offset.
    id_field: str = "id"
    concurrent: t.ClassVar[bool] = True

    def token_params(self, offset: int | None) -> dict[str, t.Any]:
        """The query parameters naming one page: its offset."""
        return {self.offset_param: offset or 0}

    def ids(self, content: bytes) -> list[t.Any]:
        """The ids of a raw page (None for a record without one, or not an object)."""
        records, _ = self.envelope.page(decode_json(content))
        return [r.get(self.id_field) if isinstance(r, dict) else None for r in records]


class CursorPaginator(BaseAPIPaginator[str | None]):
    """Follows the body's cursor until it is null; an empty page with a cursor is not the end."""

    def __init__(self, cursor_of: Callable[[requests.Response], str | None], endpoint: str) -> None:
        super().__init__(None)
        self.cursor_of = cursor_of
        self.endpoint = endpoint
        #: Every cursor this walk has sent: one coming back means a cycle (A → B → A).
        self.seen: set[str] = set()

    def get_next(self, response: requests.Response) -> str | None:
        return self.cursor_of(response)

    def continue_if_empty(self, response: requests.Response) -> bool:
        return self.get_next(response) is not None

    def advance(self, response: requests.Response) -> None:
        # Overridden to raise a clear, typed error instead of the SDK's bare RuntimeError.
        sent = self.current_value
        if sent is not None:
            self.seen.add(sent)
        following = self.get_next(response)
        if following is not None and following in self.seen:
            again = "the cursor it was sent" if following == sent else "a cursor it sent before"
            msg = (
                f"{self.endpoint} returned {again}: a pagination loop "
                f"(page {self.count + 1}). Stopping instead of fetching the same pages forever."
            )
            raise PaginationLoopError(msg)
        super().advance(response)
