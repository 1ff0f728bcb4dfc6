"""The local files accounting keeps beside the database: spool, dead letters, and the write-ahead journal.

All three are JSON Lines of tagged items, ``{"r": usage row}``, ``{"e": replica event}`` or
``{"s": scale event}`` (:data:`KINDS`), so one reader serves them all. A torn last line (a crash
mid-write) is skipped when read.

* spool: batches written while the database was unreachable; replayed oldest first (writer.py);
* dead letters: single rows the database refused even after fitting (clamp.py), with the error, kept for
  a person to look at; never replayed automatically;
* journal (``accounting.durability: wal``): every finished record, appended before its response ends.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

import orjson

Row = dict[str, Any]
Item = tuple[str, Row]  # ("r", usage row), ("e", replica event) or ("s", scale event)
KINDS = ("r", "e", "s")  # the tables they go to: store.TABLES


def line(kind: str, row: Row, **extra: Any) -> bytes:
    # default=str: a value JSON cannot hold must not lose the row (rows are fitted before, see clamp.py)
    return orjson.dumps({kind: row, **extra}, default=str, option=orjson.OPT_NON_STR_KEYS) + b"\n"


def append(path: Path, items: list[Item], *, fsync: bool = True) -> None:
    if not items:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as f:
        f.write(b"".join(line(k, r) for k, r in items))
        f.flush()
        if fsync:
            os.fsync(f.fileno())


def replace(path: Path, items: list[Item]) -> None:
    """Atomically make ``path`` hold exactly ``items`` (removed when there are none)."""
    if not items:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(b"".join(line(k, r) for k, r in items))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read(path: Path) -> list[Item]:
    items: list[Item] = []
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return items
    with f:
        for raw in f:
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(obj, dict):
                continue
            for kind in KINDS:
                if isinstance(obj.get(kind), dict):
                    items.append((kind, obj[kind]))
                    break
    return items


class Journal:
    """The write-ahead journal of ``durability: wal``: owned by the usage writer, on the event loop.

    ``append`` writes a line and flushes it to the operating system, so the record survives the
    process dying (kill -9, OOM) from then on; with ``fsync`` it also survives the machine losing power,
    at the price of a disk flush per record. ``rotate`` hands the lines written so far to a flush (they
    move to ``<path>.flushing``); ``done`` removes them once they reached the database or the spool.
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.flushing = self.path.with_name(self.path.name + ".flushing")
        self.fsync = fsync
        self._file: IO[bytes] | None = None
        self._dirty = False

    def pending(self) -> list[Item]:
        """What a previous run left behind (read at startup, before :meth:`open`)."""
        return read(self.flushing) + read(self.path)

    def discard_pending(self) -> None:
        self.flushing.unlink(missing_ok=True)
        self.path.unlink(missing_ok=True)

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("ab")

    def append(self, kind: str, row: Row) -> None:
        assert self._file is not None, "journal not open"
        self._file.write(line(kind, row))
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())
        self._dirty = True

    def sync(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())

    def rotate(self) -> None:
        """Move what was appended so far aside for the flush that is about to write it."""
        if not self._dirty or self._file is None:
            return
        self._file.close()
        if self.flushing.exists():  # an earlier flush did not finish: keep its lines, add these
            with self.flushing.open("ab") as f:
                f.write(self.path.read_bytes())
            self.path.unlink()
        else:
            os.replace(self.path, self.flushing)
        self._file = self.path.open("ab")
        self._dirty = False

    def done(self) -> None:
        self.flushing.unlink(missing_ok=True)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
