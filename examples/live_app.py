"""A page where messages appear live as they are written: a change feed over server-sent events.

Run it (any number of workers, with or without ``fqdb-server``)::

    hypercorn examples.live_app:app -w 2 -b 127.0.0.1:8000
    # open http://127.0.0.1:8000/ in two windows; post in one, watch both
    curl -X POST -d '{"author": "ann", "body": "hello"}' http://127.0.0.1:8000/messages

======  =================  ====================================================
GET     /                  the page (an ``EventSource`` on /messages/changes)
GET     /messages/changes  the change feed of ``message`` as SSE (Last-Event-ID)
POST    /messages          add a message from a JSON object
======  =================  ====================================================

Every worker follows the same change log, so a message written through any
worker (or by another program, even with raw SQL) reaches every open page; a
page that loses its connection reconnects with ``Last-Event-ID`` and gets what
it missed.
"""

from __future__ import annotations

from typing import Any

from quart import Quart, request

from fastquartdb import BaseModel, Column, FQDBError
from fastquartdb.integrations import (
    error_body,
    http_status_for,
    last_event_id,
    parse_json_object,
    quart_lifecycle,
    sse_response,
    validate_row,
)


class Message(BaseModel):
    """A message: every committed change of its table is logged for change feeds."""

    __changes__ = True

    id = Column("INTEGER", primary_key=True)
    author = Column("TEXT", nullable=False)
    body = Column("TEXT", nullable=False)


app = quart_lifecycle(Quart(__name__))

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>FastQuartDB live messages</title>
<style>body{font:15px system-ui;margin:2em}td,th{padding:.2em .8em;text-align:left}
tr.new{animation:flash 1.5s}@keyframes flash{from{background:#ffe98a}to{background:none}}
</style></head><body>
<h1>Messages, live</h1>
<form id="f"><input name="author" placeholder="author" required>
<input name="body" placeholder="message" required><button>Send</button></form>
<p id="status">connecting…</p>
<table><thead><tr><th>seq</th><th>op</th><th>id</th><th>author</th><th>body</th></tr></thead>
<tbody id="rows"></tbody></table>
<script>
const rows = document.getElementById("rows"), status = document.getElementById("status");
const feed = new EventSource("/messages/changes");
feed.onopen = () => { status.textContent = "live"; };
feed.onerror = () => { status.textContent = "reconnecting…"; };
// The cursor fell off the retained log: start again from what the table holds now.
feed.addEventListener("expired", () => { feed.close(); location.reload(); });
for (const op of ["insert", "update", "delete"]) {
  feed.addEventListener(op, (event) => {
    const change = JSON.parse(event.data), row = change.row || change.old || {};
    const tr = document.createElement("tr");
    tr.className = "new";
    for (const v of [change.seq, change.op, change.pk, row.author ?? "", row.body ?? ""]) {
      const td = document.createElement("td"); td.textContent = v; tr.appendChild(td);
    }
    rows.prepend(tr);
  });
}
document.getElementById("f").onsubmit = async (e) => {
  e.preventDefault();
  const data = Object.fromEntries(new FormData(e.target));
  await fetch("/messages", {method: "POST", body: JSON.stringify(data)});
  e.target.body.value = "";
};
</script></body></html>
"""


@app.errorhandler(FQDBError)
async def database_error(exc: FQDBError) -> tuple[Any, int]:
    return error_body(exc), http_status_for(exc)


@app.get("/")
async def page() -> tuple[str, int, dict[str, str]]:
    return PAGE, 200, {"Content-Type": "text/html; charset=utf-8"}


@app.get("/messages/changes")
async def message_changes() -> Any:
    # A new page gets what the log retains; a reconnecting one resumes after its last event.
    return await sse_response(Message.changes(after=last_event_id(request)), request)


@app.post("/messages")
async def post_message() -> tuple[Any, int]:
    data = validate_row(Message, parse_json_object(await request.get_data()))
    return {"id": await Message.insert(data)}, 201


if __name__ == "__main__":  # one process, for development: python -m examples.live_app
    app.run(port=8000)
