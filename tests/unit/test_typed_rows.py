"""Typed rows: ``BaseModel[UserRow]`` is real to mypy --strict, and checked against the columns."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any, TypedDict

import pytest

from fastquartdb import BaseModel, Column, ValidationError

ROOT = Path(__file__).resolve().parents[2]
GOOD = "examples/typed_rows.py"
BAD = "tests/unit/typing_cases/bad_rows.py"


@pytest.mark.timeout(180)
def test_mypy_strict_accepts_the_example_and_rejects_misuse(tmp_path: Path) -> None:
    # One run over both files (mypy's start-up is the cost); the example must be clean and
    # every marked line of the bad file must draw exactly its error code, nothing else.
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path), GOOD, BAD],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
    )
    errors = re.findall(r"^(\S+?):(\d+): error: .*\[([a-z-]+)\]$", proc.stdout, re.MULTILINE)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert not [e for e in errors if e[0] != BAD], proc.stdout
    expected = {
        (BAD, str(number), match.group(1))
        for number, line in enumerate((ROOT / BAD).read_text().splitlines(), 1)
        if (match := re.search(r"# error: ([a-z-]+)$", line))
    }
    assert len(expected) == 4
    assert set(errors) == expected, proc.stdout


def test_unparametrized_models_keep_dict_rows_at_run_time() -> None:
    class Loose(BaseModel):
        __tablename__ = "typing_loose"  # not a table of another test
        id = Column("INTEGER", primary_key=True)

    assert Loose.__pk__ == ("id",)


def test_row_type_must_name_exactly_the_columns() -> None:
    class Row(TypedDict):
        id: int
        nme: str

    with pytest.raises(ValidationError) as info:

        class Person(BaseModel[Row]):
            __tablename__ = "typing_person"  # not a table of another test
            id = Column("INTEGER", primary_key=True)
            name = Column("TEXT")
            age = Column("INTEGER")

    message = str(info.value)
    assert "declares 'nme', not a column" in message, message
    assert "lacks column(s) 'name', 'age'" in message, message
    assert "(columns: id, name, age)" in message, message


def test_a_matching_row_type_is_accepted() -> None:
    class Row(TypedDict, total=False):
        id: int
        name: str | None

    class Named(BaseModel[Row]):
        __tablename__ = "typing_named"  # not a table of another test
        id = Column("INTEGER", primary_key=True)
        name = Column("TEXT")

    assert list(Named.__columns__) == ["id", "name"]


def test_a_generic_intermediate_base_is_not_checked() -> None:
    from fastquartdb.models.rows import RowT

    class Audited(BaseModel[RowT]):  # an abstract base: no columns, no row type yet
        pass

    class Event(Audited[dict[str, Any]]):
        __tablename__ = "typing_event"  # not a table of another test
        id = Column("INTEGER", primary_key=True)

    assert Event.__pk__ == ("id",)
