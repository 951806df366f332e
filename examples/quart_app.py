"""The user CRUD API on Quart.

Run it under hypercorn with four worker processes sharing one ``fqdb-server``::

    fqdb-server data/app.db &
    hypercorn examples.quart_app:app -w 4 -b 127.0.0.1:8000

Each worker opens the database in ``before_serving`` and closes it in
``after_serving`` (``quart_lifecycle``); where the database is comes from
``FQDB_PATH``, ``FQDB_MODE`` and ``FQDB_FILELOCK``. The routes are in
:mod:`examples.users`.
"""

from __future__ import annotations

from typing import Any

from quart import Quart, request

from examples import users
from fastquartdb import FQDBError
from fastquartdb.integrations import (
    error_body,
    http_status_for,
    idempotency_key_from,
    quart_lifecycle,
)

app = quart_lifecycle(Quart(__name__))

Reply = tuple[Any, int]


@app.errorhandler(FQDBError)
async def database_error(exc: FQDBError) -> Reply:
    return error_body(exc), http_status_for(exc)


@app.post("/users")
async def create_user() -> Reply:
    key = idempotency_key_from(request)
    return await users.create(await request.get_data(), key), 201


@app.get("/users")
async def list_users() -> Reply:
    return await users.list_(request.args), 200


@app.get("/users/<int:user_id>")
async def get_user(user_id: int) -> Reply:
    row = await users.get(user_id)
    return (row, 200) if row is not None else (users.not_found(user_id), 404)


@app.patch("/users/<int:user_id>")
async def update_user(user_id: int) -> Reply:
    row = await users.update(user_id, await request.get_data())
    return (row, 200) if row is not None else (users.not_found(user_id), 404)


@app.delete("/users/<int:user_id>")
async def delete_user(user_id: int) -> Reply:
    if await users.delete(user_id):
        return "", 204
    return users.not_found(user_id), 404


if __name__ == "__main__":  # one process, for development: python -m examples.quart_app
    app.run(port=8000)
