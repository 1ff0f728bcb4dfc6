"""Make a row fit its table before anything stores it: the record boundary of accounting.

A value the database would refuse (a NUL in a string on PostgreSQL, a string longer than its column, an
integer outside the column type's range) must not cost the whole batch, so every row is fitted to the
table declaration in :mod:`~frugalserve.accounting.store` once, by :func:`fit`:

* ``String(n)``: NUL removed, lone surrogates replaced, cut to ``n`` characters;
* integers: outside the column type's range (32 or 64 bits) or negative (they are counts, durations,
  statuses) -> NULL (0 for a NOT NULL column); a bool or a non-integral float is not an integer;
* floats: NaN and infinities -> NULL (0.0 for a NOT NULL column);
* booleans: ``bool(value)``;
* keys that are not columns are dropped; missing columns are NULL (or the NOT NULL zero), so every
  row of a batch has the same keys.

What is changed is said in nothing but the row: a clamped count reads as unknown (NULL), like a backend
that reported none. A row the database still refuses goes to the dead-letter file (see writer.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa

Row = dict[str, Any]
_Fit = Callable[[Any], Any]

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


def _string(length: int | None, nullable: bool) -> _Fit:
    def fit(v: Any) -> Any:
        if v is None:
            return None if nullable else ""
        if not isinstance(v, str):
            v = str(v)
        if "\x00" in v:
            v = v.replace("\x00", "")
        if not v.isascii():
            # lone surrogates cannot be encoded as UTF-8: every driver refuses them
            v = v.encode("utf-8", "replace").decode("utf-8")
        return v[:length] if length is not None and len(v) > length else v

    return fit


def _integer(top: int, nullable: bool) -> _Fit:
    bad = None if nullable else 0

    def fit(v: Any) -> Any:
        if v is None:
            return bad
        if isinstance(v, bool):
            return int(v)
        if isinstance(v, float):
            if not (math.isfinite(v) and v.is_integer()):
                return bad
            v = int(v)
        if not isinstance(v, int):
            return bad
        return v if 0 <= v <= top else bad

    return fit


def _float(nullable: bool) -> _Fit:
    bad = None if nullable else 0.0

    def fit(v: Any) -> Any:
        if v is None or isinstance(v, bool) or not isinstance(v, int | float):
            return bad
        try:
            f = float(v)
        except OverflowError:  # an int beyond the float range
            return bad
        return f if math.isfinite(f) else bad

    return fit


def _boolean(nullable: bool) -> _Fit:
    def fit(v: Any) -> Any:
        return (None if nullable else False) if v is None else bool(v)

    return fit


def _fitter(column: sa.Column[Any]) -> _Fit:
    t = column.type
    nullable = bool(column.nullable)
    if isinstance(t, sa.Boolean):
        return _boolean(nullable)
    if isinstance(t, sa.Integer):
        return _integer(INT64_MAX if isinstance(t, sa.BigInteger) else INT32_MAX, nullable)
    if isinstance(t, sa.Float):
        return _float(nullable)
    if isinstance(t, sa.String):
        return _string(t.length, nullable)
    raise TypeError(f"no fitting rule for column {column.name} of type {t!r}")


class Fitter:
    """The fitting rules of one table, worked out once from its declaration."""

    def __init__(self, table: sa.Table) -> None:
        self.table = table
        self._rules = {str(c.name): _fitter(c) for c in table.columns if not c.primary_key}

    def fit(self, row: Mapping[str, Any]) -> Row:
        get = row.get
        return {name: rule(get(name)) for name, rule in self._rules.items()}
