"""The product README's flow, verbatim, with an assertion on every result."""

from __future__ import annotations

import json

from fastquartdb import AsyncDatabaseManager, BaseModel, Column

from .conftest import serving


async def test_readme_flow(tmp_path, monkeypatch, transport: str) -> None:
    class User(BaseModel):
        id = Column("INTEGER", primary_key=True)
        username = Column("TEXT", nullable=False)
        age = Column("INTEGER")

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()  # a daemon creates the file, never its directory
    async with serving(transport, "data/mydb.sqlite"):
        await _readme_steps(User, transport, tmp_path)


async def _readme_steps(User, transport, tmp_path) -> None:
    await AsyncDatabaseManager.init_engine("data/mydb.sqlite", use_filelock=True, mode=transport)
    db = AsyncDatabaseManager.get()
    assert db.mode == transport
    assert db.path == str(tmp_path / "data" / "mydb.sqlite")

    assert await User.insert({"username": "Alice", "age": 30}) == 1
    assert await User.insert({"username": "Kid", "age": 12}) == 2
    users = await User.fetch(filters={"age": [(">", 20), ("<", 40)]}, columns=["id", "username"])
    assert users == [{"id": 1, "username": "Alice"}]
    assert await User.update(data={"age": 31}, filters={"username": [("=", "Alice")]}) == 1
    assert await User.delete(filters={"age": [("<", 18)]}) == 1

    rows = await User.fetch()
    assert rows == [{"id": 1, "username": "Alice", "age": 31}]
    # Rows are plain dicts a Quart route can jsonify as they are.
    assert json.loads(json.dumps(rows)) == rows
    await AsyncDatabaseManager.close()
