"""Result rows to dicts (client/rows.py): the same dicts as dict(zip()), built faster."""

from __future__ import annotations

from typing import Any

import pytest

from fastquartdb.client.rows import dict_rows


@pytest.mark.parametrize(
    ("columns", "rows"),
    [
        (["id"], [(1,), (2,)]),
        (["id", "name", "age"], [(1, "a", None), [2, "b", 3]]),
        (["a", "a"], [(1, 2)]),  # a duplicate name: the later value wins, as in dict()
        ([f"c{i}" for i in range(100)], [tuple(range(100))]),  # wider than a builder
        (["k0", "v0", "rows", "build"], [(1, 2, 3, 4)]),  # names that are the builder's own
        (["x"], []),
    ],
)
def test_dict_rows_match_dict_zip(columns: list[str], rows: list[Any]) -> None:
    assert dict_rows(columns, rows) == [dict(zip(columns, row)) for row in rows]


def test_each_row_is_its_own_dict() -> None:
    out = dict_rows(["id"], [(1,), (1,)])
    out[0]["id"] = 5
    assert out[1] == {"id": 1}
