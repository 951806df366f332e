"""Models shared by the conformance tests."""

from __future__ import annotations

from fastquartdb import BaseModel, Column


class User(BaseModel):
    id = Column("INTEGER", primary_key=True)
    username = Column("TEXT", nullable=False)
    age = Column("INTEGER")


class Item(BaseModel):
    __tablename__ = "items"

    sku = Column("VARCHAR(32)", primary_key=True)
    name = Column("TEXT", nullable=False, unique=True)
    price = Column("REAL", default=0.0)
    active = Column("BOOLEAN", default=True)
    added = Column("DATE")
    seen = Column("DATETIME")
    meta = Column("JSON")
    blob = Column("BLOB")
