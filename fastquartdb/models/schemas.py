"""Pydantic schemas derived from a model's columns: ``User.schema("create" | "update" | "read")``.

For FastAPI users: the returned classes are ordinary pydantic v2 models, so they
work as a request body type and as ``response_model``, and the OpenAPI document
lists each column with its type. pydantic is an optional extra
(``pip install 'fastquartdb[schemas]'``); nothing else in the package imports it.

What each kind holds:

========  ==========================================================================
kind      fields
========  ==========================================================================
create    every column except an automatic rowid (a lone INTEGER primary key): NOT
          NULL columns without a default are required, others take the column's
          default (a callable default becomes ``default_factory``) or None; unknown
          fields are refused.
update    the same columns, every one optional (default None, meaning "not sent":
          dump with ``exclude_unset=True``); a NOT NULL column refuses an explicit
          ``null``; unknown fields are refused.
read      every column, as a row comes back from ``fetch``; nullable columns may
          be missing (``fetch(columns=...)``), extra keys (joins) are ignored.
========  ==========================================================================

Types follow the column's own checks, so a body pydantic accepts is one the
model accepts: INTEGER, TEXT and REAL are strict (``"30"`` is not an integer,
``true`` is not a number), BOOLEAN takes ``true``/``false``, DATE and DATETIME
take ISO 8601 strings, JSON takes any JSON value, and BLOB travels as base64
text (as in ``BaseModel.json``) and is bytes once validated.

Example::

    UserCreate = User.schema("create")

    @app.post("/users", response_model=User.schema("read"), status_code=201)
    async def create_user(body: UserCreate):
        user_id = await User.insert(body.model_dump())
        return await User.fetch_one({"id": user_id})
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from typing import TYPE_CHECKING, Annotated, Any

from ..protocol.errors import InterfaceError, ValidationError
from .columns import Column

if TYPE_CHECKING:
    import pydantic

    from .model import BaseModel

__all__ = ["KINDS", "model_schema"]

#: The kinds ``schema()`` builds.
KINDS = ("create", "update", "read")

_INSTALL = "pip install 'fastquartdb[schemas]'"


def model_schema(model: type[BaseModel[Any]], kind: str) -> type[pydantic.BaseModel]:
    """The pydantic model of ``kind`` for ``model``, built once and then cached.

    Raises:
        ValidationError: ``kind`` is not one of create, update, read.
        InterfaceError: pydantic v2 is not installed (the message says how to install it).
    """
    if kind not in KINDS:
        raise ValidationError(
            f"unknown schema kind {kind!r} for {model.__name__} (kinds: {', '.join(KINDS)})"
        )
    schema = _CACHE.get((model, kind))
    if schema is None:
        # Two threads may both build it; either result is equivalent, one is kept.
        schema = _CACHE.setdefault((model, kind), _build(model, kind))
    return schema


#: (model, kind) -> its schema: built once, so FastAPI and OpenAPI see one class per kind.
_CACHE: dict[tuple[type, str], type[pydantic.BaseModel]] = {}


def _build(model: type[BaseModel[Any]], kind: str) -> type[pydantic.BaseModel]:
    pd = _pydantic()
    fields: dict[str, Any] = {}
    rowid = _auto_rowid(model)
    for name, column in model.__columns__.items():
        if kind != "read" and name == rowid:
            continue  # assigned by SQLite on insert, never changed: read-only
        fields[name] = _field(pd, column, kind)
    config = pd.ConfigDict(extra="ignore" if kind == "read" else "forbid")
    schema: type[pydantic.BaseModel] = pd.create_model(
        f"{model.__name__}{kind.capitalize()}",
        __config__=config,
        __doc__=f"{kind.capitalize()} schema of table {model.__tablename__!r} ({model.__name__}).",
        __module__=model.__module__,
        **fields,
    )
    return schema


def _pydantic() -> Any:
    try:
        import pydantic
    except ImportError:
        raise InterfaceError(
            f"schema() needs pydantic v2, which is not installed: {_INSTALL}"
        ) from None
    if not pydantic.VERSION.startswith("2."):
        raise InterfaceError(f"schema() needs pydantic v2, found {pydantic.VERSION}: {_INSTALL}")
    return pydantic


def _auto_rowid(model: type[BaseModel[Any]]) -> str | None:
    """The column SQLite numbers by itself on insert (a lone INTEGER primary key), if any."""
    pk = model.__pk__
    if len(pk) == 1 and model.__columns__[pk[0]].sql_type.declared == "INTEGER":
        return pk[0]
    return None


def _field(pydantic: Any, column: Column, kind: str) -> tuple[Any, Any]:
    """(annotation, FieldInfo) of ``column`` in a schema of ``kind``."""
    value_type = _value_type(pydantic, column)
    nullable = column.nullable and not column.primary_key
    annotation = value_type | None if nullable else value_type
    if kind == "update" or (kind == "read" and nullable):
        # Not validated: None here means "not sent", while an explicit null sent to a
        # NOT NULL column is refused by the annotation.
        return annotation, pydantic.Field(default=None)
    if kind == "read":
        return annotation, pydantic.Field()
    default = column.default
    if callable(default):
        return annotation, pydantic.Field(default_factory=default)
    if default is not None:
        return annotation, pydantic.Field(default=default)
    if nullable:
        return annotation, pydantic.Field(default=None)
    return annotation, pydantic.Field()


def _value_type(pydantic: Any, column: Column) -> Any:
    """The pydantic type of a non-null value of ``column`` (the column's own rules)."""
    kind = column.kind
    if kind == "bool":
        return pydantic.StrictBool
    if kind == "date":
        return dt.date
    if kind == "datetime":
        return dt.datetime
    if kind == "json":
        return pydantic.JsonValue
    affinity = column.sql_type.affinity
    if affinity == "INTEGER":
        return pydantic.StrictInt
    if affinity == "TEXT":
        return pydantic.StrictStr
    if affinity == "REAL":
        return Annotated[float, pydantic.Strict()]  # takes ints too, never strings or bools
    if affinity == "BLOB":
        return _blob_type(pydantic)
    return pydantic.StrictInt | pydantic.StrictFloat | pydantic.StrictStr  # NUMERIC


def _blob_type(pydantic: Any) -> Any:
    """bytes that travel as standard base64 text in JSON, as ``BaseModel.json`` writes them."""
    return Annotated[
        bytes,
        pydantic.BeforeValidator(_from_base64),
        # JSON only: model_dump() keeps the bytes, ready for insert().
        pydantic.PlainSerializer(_to_base64, return_type=str, when_used="json"),
        pydantic.WithJsonSchema({"type": "string", "format": "base64"}),
    ]


def _from_base64(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("a BLOB travels as standard base64 text") from None
    return value


def _to_base64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")
