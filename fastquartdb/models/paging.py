"""Paging for models: ``iterate`` (keyset batches) and ``fetch_page`` (page cursors).

Owns keyset pagination on the primary key (or on one column, ties broken by the
key): the ``where`` that continues after the last row seen, and the opaque page
cursor (the last row's order value and key as URL-safe base64 JSON, bytes as
``{"$b": ...}``) that ``fetch_page`` hands out and takes back. Each batch or page
is its own short read, so nothing is held between them.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncGenerator, Iterable
from typing import TYPE_CHECKING, Any

from ..protocol.errors import ValidationError, brief
from .requests import Row

if TYPE_CHECKING:
    from .model import BaseModel

__all__ = ["decode_cursor", "encode_cursor", "fetch_page", "iterate_rows"]


async def iterate_rows(
    model: type[BaseModel[Any]], filters: Any, batch_size: int, columns: Iterable[str] | None
) -> AsyncGenerator[Row, None]:
    """The rows of :meth:`BaseModel.iterate`, batch by batch (see its docstring)."""
    key = model._key()
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValidationError(f"batch_size must be a positive integer, got {brief(batch_size)}")
    wanted = None if columns is None else model._names(model.__columns__, columns)
    fetched = None if wanted is None else ([*wanted, key] if key not in wanted else wanted)
    base = model._where(filters) or [[]]
    last: Any = None
    while True:
        request, scope = model._select(None, fetched, [key], batch_size, None)
        if last is not None:
            request["where"] = [[*group, [key, ">", last]] for group in base]
        elif base != [[]]:
            request["where"] = base
        rows = model._rows(await model._request(request), scope)
        if not rows:
            return
        last = model.__columns__[key].to_db(rows[-1][key])
        for row in rows:
            if wanted is not None and key not in wanted:
                del row[key]
            yield row
        if len(rows) < batch_size:
            return


async def fetch_page(
    model: type[BaseModel[Any]],
    after: str | None = None,
    order_by: str | None = None,
    size: int = 50,
    filters: Any = None,
    columns: Iterable[str] | None = None,
) -> dict[str, Any]:
    """One page of :meth:`BaseModel.fetch_page` (see its docstring)."""
    key = model._key()
    order = order_by or key
    desc = order.startswith("-")
    column = order.lstrip("+-")
    model._column(column)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValidationError(f"size must be a positive integer, got {brief(size)}")
    sort = [order] if column == key else [order, ("-" if desc else "") + key]
    wanted = None if columns is None else model._names(model.__columns__, columns)
    fetched = None if wanted is None else list(dict.fromkeys([*wanted, column, key]))
    request, scope = model._select(filters, fetched, sort, size + 1, None)
    if after is not None:
        value, last_key = decode_cursor(after)
        cmp = "<" if desc else ">"
        if column == key:
            keyset = [[[key, cmp, last_key]]]
        else:
            keyset = [[[column, cmp, value]], [[column, "=", value], [key, cmp, last_key]]]
        base = request.get("where") or [[]]
        request["where"] = [[*group, *extra] for group in base for extra in keyset]
    rows = model._rows(await model._request(request), scope)
    more = len(rows) > size
    rows = rows[:size]
    cursor = None
    if more and rows:
        last = rows[-1]
        cursor = encode_cursor(
            model.__columns__[column].to_db(last[column]), model.__columns__[key].to_db(last[key])
        )
    if wanted is not None:
        for row in rows:
            for extra_name in (column, key):
                if extra_name not in wanted:
                    row.pop(extra_name, None)
    return {"rows": rows, "next": cursor}


def encode_cursor(value: Any, key: Any) -> str:
    """The opaque ``next`` of a page: its last row's order value and key, base64 JSON."""
    if isinstance(value, bytes):
        value = {"$b": base64.b64encode(value).decode("ascii")}
    raw = json.dumps([value, key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii")


def decode_cursor(cursor: Any) -> tuple[Any, Any]:
    """(order value, key) from a page's ``next``; a cursor we did not make is an error."""
    try:
        value, key = json.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
    except (ValueError, TypeError, AttributeError, UnicodeError):
        raise ValidationError(
            f"invalid page cursor {brief(cursor)}: pass the 'next' of a page"
        ) from None
    if isinstance(value, dict) and "$b" in value:
        value = base64.b64decode(value["$b"])
    return value, key
