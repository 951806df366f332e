"""The example API's model and operations, shared by the Quart, FastAPI and aiohttp apps.

Everything here is plain async Python: each app only turns HTTP into these
calls and their results (or FastQuartDB errors) back into HTTP, so the three
apps behave the same, error messages included.

======  ===========  ==============================================  ===============
method  path         does                                            answers
======  ===========  ==============================================  ===============
POST    /users       create from a JSON object (Idempotency-Key)     201 + the row
GET     /users       list; ?min_age= ?max_age= ?username= ?limit=    200 + rows
GET     /users/<id>  one user                                        200 / 404
PATCH   /users/<id>  change some columns (not the id)                200 + row / 404
DELETE  /users/<id>  delete                                          204 / 404
======  ===========  ==============================================  ===============

Bad input (not JSON, an unknown column, a value of the wrong type, a bad
query parameter) raises ``ValidationError`` → 400; a constraint (NOT NULL,
a taken id) raises ``IntegrityError`` → 409; see
``fastquartdb.integrations.http_status_for``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastquartdb import BaseModel, Column, ValidationError
from fastquartdb.integrations import parse_json_object, validate_row

Row = dict[str, Any]


class User(BaseModel):
    """A user: table ``user``, created when a worker opens the database."""

    id = Column("INTEGER", primary_key=True)
    username = Column("TEXT", nullable=False)
    age = Column("INTEGER")


def not_found(user_id: int) -> dict[str, str]:
    """The body of a 404 for ``user_id``."""
    return {"error": f"no user with id {user_id}"}


def _int_param(query: Mapping[str, str], name: str) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValidationError(f"query parameter {name} must be an integer, got {raw!r}") from None


def list_query(query: Mapping[str, str]) -> tuple[dict[str, Any], int | None]:
    """Model filters and limit from ``?min_age=&max_age=&username=&limit=`` (others are ignored).

    Example::

        >>> list_query({"min_age": "18", "max_age": "30", "limit": "10"})
        ({'age': [('>=', 18), ('<=', 30)]}, 10)
    """
    filters: dict[str, Any] = {}
    age: list[tuple[str, int]] = []
    min_age = _int_param(query, "min_age")
    if min_age is not None:
        age.append((">=", min_age))
    max_age = _int_param(query, "max_age")
    if max_age is not None:
        age.append(("<=", max_age))
    if age:
        filters["age"] = age
    username = query.get("username")
    if username is not None:
        filters["username"] = username
    return filters, _int_param(query, "limit")


async def create(body: bytes | str, idempotency_key: str | None = None) -> Row:
    """Insert the user in a JSON body and return the stored row.

    With the request's ``Idempotency-Key`` (``idempotency_key_from(request)``), a client
    that sends the same POST again gets the same answer and no second user.
    """
    return await insert(validate_row(User, parse_json_object(body)), idempotency_key)


async def insert(data: Row, idempotency_key: str | None = None) -> Row:
    """Insert checked ``data`` (a JSON body, or a ``User.schema("create")`` dump); the row."""
    user_id = await User.insert(data, idempotency_key=idempotency_key)
    # The row as written: User has no column defaults, so nothing needs reading back.
    return {**dict.fromkeys(User.__columns__), **data, "id": user_id}


async def list_(query: Mapping[str, str]) -> list[Row]:
    """Users matching the query parameters, by id."""
    filters, limit = list_query(query)
    return await User.fetch(filters=filters or None, order_by="id", limit=limit)


async def get(user_id: int) -> Row | None:
    """One user, or None."""
    return await User.fetch_one({"id": user_id})


async def update(user_id: int, body: bytes | str) -> Row | None:
    """Apply a JSON body of changes; the updated row, or None when there is no such user."""
    return await change(user_id, validate_row(User, parse_json_object(body)))


async def change(user_id: int, data: Row) -> Row | None:
    """Apply checked changes (a ``User.schema("update")`` dump, ``exclude_unset=True``)."""
    if "id" in data:
        raise ValidationError("a user's id cannot be changed")
    if not await User.update(data, {"id": user_id}):
        return None
    return await User.fetch_one({"id": user_id})


async def delete(user_id: int) -> bool:
    """Delete one user; False when there was none."""
    return bool(await User.delete({"id": user_id}))
