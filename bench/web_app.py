"""S8/S9's plain-aiosqlite contender: the example's two routes written on aiosqlite alone.

What a careful user writes without FastQuartDB: one aiosqlite connection per
worker process (opened in ``before_serving``), WAL, ``synchronous`` as the
run asks, ``busy_timeout``, autocommit (one statement, its own transaction,
per request). ``GET /users/<id>`` answers the row or 404; ``POST /users``
inserts a JSON object and answers it with its id (201).

Run as ``hypercorn bench.web_app:app -w 4``; the file is ``FQDB_PATH``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import aiosqlite
from quart import Quart, request

app = Quart(__name__)
_state: dict[str, aiosqlite.Connection] = {}
_SELECT = 'SELECT "id", "username", "age" FROM "user" WHERE "id" = ?'
_INSERT = 'INSERT INTO "user" ("username", "age") VALUES (?, ?)'


@app.before_serving
async def open_db() -> None:
    conn = await aiosqlite.connect(os.environ["FQDB_PATH"], isolation_level=None, timeout=5.0)
    await conn.execute("PRAGMA busy_timeout = 5000")
    await conn.execute("PRAGMA journal_mode = WAL")
    await conn.execute(f"PRAGMA synchronous = {os.environ.get('FQDB_SYNCHRONOUS', 'FULL')}")
    _state["db"] = conn


@app.after_serving
async def close_db() -> None:
    await _state.pop("db").close()


@app.get("/users/<int:user_id>")
async def get_user(user_id: int) -> tuple[Any, int]:
    rows = list(await _state["db"].execute_fetchall(_SELECT, (user_id,)))
    if not rows:
        return {"error": f"no user with id {user_id}"}, 404
    uid, username, age = rows[0]
    return {"id": uid, "username": username, "age": age}, 200


@app.post("/users")
async def create_user() -> tuple[Any, int]:
    data = json.loads(await request.get_data())
    if not isinstance(data, dict) or not isinstance(data.get("username"), str):
        return {"error": "a JSON object with a username is needed"}, 400
    cursor = await _state["db"].execute(_INSERT, (data["username"], data.get("age")))
    return {"id": cursor.lastrowid, "username": data["username"], "age": data.get("age")}, 201
