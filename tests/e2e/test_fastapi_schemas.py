"""The FastAPI example's schemas, from a real uvicorn and a real HTTP client.

``User.schema()`` types the example's bodies and answers: the OpenAPI document
must list the columns with their types, ``/docs`` must serve, a body that does
not fit must be answered 422 by pydantic, and a row must come back unchanged
through ``response_model``.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from .servers import Subprocess, app_env, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

UVICORN = [sys.executable, "-m", "uvicorn", "examples.fastapi_app:app"]


def _types(prop: dict[str, Any]) -> set[str]:
    return {option.get("type", "?") for option in prop.get("anyOf", [prop])}


def _check_openapi(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    create, update, read = (schemas[f"User{k}"] for k in ("Create", "Update", "Read"))
    assert set(create["properties"]) == {"username", "age"}  # the id is SQLite's to assign
    assert create["required"] == ["username"]
    assert _types(create["properties"]["username"]) == {"string"}
    assert _types(create["properties"]["age"]) == {"integer", "null"}
    assert create["additionalProperties"] is False
    assert set(update["properties"]) == {"username", "age"} and "required" not in update
    assert set(read["properties"]) == {"id", "username", "age"}
    assert _types(read["properties"]["id"]) == {"integer"}
    assert sorted(read["required"]) == ["id", "username"]
    post = doc["paths"]["/users"]["post"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/UserCreate"}
    answer = post["responses"]["201"]["content"]["application/json"]["schema"]
    assert answer == {"$ref": "#/components/schemas/UserRead"}
    patch = doc["paths"]["/users/{user_id}"]["patch"]
    ref = patch["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref == "#/components/schemas/UserUpdate"
    listed = doc["paths"]["/users"]["get"]["responses"]["200"]["content"]["application/json"]
    assert listed["schema"]["items"] == {"$ref": "#/components/schemas/UserRead"}


async def test_openapi_docs_422_and_round_trip(tmp_path: Path) -> None:
    port = free_port()
    db = str(tmp_path / "app.db")
    server = Subprocess(
        [*UVICORN, "--host", "127.0.0.1", "--port", str(port), "--no-access-log"],
        tmp_path / "uvicorn.log",
        app_env(db, mode="embedded"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        server.start()
        await server.wait_http(f"{base}/openapi.json")
        async with httpx.AsyncClient(base_url=base, timeout=10.0) as client:
            docs = await client.get("/docs")
            assert docs.status_code == 200
            assert "swagger-ui" in docs.text and "/openapi.json" in docs.text
            _check_openapi((await client.get("/openapi.json")).json())

            bad = await client.post("/users", json={"username": "x", "age": "thirty"})
            assert bad.status_code == 422, bad.text
            (detail,) = bad.json()["detail"]
            assert detail["loc"] == ["body", "age"] and detail["type"] == "int_type"

            made = await client.post("/users", json={"username": "ada", "age": 36})
            assert made.status_code == 201, made.text
            row = made.json()
            assert row == {"id": row["id"], "username": "ada", "age": 36}
            assert (await client.get(f"/users/{row['id']}")).json() == row
            changed = await client.patch(f"/users/{row['id']}", json={"age": None})
            assert changed.json() == {**row, "age": None}
            assert (await client.get("/users")).json() == [{**row, "age": None}]
        # A single uvicorn process re-raises SIGTERM after its clean shutdown.
        assert server.stop() in (0, -signal.SIGTERM), server.output()[-3000:]
        assert "Application shutdown complete" in server.output()
    finally:
        server.stop()
