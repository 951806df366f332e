"""The user CRUD API on FastAPI, with request and response schemas from the model.

Run it under uvicorn with four worker processes sharing one ``fqdb-server``::

    fqdb-server data/app.db &
    uvicorn examples.fastapi_app:app --workers 4 --port 8000

Each worker opens the database in the app's lifespan (``fastapi_lifespan``);
where the database is comes from ``FQDB_PATH``, ``FQDB_MODE`` and
``FQDB_FILELOCK``. Bodies and answers are typed with the pydantic models that
``User.schema()`` derives from the columns, so ``/docs`` and ``/openapi.json``
describe every field, and a body that does not fit is answered 422 by FastAPI
before it reaches the database. What only the database can know (NOT NULL,
a taken key, an empty change) still comes back as FastQuartDB errors: 400 or
409, as in the Quart and aiohttp apps. The operations are in :mod:`examples.users`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from examples import users
from examples.users import User
from fastquartdb import FQDBError
from fastquartdb.integrations import (
    error_body,
    fastapi_lifespan,
    http_status_for,
    idempotency_key_from,
)

#: POST body: every column but the id (SQLite assigns it); unknown fields are refused.
UserCreate = User.schema("create")
#: PATCH body: the same fields, each optional.
UserUpdate = User.schema("update")
#: A row as the API returns it.
UserRead = User.schema("read")

app = FastAPI(title="FastQuartDB users", lifespan=fastapi_lifespan())


@app.exception_handler(FQDBError)
async def database_error(request: Request, exc: FQDBError) -> JSONResponse:
    return JSONResponse(error_body(exc), status_code=http_status_for(exc))


@app.post("/users", status_code=201, response_model=UserRead)
async def create_user(body: UserCreate, request: Request) -> Any:
    return await users.insert(body.model_dump(), idempotency_key_from(request))


@app.get("/users", response_model=list[UserRead])
async def list_users(request: Request) -> Any:
    return await users.list_(request.query_params)


# ``:int`` makes /users/abc a 404, as in the other two apps, instead of a validation error.
@app.get("/users/{user_id:int}", response_model=UserRead)
async def get_user(user_id: int) -> Any:
    row = await users.get(user_id)
    return row if row is not None else JSONResponse(users.not_found(user_id), status_code=404)


@app.patch("/users/{user_id:int}", response_model=UserRead)
async def update_user(user_id: int, body: UserUpdate) -> Any:
    # exclude_unset: only the fields the client sent, so PATCH {"age": 31} leaves the name be.
    row = await users.change(user_id, body.model_dump(exclude_unset=True))
    return row if row is not None else JSONResponse(users.not_found(user_id), status_code=404)


@app.delete("/users/{user_id:int}", status_code=204)
async def delete_user(user_id: int) -> Response:
    if await users.delete(user_id):
        return Response(status_code=204)
    return JSONResponse(users.not_found(user_id), status_code=404)


if __name__ == "__main__":  # one process, for development: python -m examples.fastapi_app
    import uvicorn

    uvicorn.run(app, port=8000)
