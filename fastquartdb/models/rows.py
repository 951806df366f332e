"""Typed rows for mypy users: ``class User(BaseModel[UserRow])``.

A ``TypedDict`` built at run time from the columns would be invisible to a
type checker, so the row type is one the user writes, next to the model, and
the model is generic over it::

    class UserRow(TypedDict):
        id: int
        username: str
        age: int | None

    class User(BaseModel[UserRow]):
        id = Column("INTEGER", primary_key=True)
        username = Column("TEXT", nullable=False)
        age = Column("INTEGER")

    rows = await User.fetch()          # mypy: list[UserRow]
    rows[0]["agee"]                    # mypy: error, TypedDict "UserRow" has no key "agee"

``fetch``, ``fetch_one`` and ``iterate`` are typed with it; a model without a
parameter (``class User(BaseModel)``) keeps ``dict[str, Any]`` rows. When the
class is defined, :func:`check_row_type` compares the TypedDict's keys with the
columns, so the declaration cannot drift from the table unnoticed. (Rows of
``fetch(columns=...)`` or ``join=`` hold the keys asked for, not the row type's:
type those as ``dict[str, Any]``.)
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, get_args, get_origin

from ..protocol.errors import ValidationError

if TYPE_CHECKING:
    from typing_extensions import TypeVar
elif sys.version_info >= (3, 13):
    from typing import TypeVar
else:
    from typing import TypeVar as _TypeVar

    def TypeVar(name: str, *, default: Any = None, **kwargs: Any) -> Any:
        # Before 3.13 typing.TypeVar takes no default; only type checkers use it.
        return _TypeVar(name, **kwargs)


__all__ = ["RowT", "check_row_type"]

#: The row type of a model: ``dict[str, Any]`` unless the model names a TypedDict.
RowT = TypeVar("RowT", default=dict[str, Any])


def check_row_type(model: type, base: type) -> None:
    """Check that the TypedDict ``model`` is parametrized with names exactly its columns.

    Args:
        model: the model class being defined.
        base: ``BaseModel`` (passed in: this module does not import the model module).

    Raises:
        ValidationError: the TypedDict names a key that is no column, or misses a column.
    """
    for parent in model.__dict__.get("__orig_bases__", ()):
        if get_origin(parent) is not base:
            continue
        (row_type,) = get_args(parent)
        if not hasattr(row_type, "__required_keys__"):  # typing's or typing_extensions' TypedDict
            continue  # dict[str, Any], or a type variable of a generic intermediate class
        keys = set(row_type.__required_keys__) | set(row_type.__optional_keys__)
        columns: dict[str, Any] = getattr(model, "__columns__", {})
        extra = [k for k in sorted(keys) if k not in columns]
        missing = [c for c in columns if c not in keys]
        if extra or missing:
            what = [f"declares {', '.join(map(repr, extra))}, not a column" if extra else ""]
            what += [f"lacks column(s) {', '.join(map(repr, missing))}" if missing else ""]
            raise ValidationError(
                f"{model.__name__}'s row type {row_type.__name__} "
                f"{' and '.join(w for w in what if w)}: declare one key per column "
                f"(columns: {', '.join(columns)})"
            )
