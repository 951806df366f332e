"""Result rows to dicts, built once each and fast: what every read hands the application.

A result is ``{"columns": [...], "rows": [[...], ...]}`` on every transport.
``dict(zip(columns, row))`` per row was the largest cost of a 100-row read on
the event loop; a dict display (``{k0: v0, k1: v1}``) builds the same dict in
about half the time, so :func:`dict_rows` compiles one such builder per column
list (cached). Only the number of columns enters the generated source; the
names themselves are bound as arguments, never spliced into code.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["dict_rows"]

_Builder = Callable[[Sequence[Sequence[Any]]], list[dict[str, Any]]]
#: Wider results take the plain path (the source of a builder grows with its width).
_MAX_WIDTH = 64


def _plain(names: tuple[str, ...]) -> _Builder:
    return lambda rows: [dict(zip(names, row)) for row in rows]


@functools.lru_cache(maxsize=512)
def _builder(names: tuple[Any, ...]) -> _Builder:
    width = len(names)
    if not 0 < width <= _MAX_WIDTH or not all(type(n) is str for n in names):
        return _plain(names)
    keys = ", ".join(f"k{i}" for i in range(width))
    values = ", ".join(f"v{i}" for i in range(width))
    pairs = ", ".join(f"k{i}: v{i}" for i in range(width))
    source = (
        f"def make({keys}):\n"
        f"    def build(rows):\n"
        f"        return [{{{pairs}}} for {values}, in rows]\n"
        f"    return build\n"
    )
    namespace: dict[str, Any] = {}
    exec(source, namespace)  # only k<i>/v<i> names: nothing of the data is in the source
    build: _Builder = namespace["make"](*names)
    return build


def dict_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    """Each row as a dict of column name to value (a later duplicate name wins, as in dict())."""
    if not rows:
        return []
    try:
        build = _builder(tuple(columns))
    except TypeError:  # an unhashable name (never from a real result)
        return [dict(zip(columns, row)) for row in rows]
    return build(rows)
