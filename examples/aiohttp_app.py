"""The user CRUD API on aiohttp.

Run it under gunicorn with four worker processes sharing one ``fqdb-server``::

    fqdb-server data/app.db &
    gunicorn examples.aiohttp_app:app -k aiohttp.GunicornWebWorker -w 4 -b 127.0.0.1:8000

Each worker opens the database in ``on_startup`` and closes it in
``on_cleanup`` (``aiohttp_lifecycle``); where the database is comes from
``FQDB_PATH``, ``FQDB_MODE`` and ``FQDB_FILELOCK``. The routes are in
:mod:`examples.users`.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from examples import users
from fastquartdb import FQDBError
from fastquartdb.integrations import (
    aiohttp_lifecycle,
    error_body,
    http_status_for,
    idempotency_key_from,
)

routes = web.RouteTableDef()


@web.middleware
async def database_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except FQDBError as exc:
        return web.json_response(error_body(exc), status=http_status_for(exc))


def _user_id(request: web.Request) -> int:
    return int(request.match_info["user_id"])  # the route only matches digits


@routes.post("/users")
async def create_user(request: web.Request) -> web.Response:
    key = idempotency_key_from(request)
    return web.json_response(await users.create(await request.read(), key), status=201)


@routes.get("/users")
async def list_users(request: web.Request) -> web.Response:
    return web.json_response(await users.list_(request.query))


@routes.get(r"/users/{user_id:\d+}")
async def get_user(request: web.Request) -> web.Response:
    user_id = _user_id(request)
    row = await users.get(user_id)
    if row is None:
        return web.json_response(users.not_found(user_id), status=404)
    return web.json_response(row)


@routes.patch(r"/users/{user_id:\d+}")
async def update_user(request: web.Request) -> web.Response:
    user_id = _user_id(request)
    row = await users.update(user_id, await request.read())
    if row is None:
        return web.json_response(users.not_found(user_id), status=404)
    return web.json_response(row)


@routes.delete(r"/users/{user_id:\d+}")
async def delete_user(request: web.Request) -> web.Response:
    user_id = _user_id(request)
    if await users.delete(user_id):
        return web.Response(status=204)
    return web.json_response(users.not_found(user_id), status=404)


def create_app() -> web.Application:
    """The application: routes, the error middleware, and the database lifecycle."""
    app = web.Application(middlewares=[database_errors])
    app.add_routes(routes)
    return aiohttp_lifecycle(app)


app = create_app()

if __name__ == "__main__":  # one process, for development: python -m examples.aiohttp_app
    web.run_app(app, port=8000)
