"""Misuses of typed rows that ``mypy --strict`` must reject (see test_typed_rows.py).

Each line marked ``# error: <code>`` must draw exactly that mypy error code.
"""

from __future__ import annotations

from examples.typed_rows import User


async def misuse() -> None:
    row = await User.fetch_one()
    if row is None:
        return
    row["agee"]  # error: typeddict-item
    name: int = row["username"]  # error: assignment
    age: int = row["age"]  # error: assignment
    rows = await User.fetch()
    rows[0]["id"].upper()  # error: attr-defined
    print(name, age)
