"""use_filelock=True: the lock on <db>.lock is really held by the process while it writes."""

from __future__ import annotations

import fcntl
import os

import pytest

from fastquartdb import AsyncDatabaseManager, BaseModel, Column, DatabaseBusyError


class LockedNote(BaseModel):
    id = Column("INTEGER", primary_key=True)
    text = Column("TEXT")


def _locked_by_someone(path: str) -> bool:
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops our lock if we got it
    return False


async def test_transaction_holds_the_file_lock(db_path: str) -> None:
    db = await AsyncDatabaseManager.init_engine(db_path, use_filelock=True, mode="embedded")
    lock_path = db_path + ".lock"
    await LockedNote.insert({"text": "a"})
    assert not _locked_by_someone(lock_path)  # released after each batch
    async with db.transaction():
        await LockedNote.insert({"text": "b"})
        assert _locked_by_someone(lock_path)  # held from BEGIN ...
    assert not _locked_by_someone(lock_path)  # ... to COMMIT
    assert await LockedNote.count() == 2


async def test_a_lock_held_elsewhere_makes_writes_wait_then_fail_clearly(db_path: str) -> None:
    db = await AsyncDatabaseManager.init_engine(
        db_path, use_filelock=True, mode="embedded", busy_timeout=0.3
    )
    await LockedNote.count()
    fd = os.open(db_path + ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another "process" (descriptor) holds it
        with pytest.raises(DatabaseBusyError, match="stayed locked"):
            await LockedNote.insert({"text": "blocked"})
    finally:
        os.close(fd)
    await LockedNote.insert({"text": "free again"})
    assert [r["text"] for r in await LockedNote.fetch()] == ["free again"]
    assert db.mode == "embedded"
