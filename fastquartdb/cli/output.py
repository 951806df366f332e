"""Result sets on stdout: an aligned table, JSON, JSON lines or CSV.

A result set (rows of a table or query) is an array of objects in
``--json``; a single record (``stats``, ``ping``, ``count``, the summary of a
statement that returns no rows) is one object, and in the table format a
list of ``name  value`` lines.

The format is chosen by a flag and never by whether stdout is a terminal, so
``fqdb rows app.db user | less`` shows what the terminal shows. Scripts ask
for ``--json`` (one array of objects), ``--nl`` (one object per line) or
``--csv`` (a header row, then rows).

Values: NULL is ``NULL`` in a table, ``null`` in JSON and an empty field in
CSV; a BLOB is ``X'0a0b'`` (SQLite's literal) in every format; floats keep
their full precision.
"""

from __future__ import annotations

import csv
import json
import unicodedata
from collections.abc import Sequence
from typing import Any, TextIO

__all__ = ["FORMATS", "ResultSet", "display_width", "write_record", "write_result"]

#: Output formats: the default aligned table, then the script-friendly ones.
FORMATS = ("table", "json", "nl", "csv")

_ESCAPES = str.maketrans({"\n": "\\n", "\r": "\\r", "\t": "\\t"})


class ResultSet:
    """Column names and rows, as the engine returns them."""

    __slots__ = ("columns", "rows")

    def __init__(self, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.columns = list(columns)
        self.rows = rows

    @classmethod
    def single(cls, values: dict[str, Any]) -> ResultSet:
        """One row from a map of column to value."""
        return cls(list(values), [list(values.values())])

    def dicts(self) -> list[dict[str, Any]]:
        """The rows as maps, in column order."""
        return [dict(zip(self.columns, row)) for row in self.rows]


def _plain(value: Any) -> Any:
    """A value JSON can carry: BLOBs become SQLite hex literals."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "X'" + bytes(value).hex() + "'"
    return value


def _cell(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(v) for v in value)
    if value is None:
        return "NULL"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _plain(value)  # type: ignore[no-any-return]
    if isinstance(value, float):
        return repr(value)
    return str(value).translate(_ESCAPES)


def display_width(text: str) -> int:
    """Columns ``text`` takes on a terminal: wide East Asian characters count twice."""
    if text.isascii():
        return len(text)
    width = 0
    for char in text:
        if unicodedata.combining(char):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def _pad(text: str, width: int, right: bool) -> str:
    fill = " " * (width - display_width(text))
    return fill + text if right else text + fill


def _write_table(result: ResultSet, out: TextIO) -> None:
    header = [_cell(c) for c in result.columns]
    cells = [[_cell(v) for v in row] for row in result.rows]
    widths = [display_width(h) for h in header]
    numeric = [True] * len(header)
    for row, raw in zip(cells, result.rows):
        for i, (text, value) in enumerate(zip(row, raw)):
            widths[i] = max(widths[i], display_width(text))
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float))
            ):
                numeric[i] = False
    line = "  ".join(_pad(h, w, n) for h, w, n in zip(header, widths, numeric))
    out.write(line.rstrip() + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for row in cells:
        line = "  ".join(_pad(t, w, n) for t, w, n in zip(row, widths, numeric))
        out.write(line.rstrip() + "\n")


def write_result(result: ResultSet, fmt: str, out: TextIO) -> None:
    """Write ``result`` to ``out`` in ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "table":
        _write_table(result, out)
    elif fmt == "json":
        rows = [{k: _plain(v) for k, v in row.items()} for row in result.dicts()]
        json.dump(rows, out, ensure_ascii=False, indent=2)
        out.write("\n")
    elif fmt == "nl":
        for row in result.dicts():
            out.write(json.dumps({k: _plain(v) for k, v in row.items()}, ensure_ascii=False))
            out.write("\n")
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(result.columns)
        for raw in result.rows:
            writer.writerow(["" if v is None else _plain(v) for v in raw])
    else:
        raise ValueError(f"unknown output format {fmt!r} (formats: {', '.join(FORMATS)})")


def write_record(values: dict[str, Any], fmt: str, out: TextIO, *, none: str = "NULL") -> None:
    """Write one record: ``name  value`` lines in the table format, else one object or row.

    ``none`` is how the table format shows a None value (``n/a`` for a figure
    the daemon does not report).
    """
    plain = {
        k: [_plain(i) for i in v] if isinstance(v, list) else _plain(v) for k, v in values.items()
    }
    if fmt == "table":
        width = max((display_width(k) for k in values), default=0)
        for key, value in values.items():
            text = none if value is None else _cell(value)
            out.write(f"{_pad(key, width, False)}  {text}".rstrip() + "\n")
    elif fmt == "json":
        json.dump(plain, out, ensure_ascii=False, indent=2)
        out.write("\n")
    elif fmt == "nl":
        out.write(json.dumps(plain, ensure_ascii=False) + "\n")
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(list(values))
        writer.writerow(
            ["" if v is None else _cell(v) if isinstance(v, list) else v for v in plain.values()]
        )
    else:
        raise ValueError(f"unknown output format {fmt!r} (formats: {', '.join(FORMATS)})")
