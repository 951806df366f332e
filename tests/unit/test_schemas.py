"""``Model.schema()``: pydantic models derived from the columns, and a row through them."""

from __future__ import annotations

import base64
import datetime as dt
import sys
from pathlib import Path
from typing import Any

import pydantic
import pytest

from fastquartdb import AsyncDatabaseManager, BaseModel, Column, InterfaceError, ValidationError

UTC = dt.timezone.utc


def _created() -> dt.datetime:
    return dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


class Gadget(BaseModel):
    __tablename__ = "typing_gadget"  # not a table of another test
    id = Column("INTEGER", primary_key=True)
    name = Column("VARCHAR(40)", nullable=False)
    price = Column("REAL", nullable=False, default=0.0)
    active = Column("BOOLEAN", default=True)
    released = Column("DATE")
    created = Column("DATETIME", nullable=False, default=_created)
    specs = Column("JSON")
    image = Column("BLOB")
    rating = Column("NUMERIC")


class Sku(BaseModel):
    __tablename__ = "typing_sku"  # not a table of another test
    code = Column("TEXT", primary_key=True)
    qty = Column("INTEGER", nullable=False)


def _props(kind: str, model: type[BaseModel] = Gadget) -> tuple[dict[str, Any], list[str]]:
    schema = model.schema(kind).model_json_schema()
    return schema["properties"], schema.get("required", [])


def _types(prop: dict[str, Any]) -> list[tuple[str | None, str | None]]:
    options = prop.get("anyOf", [prop])
    return [(o.get("type"), o.get("format")) for o in options]


def test_create_fields_types_defaults_and_required() -> None:
    props, required = _props("create")
    assert "id" not in props  # the automatic rowid is read-only
    assert required == ["name"]
    assert _types(props["name"]) == [("string", None)]
    assert _types(props["price"]) == [("number", None)]
    assert props["price"]["default"] == 0.0
    assert _types(props["active"]) == [("boolean", None), ("null", None)]
    assert props["active"]["default"] is True
    assert _types(props["released"]) == [("string", "date"), ("null", None)]
    assert _types(props["created"]) == [("string", "date-time")]
    assert "default" not in props["created"]  # a callable default: default_factory
    assert _types(props["image"]) == [("string", "base64"), ("null", None)]
    assert {t for t, _ in _types(props["rating"])} == {"integer", "number", "string", "null"}
    schema = Gadget.schema("create")
    body = schema.model_validate({"name": "lamp"}).model_dump()
    assert body["created"] == _created() and body["price"] == 0.0 and body["active"] is True


def test_a_primary_key_that_is_no_rowid_is_required_in_create() -> None:
    props, required = _props("create", Sku)
    assert set(props) == {"code", "qty"} and sorted(required) == ["code", "qty"]
    assert set(_props("update", Sku)[0]) == {"code", "qty"}


def test_update_every_field_optional_but_not_null_where_the_column_is_not() -> None:
    props, required = _props("update")
    assert required == [] and "id" not in props
    update = Gadget.schema("update")
    assert update.model_validate({"price": 2}).model_dump(exclude_unset=True) == {"price": 2}
    assert update.model_validate({"released": None}).model_dump(exclude_unset=True) == {
        "released": None
    }
    with pytest.raises(pydantic.ValidationError) as info:
        update.model_validate({"name": None})
    assert info.value.errors()[0]["loc"] == ("name",)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", 5),
        ("price", "1.5"),
        ("price", True),
        ("active", "yes"),
        ("released", "not a date"),
        ("image", "***"),
        ("nope", 1),
        ("id", 1),
    ],
)
def test_create_refuses_what_the_column_would_refuse(field: str, value: Any) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        Gadget.schema("create").model_validate({"name": "x", field: value})
    assert info.value.errors()[0]["loc"][0] == field


def test_read_has_every_column_and_ignores_extra_keys() -> None:
    props, required = _props("read")
    assert list(props) == list(Gadget.__columns__)
    assert sorted(required) == ["created", "id", "name", "price"]
    row = Gadget.schema("read").model_validate(
        {"id": 1, "name": "x", "price": 1.0, "created": _created(), "user.name": "joined"}
    )
    assert not hasattr(row, "user.name")


def test_schemas_are_cached_per_model_and_kind_and_named_after_the_model() -> None:
    assert Gadget.schema("create") is Gadget.schema("create")
    assert Gadget.schema() is Gadget.schema("read")
    assert Gadget.schema("create") is not Gadget.schema("update")
    names = [Gadget.schema(k).__name__ for k in ("create", "update", "read")]
    assert names == ["GadgetCreate", "GadgetUpdate", "GadgetRead"]
    assert issubclass(Gadget.schema("read"), pydantic.BaseModel)


def test_an_unknown_kind_says_which_exist() -> None:
    with pytest.raises(ValidationError, match=r"unknown schema kind 'write'.*create, update, read"):
        Gadget.schema("write")


def test_without_pydantic_schema_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    class Fresh(BaseModel):  # not cached yet
        __tablename__ = "typing_fresh"  # not a table of another test
        id = Column("INTEGER", primary_key=True)

    monkeypatch.setitem(sys.modules, "pydantic", None)  # import pydantic -> ImportError
    with pytest.raises(InterfaceError, match=r"pip install 'fastquartdb\[schemas\]'"):
        Fresh.schema("create")


async def test_a_row_round_trips_through_create_and_read(tmp_path: Path) -> None:
    db = await AsyncDatabaseManager.init_engine(str(tmp_path / "app.db"), mode="embedded")
    try:
        png = b"\x89PNG\x00\xff"
        body = {
            "name": "lamp",
            "price": 12,
            "released": "2024-02-29",
            "specs": {"watts": 9, "tags": ["led"]},
            "image": base64.b64encode(png).decode(),
            "rating": "4.5",
        }
        data = Gadget.schema("create").model_validate(body).model_dump()
        pk = await Gadget.insert(data)
        row = await Gadget.fetch_one({"id": pk})
        assert row is not None and row["image"] == png
        assert row["released"] == dt.date(2024, 2, 29) and row["created"] == _created()
        out = Gadget.schema("read").model_validate(row).model_dump(mode="json")
        assert out == {
            **body,
            "id": pk,
            "active": True,
            "created": "2024-05-06T07:08:09Z",
            "rating": 4.5,
        }
    finally:
        await db.close()
