"""Model instances: a row as an object (active record) and JSON.

Owns the ``ModelInstance`` mixin of ``BaseModel``: ``User(username=...)`` checked
against the columns, ``repr``/``==``, ``to_dict``, ``save`` (insert, or upsert by
primary key) and ``delete_instance``, and ``json`` for an instance or for rows
(dates as ISO 8601, bytes as base64, decimals as strings).
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import functools
import json
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from ..protocol.errors import ValidationError
from .requests import ModelRequests, Row

if TYPE_CHECKING:
    from .model import BaseModel

__all__ = ["ModelInstance"]

T = TypeVar("T")


class _instance_or_class(Generic[T]):
    """A method bound to the instance when called on one, to the class otherwise."""

    def __init__(self, func: Callable[..., T]) -> None:
        self.func = func
        functools.update_wrapper(self, func)  # type: ignore[arg-type]

    def __get__(self, instance: object, owner: type) -> Callable[..., T]:
        return functools.partial(self.func, owner if instance is None else instance)


class ModelInstance(ModelRequests):
    """Instance methods of ``BaseModel``: a row as an object, saved and deleted by its key."""

    def __init__(self, **values: Any) -> None:
        """A row as an object: ``User(username="alice", age=30)``; unknown names are an error."""
        for name, value in values.items():
            self._column(name)
            setattr(self, name, value)

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__columns__)
        return f"{type(self).__name__}({shown})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def to_dict(self) -> Row:
        """The instance's column values (Python types: dates stay dates)."""
        return {name: getattr(self, name) for name in self.__columns__}

    @_instance_or_class
    def json(target: Any, rows: Iterable[Any] | None = None, **kwargs: Any) -> str:
        """JSON text: ``user.json()`` for one instance, ``User.json(rows)`` for rows or instances.

        Dates and datetimes become ISO 8601 strings, bytes base64, JSON columns stay structured.
        """
        if isinstance(target, type):
            if rows is None:
                raise ValidationError(f"{target.__name__}.json(rows) needs the rows to serialize")
            data: Any = [r.to_dict() if isinstance(r, ModelInstance) else dict(r) for r in rows]
        else:
            data = target.to_dict()
        return json.dumps(data, default=_json_default, **kwargs)

    def _pk_filters(self) -> dict[str, Any]:
        if not self.__pk__:
            raise ValidationError(f"{type(self).__name__} has no primary key to find this row by")
        values = {name: getattr(self, name) for name in self.__pk__}
        if any(v is None for v in values.values()):
            raise ValidationError(f"this {type(self).__name__} has no primary key value yet")
        return values

    async def save(self, *, idempotency_key: str | None = None) -> Any:
        """Insert the instance, or update its row if its primary key is set; returns the key."""
        values = {n: getattr(self, n) for n in self.__columns__ if n in self.__dict__}
        pk = self.__pk__
        if not pk or any(values.get(name) is None for name in pk):
            for name in pk:
                values.pop(name, None)
            key = await _model(self).insert(values, idempotency_key=idempotency_key)
            if len(pk) == 1:
                setattr(self, pk[0], key)
            return key
        if set(values) == set(pk):
            return pk[0] if len(pk) == 1 else [values[n] for n in pk]
        return await _model(self).upsert(values, conflict=list(pk), idempotency_key=idempotency_key)

    async def delete_instance(self, *, idempotency_key: str | None = None) -> int:
        """Delete this instance's row (by primary key); returns rows deleted (0 or 1)."""
        return await _model(self).delete(self._pk_filters(), idempotency_key=idempotency_key)


def _model(instance: ModelInstance) -> type[BaseModel[Any]]:
    """The model class of ``instance``, typed as one (every instance is a model's)."""
    return cast("type[BaseModel[Any]]", type(instance))


def _json_default(value: Any) -> Any:
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, decimal.Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
