"""The user CRUD API on FastAPI.

Run it under uvicorn with four worker processes sharing one ``fqdb-server``::

    fqdb-server data/app.db &
    uvicorn examples.fastapi_app:app --workers 4 --port 8000

Each worker opens the database in the app's lifespan (``fastapi_lifespan``);
where the database is comes from ``FQDB_PATH``, ``FQDB_MODE`` and
``FQDB_FILELOCK``. Bodies are read as raw JSON and checked against the model
(:func:`fastquartdb.integrations.validate_row`), so the three example apps
answer bad input with the same 400 and message; the routes are in
:mod:`examples.users`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from examples import users
from fastquartdb import FQDBError
from fastquartdb.integrations import error_body, fastapi_lifespan, http_status_for

app = FastAPI(title="FastQuartDB users", lifespan=fastapi_lifespan())


@app.exception_handler(FQDBError)
async def database_error(request: Request, exc: FQDBError) -> JSONResponse:
    return JSONResponse(error_body(exc), status_code=http_status_for(exc))


@app.post("/users", status_code=201)
async def create_user(request: Request) -> Any:
    return await users.create(await request.body())


@app.get("/users")
async def list_users(request: Request) -> Any:
    return await users.list_(request.query_params)


# ``:int`` makes /users/abc a 404, as in the other two apps, instead of a validation error.
@app.get("/users/{user_id:int}")
async def get_user(user_id: int) -> Any:
    row = await users.get(user_id)
    return row if row is not None else JSONResponse(users.not_found(user_id), status_code=404)


@app.patch("/users/{user_id:int}")
async def update_user(user_id: int, request: Request) -> Any:
    row = await users.update(user_id, await request.body())
    return row if row is not None else JSONResponse(users.not_found(user_id), status_code=404)


@app.delete("/users/{user_id:int}", status_code=204)
async def delete_user(user_id: int) -> Response:
    if await users.delete(user_id):
        return Response(status_code=204)
    return JSONResponse(users.not_found(user_id), status_code=404)


if __name__ == "__main__":  # one process, for development: python -m examples.fastapi_app
    import uvicorn

    uvicorn.run(app, port=8000)
