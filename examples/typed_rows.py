"""Typed rows under ``mypy --strict``: the model is generic over a TypedDict you declare.

Run it (embedded, on a temporary file)::

    python -m examples.typed_rows

Check it::

    mypy --strict examples/typed_rows.py

``tests/unit/test_typed_rows.py`` runs that mypy command, and another on a file
that misuses the rows, which must fail: the row types are real to mypy.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from typing import TypedDict

from fastquartdb import AsyncDatabaseManager, BaseModel, Column


class UserRow(TypedDict):
    """A row of table ``user``: one key per column (checked when ``User`` is defined)."""

    id: int
    username: str
    age: int | None


class User(BaseModel[UserRow]):
    """``fetch``, ``fetch_one`` and ``iterate`` return ``UserRow``s."""

    id = Column("INTEGER", primary_key=True)
    username = Column("TEXT", nullable=False)
    age = Column("INTEGER")


async def adults() -> list[str]:
    """The names of users 18 and over: ``row["username"]`` is a ``str`` to mypy."""
    rows: list[UserRow] = await User.fetch(filters={"age": [(">=", 18)]}, order_by="id")
    return [row["username"] for row in rows]


async def oldest_age() -> int | None:
    """``fetch_one`` is ``UserRow | None``; ``row["age"]`` is ``int | None``."""
    row = await User.fetch_one(order_by="-age")
    return None if row is None else row["age"]


async def main() -> None:
    """Insert two users and print what the typed reads return."""
    with tempfile.TemporaryDirectory() as tmp:
        await AsyncDatabaseManager.init_engine(os.path.join(tmp, "app.db"), mode="embedded")
        try:
            await User.insert({"username": "alice", "age": 30})
            await User.insert({"username": "bob", "age": 12})
            print(await adults(), await oldest_age())
            async for row in User.iterate():
                print(row["id"], row["username"])
        finally:
            await AsyncDatabaseManager.get().close()


if __name__ == "__main__":
    asyncio.run(main())
