"""Filter checking (models/filters.py): the one-column fast path answers as the general path."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest

from fastquartdb import BaseModel, Column
from fastquartdb.models.filters import normalize_filters
from fastquartdb.protocol.errors import ValidationError


class Thing(BaseModel):
    __tablename__ = "filters_thing"
    id = Column("INTEGER", primary_key=True)
    name = Column("TEXT")
    score = Column("REAL")
    blob = Column("BLOB")
    flag = Column("BOOLEAN")


def _outcome(filters: Any) -> Any:
    try:
        return normalize_filters(Thing.__columns__, Thing.__tablename__, filters)
    except ValidationError as exc:
        return ValidationError, str(exc)


CASES = [
    {"id": 5},
    {"id": -(2**63)},
    {"id": 2**70},  # out of range for SQLite: the same refusal
    {"id": "5"},
    {"id": "five"},
    {"id": 5.0},
    {"id": True},
    {"name": "bob"},
    {"name": 7},
    {"score": 1.5},
    {"score": "x"},
    {"blob": b"\x00\x01"},
    {"flag": True},
    {"flag": 3},
    {"nope": 5},
    {7: 5},
    {"id": None},
    {"id": ("=", 5)},
    {"id": [(">", 1)]},
    {"id": [1, 2]},
]


@pytest.mark.parametrize("filters", CASES, ids=repr)
def test_one_column_fast_path_matches_the_general_path(filters: dict[Any, Any]) -> None:
    # A mapping that is not a dict never takes the fast path: it is the reference.
    assert _outcome(filters) == _outcome(MappingProxyType(filters))
