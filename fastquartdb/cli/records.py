"""Rows to insert, read from CSV, a JSON array, or JSON lines.

* **CSV**: UTF-8 (a BOM is skipped), a header row naming the columns, then
  one row per record. Every value arrives as text (:mod:`.values` reads it per
  column type: ``"30"`` into an INTEGER column is 30); an empty field is NULL.
* **JSON**: one array of objects, ``[{"name": "alice", "age": 30}, ...]``.
* **JSON lines** (``--nl``): one object per line; blank lines are skipped.

JSON values must be numbers, strings, ``true``/``false`` or ``null``; a key
missing from an object leaves that column to its default. Every value is then
checked against its column as the models check it (:mod:`.values`). CSV and
JSON lines stream (the file can be larger than memory); a JSON array is read whole.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO, NamedTuple

from .errors import CommandError

__all__ = ["INPUT_FORMATS", "Record", "read_records"]

#: ``fqdb insert`` input formats.
INPUT_FORMATS = ("csv", "json", "nl")


class Record(NamedTuple):
    """One row to insert, where it came from, and how far into the input it ends."""

    values: dict[str, Any]
    where: str
    done: int


def read_records(stream: BinaryIO, fmt: str, name: str) -> tuple[int | None, Iterator[Record]]:
    """Start reading ``stream`` (a file called ``name``) as ``fmt``.

    Returns:
        ``(total, records)``: the unit ``Record.done`` counts in and its total
        for a JSON array (items), None for the streamed formats (bytes, of a
        total the caller knows from the file's size).

    Raises:
        CommandError: malformed input, naming the file and line (while iterating, too).
    """
    if fmt == "json":
        items = _json_array(stream, name)
        return len(items), _json_records(items, name)
    if fmt == "nl":
        return None, _nl_records(stream, name)
    if fmt == "csv":
        return None, _csv_records(stream, name)
    raise ValueError(f"unknown input format {fmt!r} (formats: {', '.join(INPUT_FORMATS)})")


def _object(value: Any, name: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CommandError(
            f'{name} {where}: expected an object like {{"column": value}}, '
            f"got {type(value).__name__}"
        )
    if not value:
        raise CommandError(f"{name} {where}: an empty object has no column to insert")
    for key, item in value.items():
        if item is not None and not isinstance(item, (str, int, float, bool)):
            raise CommandError(
                f"{name} {where}: the value of {key!r} is a JSON {_json_kind(item)}; only "
                "numbers, strings, true/false and null can be inserted"
            )
    return value


def _json_kind(value: Any) -> str:
    return "array" if isinstance(value, list) else "object"


def _json_array(stream: BinaryIO, name: str) -> list[Any]:
    try:
        items = json.loads(stream.read().decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise CommandError(f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise CommandError(
            f"{name} line {exc.lineno} column {exc.colno}: not valid JSON ({exc.msg})"
        ) from None
    if not isinstance(items, list):
        raise CommandError(
            f"{name}: --json expects an array of objects, got a JSON {_json_kind(items)}"
            " (use --nl for one object per line)"
        )
    return items


def _json_records(items: list[Any], name: str) -> Iterator[Record]:
    # Counted from 1, as lines are: "item 3 of 10" is the third object of the array.
    for number, item in enumerate(items, 1):
        where = f"item {number} of {len(items)}"
        yield Record(_object(item, name, where), where, number)


def _decoded(stream: BinaryIO, name: str, done: list[int]) -> Iterator[str]:
    """The lines of ``stream`` as text, adding each line's byte length to ``done[0]``."""
    for number, raw in enumerate(stream, 1):
        done[0] += len(raw)
        try:
            yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise CommandError(
                f"{name} line {number}: not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from None


def _nl_records(stream: BinaryIO, name: str) -> Iterator[Record]:
    done = [0]
    for number, line in enumerate(_decoded(stream, name, done), 1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CommandError(f"{name} {where}: not valid JSON ({exc.msg})") from None
        yield Record(_object(value, name, where), where, done[0])


def _csv_header(header: list[str], name: str) -> list[str]:
    columns = [h.strip() for h in header]
    if not columns or any(not c for c in columns):
        raise CommandError(f"{name} line 1: the header must name every column, got {header!r}")
    duplicates = sorted({c for c in columns if columns.count(c) > 1})
    if duplicates:
        raise CommandError(f"{name} line 1: the header names {', '.join(duplicates)} twice")
    return columns


def _csv_records(stream: BinaryIO, name: str) -> Iterator[Record]:
    done = [0]
    lines: Iterable[str] = _decoded(stream, name, done)
    reader = csv.reader(lines, strict=True)
    try:
        header = next(reader, None)
        if header is None:
            return
        columns = _csv_header(header, name)
        for row in reader:
            if not row:
                continue
            where = f"line {reader.line_num}"
            if len(row) != len(columns):
                raise CommandError(
                    f"{name} {where}: {len(row)} field{'s' if len(row) != 1 else ''}, "
                    f"but the header has {len(columns)}"
                )
            values = {c: (v if v != "" else None) for c, v in zip(columns, row)}
            yield Record(values, where, done[0])
    except csv.Error as exc:
        raise CommandError(f"{name} line {reader.line_num}: malformed CSV ({exc})") from None
