"""Filters: every whitelisted operator, the shorthand forms, OR groups, empty IN lists."""

from __future__ import annotations

from typing import Any

import pytest

from fastquartdb import AsyncDatabaseManager

from .models import User

PEOPLE = [
    {"username": "alice", "age": 30},
    {"username": "bob", "age": 25},
    {"username": "carol", "age": 35},
    {"username": "Dave", "age": 40},
    {"username": "erin", "age": None},
]


@pytest.fixture
async def people(db: AsyncDatabaseManager) -> AsyncDatabaseManager:
    assert await User.insert_many(PEOPLE) == len(PEOPLE)
    return db


async def names(filters: Any) -> list[str]:
    rows = await User.fetch(filters=filters, columns=["username"], order_by="id")
    count = await User.count(filters)
    assert count == len(rows), "count and fetch disagree on the same filter"
    return [r["username"] for r in rows]


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("=", 30, ["alice"]),
        ("==", 30, ["alice"]),
        ("!=", 30, ["bob", "carol", "Dave"]),
        ("<>", 30, ["bob", "carol", "Dave"]),
        ("<", 30, ["bob"]),
        ("<=", 30, ["alice", "bob"]),
        (">", 30, ["carol", "Dave"]),
        (">=", 30, ["alice", "carol", "Dave"]),
        ("IN", [25, 40, 99], ["bob", "Dave"]),
        ("IN", (35,), ["carol"]),
        ("NOT IN", [25, 40], ["alice", "carol"]),
        ("BETWEEN", (30, 35), ["alice", "carol"]),
        ("BETWEEN", [26, 29], []),
        ("IS", None, ["erin"]),
        ("IS NOT", None, ["alice", "bob", "carol", "Dave"]),
        ("IS", 25, ["bob"]),
        ("IS NOT", 25, ["alice", "carol", "Dave", "erin"]),
    ],
)
async def test_age_operators(people: Any, op: str, value: Any, expected: list[str]) -> None:
    assert await names({"age": [(op, value)]}) == expected


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("LIKE", "%a%", ["alice", "carol", "Dave"]),
        # LIKE is case-insensitive for ASCII in SQLite; GLOB is not.
        ("LIKE", "d%", ["Dave"]),
        ("LIKE", "_ob", ["bob"]),
        ("NOT LIKE", "%a%", ["bob", "erin"]),
        ("GLOB", "*a*", ["alice", "carol", "Dave"]),
        ("GLOB", "d*", []),
        ("GLOB", "[A-Z]*", ["Dave"]),
        ("=", "bob", ["bob"]),
        (">", "c", ["carol", "erin"]),
    ],
)
async def test_text_operators(people: Any, op: str, value: Any, expected: list[str]) -> None:
    assert await names({"username": [(op, value)]}) == expected


@pytest.mark.parametrize(
    "op",
    ["like", "Like", "not like", "NOT  LIKE", " not\tlike ", "glob", "in", "not  in", "is not"],
)
async def test_operators_are_case_and_space_insensitive(people: Any, op: str) -> None:
    values = {
        "LIKE": ("%o%", ["bob", "carol"]),
        "NOT LIKE": ("%o%", ["alice", "Dave", "erin"]),
        "GLOB": ("*o*", ["bob", "carol"]),
        "IN": (["bob", "erin"], ["bob", "erin"]),
        "NOT IN": (["bob", "erin"], ["alice", "carol", "Dave"]),
        "IS NOT": ("bob", ["alice", "carol", "Dave", "erin"]),
    }
    value, expected = values[" ".join(op.upper().split())]
    assert await names({"username": [(op, value)]}) == expected


async def test_conditions_on_one_column_are_anded(people: Any) -> None:
    assert await names({"age": [(">", 20), ("<", 40)]}) == ["alice", "bob", "carol"]
    assert await names({"age": [(">=", 30), ("!=", 35), ("<", 100)]}) == ["alice", "Dave"]
    assert await names({"age": [(">", 30), ("<", 30)]}) == []


async def test_conditions_on_several_columns_are_anded(people: Any) -> None:
    assert await names({"age": [(">", 20)], "username": [("LIKE", "%o%")]}) == ["bob", "carol"]
    assert await names({"age": 25, "username": "alice"}) == []


async def test_conditions_as_lists_not_tuples(people: Any) -> None:
    # Filters that went through JSON arrive as lists.
    assert await names({"age": [[">", 20], ["<", 31]]}) == ["alice", "bob"]
    assert await names({"age": [">", 34]}) == ["carol", "Dave"]


async def test_shorthand_value_means_equals(people: Any) -> None:
    assert await names({"age": 35}) == ["carol"]
    assert await names({"username": "Dave"}) == ["Dave"]
    assert await names({"username": "dave"}) == []  # = is exact


async def test_shorthand_none_means_is_null(people: Any) -> None:
    assert await names({"age": None}) == ["erin"]
    assert await names({"age": ("=", None)}) == ["erin"]
    assert await names({"age": ("!=", None)}) == ["alice", "bob", "carol", "Dave"]


async def test_single_tuple_form(people: Any) -> None:
    assert await names({"age": (">", 30)}) == ["carol", "Dave"]
    assert await names({"age": ("BETWEEN", (25, 30))}) == ["alice", "bob"]
    assert await names({"age": ("in", [30, 40])}) == ["alice", "Dave"]


async def test_list_of_groups_is_or(people: Any) -> None:
    assert await names([{"age": 30}, {"username": "bob"}]) == ["alice", "bob"]
    assert await names([{"age": [(">", 34)], "username": [("LIKE", "c%")]}, {"age": None}]) == [
        "carol",
        "erin",
    ]
    # Overlapping groups give each row once.
    assert await names([{"age": [(">", 20)]}, {"age": [(">", 30)]}]) == [
        "alice",
        "bob",
        "carol",
        "Dave",
    ]
    assert await names([{"age": 1}, {"age": 2}]) == []
    assert await names(({"age": 25}, {"age": 35})) == ["bob", "carol"]


async def test_or_groups_in_update_and_delete(people: Any) -> None:
    assert await User.update({"age": 0}, [{"username": "alice"}, {"username": "bob"}]) == 2
    assert await names({"age": 0}) == ["alice", "bob"]
    assert await User.delete([{"age": 0}, {"age": None}]) == 3
    assert await names(None) == ["carol", "Dave"]


async def test_in_empty_list_matches_nothing(people: Any) -> None:
    assert await names({"age": [("IN", [])]}) == []
    assert await names({"username": ("IN", ())}) == []
    assert await User.update({"age": 1}, {"age": [("IN", [])]}) == 0
    assert await User.delete({"age": [("IN", [])]}) == 0
    assert await User.count() == len(PEOPLE)


async def test_not_in_empty_list_matches_everything(people: Any) -> None:
    # Every row, NULLs included: nothing is in an empty set.
    assert await names({"age": [("NOT IN", [])]}) == [p["username"] for p in PEOPLE]
    assert await User.count({"username": ("not in", [])}) == len(PEOPLE)


async def test_empty_in_combined_with_other_conditions(people: Any) -> None:
    assert await names([{"age": ("IN", [])}, {"username": "bob"}]) == ["bob"]
    assert await names({"age": [("NOT IN", []), (">", 30)]}) == ["carol", "Dave"]


async def test_in_with_none_member(people: Any) -> None:
    # SQL: NULL IN (...) is never true; the non-null members still match.
    assert await names({"age": ("IN", [None, 30])}) == ["alice"]


async def test_values_with_sql_wildcards_are_data(people: Any) -> None:
    await User.insert({"username": "100%_sure", "age": 1})
    assert await names({"username": "100%_sure"}) == ["100%_sure"]
    assert await names({"username": ("=", "%")}) == []


async def test_filter_on_primary_key(people: Any) -> None:
    assert await names({"id": ("IN", [1, 3])}) == ["alice", "carol"]
    assert await names({"id": 2}) == ["bob"]
