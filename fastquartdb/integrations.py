"""Wiring FastQuartDB into Quart, FastAPI (or Starlette) and aiohttp apps.

The lines every web app repeats: read where the database is from the
environment, open it when a worker starts and close it when the worker stops,
turn request bodies into checked rows, and turn FastQuartDB errors into HTTP
status codes. Nothing here imports a web framework, so none of them becomes a
dependency; each helper only calls the hooks its framework documents.

Environment (read when a worker starts, so every worker of a multi-process
server sees the same settings):

=================  ==================================================  ===============
variable           meaning                                             default
=================  ==================================================  ===============
``FQDB_PATH``      the SQLite file                                     ``data/app.db``
``FQDB_MODE``      ``auto``, ``daemon`` or ``embedded``                ``auto``
``FQDB_FILELOCK``  ``1`` runs embedded mode under ``<db>.lock``        ``0``
``FQDB_SOCKET``    the daemon's socket (default: derived from path)    unset
=================  ==================================================  ===============

Example (Quart)::

    from fastquartdb.integrations import quart_lifecycle

    app = Quart(__name__)
    quart_lifecycle(app)          # init_engine before serving, close after

Example (FastAPI)::

    app = FastAPI(lifespan=fastapi_lifespan())

Example (aiohttp)::

    app = web.Application()
    aiohttp_lifecycle(app)

Change feeds as server-sent events (:func:`sse_response`, with ``Last-Event-ID``
as the cursor: :func:`last_event_id`)::

    return await sse_response(User.changes(after=last_event_id(request, "now")), request)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from .client import AsyncDatabaseManager, Change
from .protocol.errors import (
    ChangesExpiredError,
    FQDBError,
    IdempotencyKeyError,
    IntegrityError,
    NotInitializedError,
    OperationalError,
    ProgrammingError,
    ValidationError,
    brief,
)
from .protocol.messages import check_idempotency_key

if TYPE_CHECKING:
    from .models import BaseModel

__all__ = [
    "HTTP_STATUS",
    "IDEMPOTENCY_HEADER",
    "LAST_EVENT_ID_HEADER",
    "SSE_HEARTBEAT",
    "DatabaseSettings",
    "aiohttp_lifecycle",
    "close_database",
    "database_settings_from_env",
    "error_body",
    "fastapi_lifespan",
    "http_status_for",
    "idempotency_key_from",
    "last_event_id",
    "open_database",
    "parse_json_object",
    "quart_lifecycle",
    "sse_event",
    "sse_response",
    "sse_stream",
    "validate_row",
]

log = logging.getLogger("fastquartdb.integrations")

AppT = TypeVar("AppT")

_MODES = ("auto", "daemon", "embedded")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})

#: Error class -> HTTP status, most specific first; the first ``isinstance`` match wins.
#: Anything else (a bug, or a FastQuartDB error no client can fix) is a 500.
HTTP_STATUS: tuple[tuple[type[FQDBError], int], ...] = (
    (IdempotencyKeyError, 422),
    (ValidationError, 400),
    (ProgrammingError, 400),
    (IntegrityError, 409),
    (NotInitializedError, 503),
    (OperationalError, 503),
)


# ---------------------------------------------------------------- settings


@dataclass(frozen=True)
class DatabaseSettings:
    """Where and how a web worker opens its database.

    Attributes:
        path: the SQLite file, relative to the worker's working directory or absolute.
        mode: ``"auto"`` (the daemon if one serves ``path``, else embedded),
            ``"daemon"`` (a missing daemon is an error) or ``"embedded"``.
        use_filelock: embedded mode runs every batch under a lock on ``<path>.lock``.
        socket: the daemon's socket; None for the default derived from ``path``.
    """

    path: str = "data/app.db"
    mode: str = "auto"
    use_filelock: bool = False
    socket: str | None = None

    def engine_options(self) -> dict[str, Any]:
        """These settings as keyword arguments of ``AsyncDatabaseManager.init_engine``."""
        return {
            "path": self.path,
            "mode": self.mode,
            "use_filelock": self.use_filelock,
            "socket": self.socket,
        }


def database_settings_from_env(
    environ: Mapping[str, str] | None = None, *, default_path: str = "data/app.db"
) -> DatabaseSettings:
    """Read ``FQDB_PATH``, ``FQDB_MODE``, ``FQDB_FILELOCK`` and ``FQDB_SOCKET``.

    Args:
        environ: the variables to read (default: ``os.environ``).
        default_path: the file when ``FQDB_PATH`` is unset or empty.

    Returns:
        The settings; unset variables take the defaults in the module docstring.

    Raises:
        ValidationError: ``FQDB_MODE`` or ``FQDB_FILELOCK`` holds something else
            than the values listed, so a typo fails at start-up, not later.

    Example::

        >>> database_settings_from_env({"FQDB_PATH": "/srv/app.db", "FQDB_FILELOCK": "1"})
        DatabaseSettings(path='/srv/app.db', mode='auto', use_filelock=True, socket=None)
    """
    env = os.environ if environ is None else environ
    mode = env.get("FQDB_MODE", "").strip().lower() or "auto"
    if mode not in _MODES:
        raise ValidationError(
            f"FQDB_MODE must be one of {', '.join(_MODES)}, got {env.get('FQDB_MODE')!r}"
        )
    raw_lock = env.get("FQDB_FILELOCK", "")
    lock = raw_lock.strip().lower()
    if lock not in _TRUE | _FALSE:
        raise ValidationError(f"FQDB_FILELOCK must be 1 or 0 (or true/false), got {raw_lock!r}")
    return DatabaseSettings(
        path=env.get("FQDB_PATH") or default_path,
        mode=mode,
        use_filelock=lock in _TRUE,
        socket=env.get("FQDB_SOCKET") or None,
    )


# ---------------------------------------------------------------- lifecycle


async def open_database(
    settings: DatabaseSettings | None = None, **overrides: Any
) -> AsyncDatabaseManager:
    """Open the process's database: ``init_engine`` with ``settings`` and ``overrides``.

    Args:
        settings: where and how (default: :func:`database_settings_from_env`, read now).
        overrides: ``init_engine`` keyword arguments that win over ``settings``,
            e.g. ``request_timeout=5.0`` or ``mode="daemon"``.

    Returns:
        The manager (``db.mode`` says whether the daemon or embedded mode runs).

    Raises:
        DaemonUnavailableError: ``mode="daemon"`` and no daemon serves the file.
        ValidationError: bad settings.
    """
    if settings is None:
        settings = database_settings_from_env()
    options = {**settings.engine_options(), **overrides}
    path = options.pop("path")
    db = await AsyncDatabaseManager.init_engine(path, **options)
    log.info("pid %d: %s mode on %s", os.getpid(), db.mode, db.path)
    return db


async def close_database() -> None:
    """Close the process's database (``AsyncDatabaseManager.close``); safe to call twice."""
    await AsyncDatabaseManager.close()


def quart_lifecycle(app: AppT, settings: DatabaseSettings | None = None, **overrides: Any) -> AppT:
    """Open the database in Quart's ``before_serving`` and close it in ``after_serving``.

    Every worker process of a multi-worker server (``hypercorn -w 4``) runs
    both hooks, so each has its own connection to the daemon.

    Args:
        app: the ``quart.Quart`` application.
        settings, overrides: as for :func:`open_database`; the environment is
            read when the worker starts, not at import.

    Returns:
        ``app``, so the call can wrap its creation.

    Example::

        app = quart_lifecycle(Quart(__name__))
    """

    async def open_fastquartdb() -> None:
        await open_database(settings, **overrides)

    hooks: Any = app
    hooks.before_serving(open_fastquartdb)
    hooks.after_serving(close_database)
    return app


def fastapi_lifespan(
    settings: DatabaseSettings | None = None, **overrides: Any
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[None]]:
    """A lifespan for ``FastAPI(lifespan=...)`` (or Starlette) that opens and closes the database.

    Args:
        settings, overrides: as for :func:`open_database`, applied when the worker starts.

    Returns:
        A function of the app returning an async context manager, as the
        ``lifespan`` argument wants.

    Example::

        app = FastAPI(lifespan=fastapi_lifespan())
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await open_database(settings, **overrides)
        try:
            yield
        finally:
            await close_database()

    return lifespan


def aiohttp_lifecycle(
    app: AppT, settings: DatabaseSettings | None = None, **overrides: Any
) -> AppT:
    """Open the database in aiohttp's ``on_startup`` and close it in ``on_cleanup``.

    Args:
        app: the ``aiohttp.web.Application`` (before it is frozen by running it).
        settings, overrides: as for :func:`open_database`, applied when the worker starts.

    Returns:
        ``app``.

    Example::

        app = aiohttp_lifecycle(web.Application())
    """

    async def open_fastquartdb(_app: Any) -> None:
        await open_database(settings, **overrides)

    async def close_fastquartdb(_app: Any) -> None:
        await close_database()

    signals: Any = app
    signals.on_startup.append(open_fastquartdb)
    signals.on_cleanup.append(close_fastquartdb)
    return app


# ---------------------------------------------------------------- requests and errors


def http_status_for(exc: BaseException) -> int:
    """The HTTP status that answers a request which failed with ``exc``.

    ``IdempotencyKeyError`` → 422 (a key reused for another request),
    ``ValidationError`` and ``ProgrammingError`` → 400 (the request was
    wrong), ``IntegrityError`` → 409 (it conflicts with stored rows),
    ``NotInitializedError`` and ``OperationalError`` → 503 (try again later:
    the daemon is restarting, the file is busy); anything else → 500.
    The table is :data:`HTTP_STATUS`.

    Example::

        >>> http_status_for(IntegrityError("UNIQUE constraint failed: user.username"))
        409
    """
    for cls, status in HTTP_STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_body(exc: BaseException) -> dict[str, str]:
    """The JSON body of an error response: ``{"error": "<the exception's message>"}``."""
    return {"error": str(exc) or type(exc).__name__}


#: The request header an HTTP client puts its retry key in (as Stripe's API reads it).
IDEMPOTENCY_HEADER = "Idempotency-Key"


def idempotency_key_from(request: Any, header: str = IDEMPOTENCY_HEADER) -> str | None:
    """The ``Idempotency-Key`` header of a Quart, FastAPI/Starlette or aiohttp request.

    Pass it to a write (``await Order.insert(data, idempotency_key=key)``): a client
    that sends the same POST again, because it lost the first answer, gets the first
    answer again and no second row. None when the header is absent.

    Raises:
        ValidationError: the header is there but empty or longer than 255 characters
            (an HTTP 400 through :func:`http_status_for`).

    Example::

        @app.post("/orders")
        async def create_order():
            data = parse_json_object(await request.get_data())
            pk = await Order.insert(data, idempotency_key=idempotency_key_from(request))
            return {"id": pk}, 201
    """
    value = request.headers.get(header)
    if value is None:
        return None
    try:
        return check_idempotency_key(value.strip())
    except ValidationError:
        raise ValidationError(
            f"the {header} header must be 1-255 characters, got {brief(value)}"
        ) from None


def parse_json_object(raw: bytes | str) -> dict[str, Any]:
    """Decode a request body that must be a JSON object.

    Raises:
        ValidationError: the body is not JSON, or is JSON but not an object.
    """
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise ValidationError(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValidationError(
            f"the request body must be a JSON object of column to value, got {type(data).__name__}"
        )
    return data


def validate_row(model: type[BaseModel], data: Any) -> dict[str, Any]:
    """Check decoded JSON against ``model`` before it becomes an insert or an update.

    The same checks every model call makes (``data`` is an object, its keys are
    columns, each value suits its column's type), done before any request so an
    API can answer 400 early. ``null`` is left to the table: NOT NULL columns
    refuse it with ``IntegrityError``.

    Returns:
        ``data`` as a new dict.

    Raises:
        ValidationError: naming the column and what it takes, e.g.
            ``column 'age' of table 'user' is INTEGER and takes an integer; ...``.
    """
    model._values(data, insert=False)
    return dict(data)


# ---------------------------------------------------------------- server-sent events

#: The request header a browser's ``EventSource`` resends after a lost connection.
LAST_EVENT_ID_HEADER = "Last-Event-ID"
#: Seconds without a change after which an SSE stream sends a comment (keeps proxies from
#: closing an idle connection, and makes a dead client show up as a failed write).
SSE_HEARTBEAT = 15.0


def last_event_id(request: Any, default: int | str | None = None) -> int | str | None:
    """The cursor an SSE client resumes from: its ``Last-Event-ID`` header, else the
    ``after`` query parameter, else ``default`` (for ``User.changes(after=...)``).

    Raises:
        ValidationError: the value is not a change's seq (an HTTP 400).
    """
    value = request.headers.get(LAST_EVENT_ID_HEADER)
    if value is None:
        query = getattr(request, "args", None) or getattr(request, "query_params", None)
        if query is None:
            query = getattr(request, "query", None)  # aiohttp
        value = query.get("after") if query is not None else None
    if value is None or not str(value).strip():
        return default
    text = str(value).strip()
    if not text.isdigit():
        raise ValidationError(
            f"the {LAST_EVENT_ID_HEADER} header (or ?after=) must be a change's seq, got {brief(text)}"
        )
    return int(text)


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$hex": value.hex()}
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def sse_event(change: Change) -> bytes:
    """One change as a server-sent event: ``id`` is its seq (the browser's resume cursor),
    ``event`` its op, ``data`` the change as JSON (``Change.as_dict``)."""
    data = json.dumps(change.as_dict(), default=_json_value, separators=(",", ":"))
    return f"id: {change.seq}\nevent: {change.op}\ndata: {data}\n\n".encode()


async def sse_stream(
    changes: AsyncIterator[Change], *, heartbeat: float = SSE_HEARTBEAT
) -> AsyncGenerator[bytes, None]:
    """The bytes of an SSE response body for ``changes``, with a heartbeat comment every
    ``heartbeat`` seconds without a change. Closing the stream closes ``changes``.

    A cursor that fell off the retained log ends the stream with an ``expired`` event
    (``data: {"error": ...}``): the page must resync (reload its rows) and reconnect
    without ``Last-Event-ID``, since an ``EventSource`` that simply reconnected would
    send the same expired id again."""
    loop = asyncio.get_running_loop()
    pending: asyncio.Future[Change] | None = None
    try:
        yield b"retry: 1000\n\n"  # EventSource reconnects after 1 s, sending Last-Event-ID
        while True:
            if pending is None:
                pending = loop.create_task(_next(changes))
            done, _ = await asyncio.wait({pending}, timeout=heartbeat)
            if not done:
                yield b": heartbeat\n\n"
                continue
            try:
                change = pending.result()
            except StopAsyncIteration:
                return
            except ChangesExpiredError as exc:
                yield f"event: expired\ndata: {json.dumps({'error': str(exc)})}\n\n".encode()
                return
            finally:
                pending = None
            yield sse_event(change)
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        closer = getattr(changes, "aclose", None)
        if closer is not None:
            await closer()


async def _next(changes: AsyncIterator[Change]) -> Change:
    # A task of its own: a heartbeat timeout must not cancel the feed mid-read.
    return await changes.__anext__()


_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def sse_response(
    changes: AsyncIterator[Change],
    request: Any = None,
    *,
    framework: str | None = None,
    heartbeat: float = SSE_HEARTBEAT,
) -> Any:
    """A streaming ``text/event-stream`` response of ``changes`` for Quart, FastAPI/Starlette
    or aiohttp (named by ``framework``, or told by ``request``'s type; aiohttp needs
    ``request``). Each event's ``id`` is the change's seq, so a browser that reconnects
    sends it back as ``Last-Event-ID`` (see :func:`last_event_id`) and misses nothing.

    Example (Quart; FastAPI and aiohttp alike)::

        @app.get("/users/changes")
        async def user_changes():
            after = last_event_id(request, default="now")
            return await sse_response(User.changes(after=after), request)

    aiohttp does not cancel a handler whose client went away (unless the app enables
    ``handler_cancellation``): such a stream ends at its next write, a change or the
    heartbeat, every ``heartbeat`` seconds at most.

    Raises:
        ValidationError: the framework is not one of these three.
    """
    name = framework or _framework_of(request)
    body = sse_stream(changes, heartbeat=heartbeat)
    if name == "quart":
        from quart import Response

        response = Response(body, mimetype="text/event-stream", headers=_SSE_HEADERS)
        response.timeout = None  # a feed streams for as long as the client stays
        return response
    if name in ("starlette", "fastapi"):
        from starlette.responses import StreamingResponse

        return StreamingResponse(body, media_type="text/event-stream", headers=_SSE_HEADERS)
    if name == "aiohttp":
        from aiohttp import web

        if request is None:
            raise ValidationError("sse_response needs the aiohttp request to stream to")
        stream = web.StreamResponse(headers={"Content-Type": "text/event-stream", **_SSE_HEADERS})
        await stream.prepare(request)
        try:
            async for chunk in body:
                await stream.write(chunk)
        except (ConnectionResetError, asyncio.CancelledError):
            pass  # the client went away: the feed is closed by the stream's finally
        finally:
            await body.aclose()
        return stream
    raise ValidationError(
        f"sse_response supports quart, fastapi/starlette and aiohttp, got {brief(name)}; "
        "pass framework= or the request"
    )


def _framework_of(request: Any) -> str | None:
    if request is None:
        return None
    # Quart's ``request`` is a context-local proxy (werkzeug's documented LocalProxy API).
    unwrap = getattr(request, "_get_current_object", None)
    if callable(unwrap):
        request = unwrap()
    module = type(request).__module__.split(".", 1)[0]
    return "starlette" if module == "fastapi" else module
