"""Joins along declared foreign keys: :class:`JoinScope`, the names a joined query may use.

A read request's ``join`` (a list of ``{table, kind}`` maps) becomes one
``FROM base JOIN ... ON ...`` clause, each join following the one foreign key
between the new table and a table already joined; :mod:`.statements` builds
selects, counts and aggregates over it as over a single table.
"""

from __future__ import annotations

from collections.abc import Callable

from ..protocol.errors import ValidationError, brief
from .schema import TableInfo, quote

__all__ = ["JoinScope"]


class JoinScope:
    """A base table joined along declared foreign keys; names may be ``table.column``.

    Unqualified names are the base table's. Joined columns come back named
    ``table.column``. Each join follows the one foreign key between the new
    table and a table already in the join, in either direction.
    """

    def __init__(
        self, base: TableInfo, joins: object, lookup: Callable[[object], TableInfo]
    ) -> None:
        if not isinstance(joins, list) or not joins:
            raise ValidationError("'join' must be a non-empty list of {table, kind} maps")
        self.base = base
        self.tables: dict[str, TableInfo] = {base.name: base}
        clauses = []
        for spec in joins:
            if not isinstance(spec, dict):
                raise ValidationError(f"each join must be a map {{table, kind}}, got {brief(spec)}")
            kind = spec.get("kind", "inner")
            if kind not in ("inner", "left"):
                raise ValidationError(f"join kind must be 'inner' or 'left', got {brief(kind)}")
            info = lookup(spec.get("table"))
            if info.name in self.tables:
                raise ValidationError(f"table {brief(info.name)} is joined twice")
            on = self._on(info)
            self.tables[info.name] = info
            clauses.append(f" {'LEFT ' if kind == 'left' else ''}JOIN {quote(info.name)} ON {on}")
        self.from_sql = quote(base.name) + "".join(clauses)
        items = [self.select_item(c) for c in base.columns]
        for info in list(self.tables.values())[1:]:
            items.extend(self.select_item(f"{info.name}.{c}") for c in info.columns)
        self.quoted_columns = ", ".join(items)

    def _on(self, new: TableInfo) -> str:
        links = []
        for name, info in self.tables.items():
            links += [
                f"{quote(name)}.{quote(col)} = {quote(new.name)}.{quote(ref_col)}"
                for col, ref_table, ref_col in info.foreign_keys
                if ref_table == new.name
            ]
            links += [
                f"{quote(new.name)}.{quote(col)} = {quote(name)}.{quote(ref_col)}"
                for col, ref_table, ref_col in new.foreign_keys
                if ref_table == name
            ]
        if len(links) != 1:
            joined = ", ".join(self.tables)
            problem = "no foreign key" if not links else "more than one foreign key"
            raise ValidationError(
                f"cannot join table {brief(new.name)}: {problem} links it to {joined}; declare "
                "one with Column(references='table.column'), or use raw SQL for this query"
            )
        return links[0]

    def _split(self, name: object) -> tuple[TableInfo, str]:
        if isinstance(name, str) and "." in name:
            table_name, column = name.split(".", 1)
            info = self.tables.get(table_name)
            if info is None:
                raise ValidationError(
                    f"unknown table {brief(table_name)} in {brief(name)} (tables in this query: "
                    f"{', '.join(self.tables)})"
                )
            return info, info.check_column(column)
        return self.base, self.base.check_column(name)

    def resolve(self, name: object) -> str:
        info, column = self._split(name)
        return f"{quote(info.name)}.{quote(column)}"

    def select_item(self, name: object) -> str:
        # The result column is named as asked: "title" or "post.title", "user.username".
        info, column = self._split(name)
        alias = column if isinstance(name, str) and "." not in name else f"{info.name}.{column}"
        return f"{quote(info.name)}.{quote(column)} AS {quote(alias)}"
