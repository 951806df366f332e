"""Change feeds as server-sent events, end to end with a real HTTP client.

The example page (``examples/live_app.py``) under hypercorn with two worker
processes: a message posted through either worker reaches a stream held by
either, and a stream resumed with ``Last-Event-ID`` starts right after it. The
same ``sse_response`` under Starlette (uvicorn) and aiohttp, in-process.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fastquartdb import AsyncDatabaseManager, BaseModel, Column
from fastquartdb.integrations import last_event_id, sse_response
from tests.e2e.servers import Subprocess, app_env, free_port


async def events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The events of an SSE stream, as ``{"id", "event", "data"}`` maps (comments skipped)."""
    event: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if not line:
            if "data" in event:
                yield event
            event = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            event[name] = json.loads(value) if name == "data" else value


async def take(response: httpx.Response, count: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    async for event in events(response):
        got.append(event)
        if len(got) == count:
            break
    return got


async def test_the_example_page_streams_messages_from_every_worker(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [
        "python",
        "-m",
        "hypercorn",
        "examples.live_app:app",
        "-w",
        "2",
        "-b",
        f"127.0.0.1:{port}",
    ]
    import sys

    cmd[0] = sys.executable
    server = Subprocess(
        cmd, tmp_path / "server.log", app_env(str(tmp_path / "live.db"), mode="embedded")
    )
    server.start()
    try:
        await server.wait_http(base + "/")
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            page = await client.get("/")
            assert 'new EventSource("/messages/changes")' in page.text
            async with client.stream("GET", "/messages/changes") as stream:
                assert stream.headers["content-type"].startswith("text/event-stream")
                async with httpx.AsyncClient(base_url=base, timeout=30) as poster:
                    for i in range(4):  # new connections: spread over both workers
                        posted = await poster.post(
                            "/messages",
                            content=json.dumps({"author": "ann", "body": f"m{i}"}),
                            headers={"Connection": "close"},
                        )
                        assert posted.status_code == 201, posted.text
                    got = await asyncio.wait_for(take(stream, 4), 30)
            assert [e["data"]["row"]["body"] for e in got] == ["m0", "m1", "m2", "m3"]
            assert [e["event"] for e in got] == ["insert"] * 4
            assert [int(e["id"]) for e in got] == [e["data"]["seq"] for e in got]
            # A browser reconnecting sends the last id it saw: the stream resumes after it.
            resume = {"Last-Event-ID": got[1]["id"]}
            async with client.stream("GET", "/messages/changes", headers=resume) as stream:
                again = await asyncio.wait_for(take(stream, 2), 30)
            assert [e["data"]["row"]["body"] for e in again] == ["m2", "m3"]
            bad = await client.get("/messages/changes", headers={"Last-Event-ID": "x"})
            assert bad.status_code == 400
    finally:
        server.stop()


class Tick(BaseModel):
    __tablename__ = "sse_tick"
    __changes__ = True
    id = Column("INTEGER", primary_key=True)
    label = Column("TEXT")


async def _write_soon(labels: list[str]) -> None:
    await asyncio.sleep(0.2)
    for label in labels:
        await Tick.insert({"label": label})


async def test_sse_response_under_starlette_and_aiohttp(db_path: str) -> None:
    import uvicorn
    from aiohttp import web
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.routing import Route

    await AsyncDatabaseManager.init_engine(db_path, mode="embedded")
    await Tick.insert({"label": "old"})

    async def starlette_feed(request: Request) -> Any:
        return await sse_response(Tick.changes(after=last_event_id(request, "now")), request)

    async def aiohttp_feed(request: web.Request) -> Any:
        # aiohttp does not cancel a handler whose client left: the stream notices at its
        # next write, so a short heartbeat lets the server stop quickly at the end.
        feed = Tick.changes(after=last_event_id(request, "now"))
        return await sse_response(feed, request, heartbeat=0.2)

    star_port, aio_port = free_port(), free_port()
    config = uvicorn.Config(
        Starlette(routes=[Route("/feed", starlette_feed)]),
        host="127.0.0.1",
        port=star_port,
        log_level="warning",
        lifespan="off",
    )
    star = uvicorn.Server(config)
    star_task = asyncio.ensure_future(star.serve())
    aio_app = web.Application()
    aio_app.router.add_get("/feed", aiohttp_feed)
    runner = web.AppRunner(aio_app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", aio_port).start()
    try:
        while not star.started:
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient(timeout=30) as client:
            for port in (star_port, aio_port):
                url = f"http://127.0.0.1:{port}/feed"
                async with client.stream("GET", url) as stream:
                    writer = asyncio.ensure_future(_write_soon([f"{port}-a", f"{port}-b"]))
                    got = await asyncio.wait_for(take(stream, 2), 30)
                    await writer
                assert [e["data"]["row"]["label"] for e in got] == [f"{port}-a", f"{port}-b"]
                # From the first one's id on: the second, and nothing before it.
                async with client.stream("GET", url, params={"after": got[0]["id"]}) as stream:
                    (again,) = await asyncio.wait_for(take(stream, 1), 30)
                assert again["id"] == got[1]["id"]
    finally:
        star.should_exit = True
        await star_task
        await runner.cleanup()


_BROWSERS = ("chromium", "chromium-browser", "google-chrome")


@pytest.mark.skipif(
    not any(shutil.which(b) for b in _BROWSERS),
    reason="no headless Chromium installed (apt-get install chromium)",
)
def test_the_example_page_in_a_headless_browser(tmp_path: Path) -> None:
    """The page's own JavaScript, in a real browser, shows the rows its EventSource got.

    The table is empty in the HTML: a row in the rendered DOM came through the change feed.
    (A page with an open event stream never finishes loading; ``--timeout`` stops the
    navigation and then dumps the DOM and takes the screenshot.)
    """
    browser = next(shutil.which(b) for b in _BROWSERS if shutil.which(b))
    assert browser is not None
    port = free_port()
    server = Subprocess(
        [sys.executable, "-m", "hypercorn", "examples.live_app:app", "-b", f"127.0.0.1:{port}"],
        tmp_path / "server.log",
        app_env(str(tmp_path / "live.db"), mode="embedded"),
    ).start()
    url = f"http://127.0.0.1:{port}/"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--timeout=4000",
        "--window-size=900,400",
    ]
    try:
        asyncio.run(server.wait_http(url))
        body = {"author": "ann", "body": "seen through the change feed"}
        assert httpx.post(url + "messages", content=json.dumps(body)).status_code == 201
        shot = tmp_path / "page.png"

        def browse(extra: str) -> str:
            done = subprocess.run(
                [browser, *flags, f"--user-data-dir={tmp_path / 'profile'}", extra, url],
                capture_output=True,
                timeout=60,
            )
            return done.stdout.decode(errors="replace")

        # The DOM is dumped at the page's load event, which does not wait for the event
        # stream: poll (a new page each time) until the feed's rows are in it.
        deadline = time.monotonic() + 60
        dom = browse("--dump-dom")
        while "<td>seen through the change feed</td>" not in dom:
            assert time.monotonic() < deadline, dom[-2000:]
            dom = browse("--dump-dom")
        assert "<td>ann</td>" in dom and "<td>insert</td>" in dom
        browse(f"--screenshot={shot}")
        assert shot.exists() and shot.stat().st_size > 1000
    finally:
        server.stop()


async def test_sse_stream_formats_events_and_ends_on_an_expired_cursor() -> None:
    from fastquartdb import Change, ChangesExpiredError
    from fastquartdb.integrations import sse_stream

    async def feed() -> Any:
        yield Change(7, "t", "insert", 1, {"id": 1, "b": b"\x01", "d": dt.date(2026, 1, 2)}, None)
        await asyncio.sleep(0.3)  # long enough for two heartbeats
        raise ChangesExpiredError("changes after seq 7 are no longer in the change log")

    chunks = [chunk async for chunk in sse_stream(feed(), heartbeat=0.1)]
    text = b"".join(chunks).decode()
    assert text.startswith("retry: 1000\n\n")
    assert 'id: 7\nevent: insert\ndata: {"seq":7,"table":"t","op":"insert","pk":1,' in text
    assert '"b":{"$hex":"01"},"d":"2026-01-02"' in text
    assert text.count(": heartbeat\n\n") >= 2
    assert text.endswith(
        'event: expired\ndata: {"error": "changes after seq 7 are no longer in the change log"}\n\n'
    )
