"""Traffic to replay: a trace file (CSV or JSONL), a synthetic generator, or the gateway's usage records.

A trace is held column by column (:class:`Trace`): a month at 230,000 requests a day is millions of rows,
and a Python object per row would cost more memory and time than the simulation itself.

Three sources, one result:

- :func:`read_trace` reads a file a user wrote (or exported from another gateway's logs);
- :func:`synthetic` generates traffic with a daily and weekly shape, bursts and a seed (presets for the
  field reports the planner is checked against);
- :func:`from_db` replays what this gateway itself served, from its accounting store.

Bad input raises :class:`TraceError`, one line naming the file and line (or the generator key, or the
database window) and the field, so that the CLI can print it as it is.
"""

from __future__ import annotations

import csv
import gc
import gzip
import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import numpy.typing as npt
import orjson

from frugalserve.budget.vision import AspectRatioError, image_tokens

PRIORITIES = ("low", "normal", "high")  # as x-frugalserve-priority (frugalserve.routing.features.Priority)
NORMAL = PRIORITIES.index("normal")


@dataclass(frozen=True, slots=True)
class Trace:
    """Requests in arrival order. Row i is (t[i], models[model[i]], prompt_tokens[i], ...)."""

    t: npt.NDArray[np.float64]  # arrival, epoch seconds, non-decreasing
    model: npt.NDArray[np.int32]  # index into models
    prompt_tokens: npt.NDArray[np.int64]  # text tokens of the prompt
    image_tokens: npt.NDArray[np.int64]  # visual tokens of its images (Qwen3-VL's rule), or as recorded
    output_tokens: npt.NDArray[np.int64]
    priority: npt.NDArray[np.int8]  # index into PRIORITIES
    key: npt.NDArray[np.int32]  # index into keys (0: "" when the trace names none)
    models: tuple[str, ...]
    keys: tuple[str, ...] = ("",)
    source: str = ""  # one line for the report: the file, the generator and its seed, or the database window

    def __len__(self) -> int:
        return len(self.t)

    @property
    def start(self) -> float:
        return float(self.t[0]) if len(self.t) else 0.0

    @property
    def end(self) -> float:
        return float(self.t[-1]) if len(self.t) else 0.0


class TraceError(ValueError):
    """A trace that cannot be read or generated. ``str()`` is ``"<where>: <message>"``: ``where`` is
    ``file:line`` (or ``file``), ``synthetic`` or the database URL and window."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


# ---------------------------------------------------------------------------------------------------------
# Files

REQUIRED = ("timestamp", "model", "prompt_tokens", "output_tokens")
OPTIONAL = ("images", "priority", "key")
SUFFIXES = (".csv", ".jsonl", ".ndjson")
CHUNK_ROWS = 65_536  # rows converted at once: column by column, in numpy where it can
_PRIORITY_INDEX = {name: i for i, name in enumerate(PRIORITIES)}
_MISSING = object()  # a required field a JSON line does not have


class _FieldError(ValueError):
    """One value is wrong; the caller adds where it is."""


class _RowError(ValueError):
    """Row ``row`` (counted from 0, blank lines not counted) is wrong; the reader finds its line."""

    def __init__(self, row: int, message: str) -> None:
        super().__init__(message)
        self.row = row
        self.message = message


def _epoch(value: object) -> float:
    """Epoch seconds from ISO 8601 (naive means UTC) or a number of seconds (a number or numeric string)."""
    if isinstance(value, str):
        s = value.strip()
        try:
            if len(s) > 4 and s[4] == "-":  # 2026-01-05...: ISO (a number never has '-' there)
                d = datetime.fromisoformat(s)
                t = (d if d.tzinfo is not None else d.replace(tzinfo=UTC)).timestamp()
            else:
                t = float(s)
        except ValueError:
            t = math.nan
    elif isinstance(value, int | float) and not isinstance(value, bool):
        t = float(value)
    else:
        t = math.nan
    if not math.isfinite(t):
        if value is _MISSING:
            raise _FieldError("timestamp is missing")
        raise _FieldError(f"timestamp must be ISO 8601 or epoch seconds, got {value!r}")
    return t


def _count(field: str) -> Callable[[object], int]:
    """The parser of a token count: an integer >= 0 (a JSON integer or its decimal text)."""

    def parse(value: object) -> int:
        try:
            if type(value) is int:
                n = value
            elif isinstance(value, str):
                n = int(value)
            else:
                raise ValueError
        except ValueError:
            if value is _MISSING:
                raise _FieldError(f"{field} is missing") from None
            raise _FieldError(f"{field} must be an integer >= 0, got {value!r}") from None
        if not 0 <= n < 2**63:
            raise _FieldError(f"{field} must be an integer >= 0, got {value!r}")
        return n

    return parse


def _images(cache: dict[tuple[int, int], int]) -> Callable[[object], int]:
    """The parser of an ``images`` value: visual tokens of a list of [width, height] (a JSON list, or its
    text in a CSV cell; empty or null: none), each image's size looked up once in ``cache``."""

    def parse(value: object) -> int:
        if value is None or value == "":
            return 0
        bad = f"images must be a JSON list of [width, height] pairs, got {value!r}"
        items = value
        if isinstance(value, str):
            try:
                items = orjson.loads(value)
            except orjson.JSONDecodeError:
                raise _FieldError(bad) from None
        if not isinstance(items, list):
            raise _FieldError(bad)
        total = 0
        for item in items:
            if not (isinstance(item, list) and len(item) == 2 and all(type(x) is int and x > 0 for x in item)):
                raise _FieldError(bad)
            size = (item[0], item[1])
            tokens = cache.get(size)
            if tokens is None:
                try:
                    tokens = image_tokens(size[1], size[0])  # the trace says [width, height]
                except AspectRatioError as exc:
                    raise _FieldError(f"images: {exc}") from None
                cache[size] = tokens
            total += tokens
        return total

    return parse


def _each(parse: Callable[[object], Any], col: Sequence[object], dtype: type[np.generic]) -> npt.NDArray[Any]:
    """``parse`` applied to every value; the first value it refuses is raised with its row."""
    try:
        return np.fromiter(map(parse, col), dtype=dtype, count=len(col))
    except _FieldError:
        for i, value in enumerate(col):
            try:
                parse(value)
            except _FieldError as exc:
                raise _RowError(i, str(exc)) from None
        raise


def _codes(code: Callable[[object], int], col: Sequence[object], dtype: type[np.generic]) -> npt.NDArray[Any]:
    """``code`` of every value, computed once per distinct value (a column repeats a few names)."""
    try:
        distinct = dict.fromkeys(col)
    except TypeError:  # a JSON list or object where a name should be: code() refuses it
        return _each(code, col, dtype)
    known: dict[object, int] = {}
    for value in distinct:
        try:
            known[value] = code(value)
        except _FieldError as exc:
            raise _RowError(col.index(value), str(exc)) from None
    return np.fromiter(map(known.__getitem__, col), dtype=dtype, count=len(col))


class _Table:
    """A trace read a chunk of rows at a time: each chunk's columns converted at once, arrays joined at the end."""

    def __init__(self) -> None:
        self.rows = 0
        self.parts: list[tuple[npt.NDArray[Any], ...]] = []
        self.models: dict[str, int] = {}
        self.keys: dict[str, int] = {"": 0}
        self.prompt = _count("prompt_tokens")
        self.output = _count("output_tokens")
        self.images = _images({})

    def model_code(self, value: object) -> int:
        if value is _MISSING:
            raise _FieldError("model is missing")
        if not isinstance(value, str) or not value.strip():
            raise _FieldError(f"model must be a non-empty string, got {value!r}")
        return self.models.setdefault(value.strip(), len(self.models))

    def key_code(self, value: object) -> int:
        if value is None:
            return 0
        if not isinstance(value, str):
            raise _FieldError(f"key must be a string, got {value!r}")
        return self.keys.setdefault(value, len(self.keys))

    @staticmethod
    def priority_code(value: object) -> int:
        if value is None or value == "":
            return NORMAL
        found = _PRIORITY_INDEX.get(value.strip().lower()) if isinstance(value, str) else None
        if found is None:
            raise _FieldError(f"priority must be low, normal or high, got {value!r}")
        return found

    def add(
        self, required: Sequence[Sequence[object]], optional: Sequence[Sequence[object] | None], *, text: bool
    ) -> None:
        """One chunk: the columns REQUIRED and OPTIONAL (None: an optional column the file lacks), as text
        (a CSV) or JSON values. Raises :class:`_RowError` with the row counted over the whole file."""
        ts, model, prompt, output = required
        images, priority, key = optional
        n = len(ts)
        try:
            t = self.times(ts, text=text)
            arrays = (
                t,
                _codes(self.model_code, model, np.int32),
                self.counts(self.prompt, prompt, text=text),
                _codes(self.images, images, np.int64) if images is not None else np.zeros(n, np.int64),
                self.counts(self.output, output, text=text),
                _codes(self.priority_code, priority, np.int8) if priority is not None else np.full(n, NORMAL, np.int8),
                _codes(self.key_code, key, np.int32) if key is not None else np.zeros(n, np.int32),
            )
        except _RowError as exc:
            raise _RowError(self.rows + exc.row, exc.message) from None
        self.parts.append(arrays)
        self.rows += n

    @staticmethod
    def times(col: Sequence[object], *, text: bool) -> npt.NDArray[np.float64]:
        t: npt.NDArray[np.float64]
        try:
            if not text:
                raise ValueError  # JSON: numbers and strings mixed, booleans refused, one by one
            t = np.fromiter(map(float, col), dtype=np.float64, count=len(col))  # type: ignore[arg-type]
        except ValueError:  # ISO 8601
            return _each(_epoch, col, np.float64)
        bad = np.flatnonzero(~np.isfinite(t))
        if len(bad):
            raise _RowError(int(bad[0]), f"timestamp must be ISO 8601 or epoch seconds, got {col[bad[0]]!r}")
        return t

    @staticmethod
    def counts(parse: Callable[[object], int], col: Sequence[object], *, text: bool) -> npt.NDArray[np.int64]:
        try:
            if text:
                a = np.fromiter(map(int, col), dtype=np.int64, count=len(col))  # type: ignore[arg-type]
            elif all(type(v) is int for v in col):
                a = np.array(col, dtype=np.int64)
            else:
                raise ValueError  # a float, a boolean, a missing value: refused one by one
        except (ValueError, OverflowError):
            return _each(parse, col, np.int64)
        bad = np.flatnonzero(a < 0)
        if len(bad):
            return _each(parse, col, np.int64)  # raises, naming the first
        return a

    def trace(self, where: str) -> Trace:
        if not self.rows:
            raise TraceError(where, "no requests (an empty trace)")
        t, model, prompt, image, output, priority, key = (np.concatenate(c) for c in zip(*self.parts, strict=True))
        return _sorted(
            Trace(
                t=t,
                model=model,
                prompt_tokens=prompt,
                image_tokens=image,
                output_tokens=output,
                priority=priority,
                key=key,
                models=tuple(self.models),
                keys=tuple(self.keys),
                source=where,
            )
        )


def _sorted(trace: Trace) -> Trace:
    """The same requests in arrival order (a stable sort: rows with equal times keep the file's order)."""
    if len(trace.t) < 2 or bool(np.all(trace.t[1:] >= trace.t[:-1])):
        return trace
    order = np.argsort(trace.t, kind="stable")
    return Trace(
        t=trace.t[order],
        model=trace.model[order],
        prompt_tokens=trace.prompt_tokens[order],
        image_tokens=trace.image_tokens[order],
        output_tokens=trace.output_tokens[order],
        priority=trace.priority[order],
        key=trace.key[order],
        models=trace.models,
        keys=trace.keys,
        source=trace.source,
    )


def _format(path: Path) -> tuple[str, bool]:
    """("csv" | "jsonl", gzipped) from the file's name."""
    suffixes = [s.lower() for s in path.suffixes]
    gz = bool(suffixes) and suffixes[-1] == ".gz"
    if gz:
        suffixes = suffixes[:-1]
    kind = suffixes[-1] if suffixes else ""
    if kind not in SUFFIXES:
        raise TraceError(str(path), "a trace file must end in .csv, .jsonl or .ndjson (optionally .gz)")
    return ("csv" if kind == ".csv" else "jsonl"), gz


def read_trace(path: str | Path) -> Trace:
    """Read a trace file: CSV with a header row, or JSON Lines, chosen by the name (``.csv``, ``.jsonl``,
    ``.ndjson``, each optionally ``.gz``).

    Fields: ``timestamp`` (ISO 8601 with or without an offset, naive meaning UTC; or epoch seconds, a
    number or its text), ``model``, ``prompt_tokens`` and ``output_tokens`` (integers >= 0), and
    optionally ``images`` (a list of ``[width, height]``; in a CSV its JSON text such as ``[[1600,1200]]``,
    empty for none), ``priority`` (low, normal or high; normal when absent) and ``key`` (any string; ""
    when absent). Other columns are ignored. Each image costs what Qwen3-VL's processor makes of it
    (:func:`frugalserve.budget.vision.image_tokens`, markers included). Rows are put in time order (a
    stable sort) when the file is not.

    Raises :class:`TraceError` naming ``file:line`` and the field for a bad value, the column for a
    missing one, and the file for an empty trace.
    """
    path = Path(path)
    name = str(path)
    kind, gz = _format(path)
    table = _Table()
    # A chunk of rows is tens of thousands of new lists: the cyclic collector would walk them again and
    # again (twice the reading time) although none can be part of a cycle.
    collecting = gc.isenabled()
    gc.disable()
    try:
        try:
            if kind == "csv":
                opener = gzip.open if gz else open
                with opener(path, "rt", encoding="utf-8-sig", newline="") as text:
                    _read_csv(text, name, table)
            else:
                with gzip.open(path, "rb") if gz else open(path, "rb") as raw:
                    _read_jsonl(raw, name, table)
        except _RowError as exc:
            raise TraceError(f"{name}:{_line_of(path, kind, gz, exc.row)}", exc.message) from None
    except UnicodeDecodeError:
        raise TraceError(name, "not UTF-8 text") from None
    except csv.Error as exc:
        raise TraceError(name, f"not valid CSV ({exc})") from None
    except OSError as exc:  # a missing file, a bad gzip stream
        raise TraceError(name, exc.strerror or str(exc)) from None
    finally:
        if collecting:
            gc.enable()
    return table.trace(name)


def _csv_rows(text: Iterable[str]) -> Iterator[tuple[int, list[str]]]:
    """(line, cells) of each data row (blank lines skipped); the header is line 1."""
    reader = csv.reader(text)
    next(reader, None)
    for row in reader:
        if row:
            yield reader.line_num, row


def _jsonl_lines(raw: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """(line, text) of each non-blank line."""
    for n, line in enumerate(raw, 1):
        if n == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]
        if line.strip():
            yield n, line


def _line_of(path: Path, kind: str, gz: bool, row: int) -> int:
    """The line of data row ``row``: read again, only when an error names it."""
    if kind == "csv":
        with (gzip.open if gz else open)(path, "rt", encoding="utf-8-sig", newline="") as text:
            rows: Iterator[tuple[int, object]] = _csv_rows(text)
            return next(itertools.islice(rows, row, None))[0]
    with gzip.open(path, "rb") if gz else open(path, "rb") as raw:
        return next(itertools.islice(_jsonl_lines(raw), row, None))[0]


def _read_csv(text: Iterable[str], name: str, table: _Table) -> None:
    reader = csv.reader(text)
    header = next(reader, None)
    if header is None:
        raise TraceError(name, "no requests (an empty trace)")
    columns = [h.strip().lower() for h in header]
    for c in REQUIRED + OPTIONAL:
        if columns.count(c) > 1:
            raise TraceError(f"{name}:1", f"column {c!r} appears twice")
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise TraceError(f"{name}:1", f"missing column {missing[0]!r} (the header has {', '.join(columns)})")
    at = [columns.index(c) for c in REQUIRED]
    at_optional = [columns.index(c) if c in columns else -1 for c in OPTIONAL]
    width = len(columns)
    pad = [""] * width
    rows: list[list[str]] = []

    def flush() -> None:
        if min(map(len, rows)) < width:
            rows[:] = [r if len(r) >= width else r + pad[len(r) :] for r in rows]
        table.add(
            [[r[i] for r in rows] for i in at],
            [[r[i] for r in rows] if i >= 0 else None for i in at_optional],
            text=True,
        )
        rows.clear()

    while True:
        rows[:] = itertools.islice(reader, CHUNK_ROWS)
        if not rows:
            return
        if not all(rows):
            rows[:] = [r for r in rows if r]  # blank lines
        if rows:
            flush()


def _read_jsonl(raw: Iterable[bytes], name: str, table: _Table) -> None:
    objs: list[dict[str, Any]] = []
    loads = orjson.loads

    def flush() -> None:
        table.add(
            [[o.get(f, _MISSING) for o in objs] for f in REQUIRED],
            [[o.get(f) for o in objs] if any(f in o for o in objs) else None for f in OPTIONAL],
            text=False,
        )
        objs.clear()

    for n, line in _jsonl_lines(raw):
        try:
            obj = loads(line)
        except orjson.JSONDecodeError as exc:
            raise TraceError(f"{name}:{n}", f"not valid JSON ({exc})") from None
        if not isinstance(obj, dict):
            raise TraceError(f"{name}:{n}", f"a line must be a JSON object, got {type(obj).__name__}")
        objs.append(obj)
        if len(objs) == CHUNK_ROWS:
            flush()
    if objs:
        flush()


# ---------------------------------------------------------------------------------------------------------
# The synthetic generator

TOKEN_SIGMA = 0.5  # lognormal sigma of prompt and output lengths
DIURNAL_PEAK_HOUR = 15.0
DIURNAL_AMPLITUDE = 0.8
DEFAULT_MODEL = ("demo",)

# The field reports' traffic, as spec text (every key is documented in synthetic()). The token and image
# numbers of seed002 are the planner's choice: the report gives only the rate and its shape.
PRESETS: dict[str, str] = {
    "seed000": (
        "requests_per_day=800,weekdays=mon-fri,hours=9-18,timezone=Asia/Shanghai,shape=flat,"
        "prompt_tokens=600,output_tokens=60,image_share=0.3,image=1280x960"
    ),
    "seed002": (
        "requests_per_day=230000,weekdays=all,hours=0-24,shape=diurnal,weekend_factor=0.6,"
        "bursts_per_day=4,burst_size=300,burst_s=30,prompt_tokens=800,output_tokens=200,image_share=0.25"
    ),
}


@dataclass(frozen=True, slots=True)
class SyntheticSpec:
    """A parsed generator spec (see :func:`synthetic` for each field's meaning)."""

    requests_per_day: float = 1000.0
    days: int = 7
    start: date = date(2026, 1, 5)
    timezone: str = "UTC"
    hours: tuple[int, int] = (0, 24)
    weekdays: str = "all"  # "all" | "mon-fri"
    weekend_factor: float = 1.0
    shape: str = "flat"  # "flat" | "diurnal"
    bursts_per_day: int = 0
    burst_size: int = 20
    burst_s: float = 10.0
    model: tuple[str, ...] = DEFAULT_MODEL
    model_weights: tuple[float, ...] = (1.0,)
    prompt_tokens: float = 600.0
    output_tokens: float = 60.0
    image_share: float = 0.0
    image: tuple[int, int] = (1024, 768)  # width, height
    seed: int = 0
    text: str = "seed=0"  # the normalised spec


def _bad(key: str, expected: str, raw: str) -> TraceError:
    return TraceError("synthetic", f"{key} must be {expected}, got {raw!r}")


def _number(key: str, raw: str, low: float, *, above: bool = False, high: float = math.inf) -> float:
    try:
        x = float(raw)
    except ValueError:
        x = math.nan
    ok = math.isfinite(x) and (x > low if above else x >= low) and x <= high
    if not ok:
        bound = f"> {low:g}" if above else f">= {low:g}"
        raise _bad(key, f"a number {bound}" + (f" and <= {high:g}" if high < math.inf else ""), raw)
    return x


def _integer(key: str, raw: str, low: int) -> int:
    try:
        n = int(raw)
    except ValueError:
        raise _bad(key, f"an integer >= {low}", raw) from None
    if n < low:
        raise _bad(key, f"an integer >= {low}", raw)
    return n


def _split_items(spec: str) -> tuple[str | None, dict[str, str]]:
    """(preset, overrides in the order given; a key given twice keeps its place and takes the last value)."""
    preset: str | None = None
    overrides: dict[str, str] = {}
    for i, item in enumerate(p.strip() for p in spec.split(",")):
        if not item:
            raise TraceError("synthetic", f"empty item in spec {spec!r}")
        if "=" not in item:
            if i == 0 and item in PRESETS:
                preset = item
                continue
            what = "unknown preset" if i == 0 else "expected key=value, got"
            raise TraceError("synthetic", f"{what} {item!r} (presets: {', '.join(PRESETS)})")
        key, _, value = item.partition("=")
        overrides[key.strip()] = value.strip()
    return preset, overrides


_KEYS = tuple(f for f in SyntheticSpec.__dataclass_fields__ if f != "text")


def parse_synthetic(spec: str) -> SyntheticSpec:
    """Parse a generator spec (see :func:`synthetic`); raises :class:`TraceError` naming the key."""
    preset, overrides = _split_items(spec)
    for key in overrides:
        if key not in _KEYS:
            raise TraceError("synthetic", f"unknown key {key!r} (keys: {', '.join(_KEYS)})")
    values: dict[str, str] = {}
    if preset is not None:
        values.update(item.partition("=")[::2] for item in PRESETS[preset].split(","))
    values.update(overrides)
    out: dict[str, Any] = {}
    if "requests_per_day" in values:
        out["requests_per_day"] = _number("requests_per_day", values["requests_per_day"], 0, above=True)
    if "days" in values:
        out["days"] = _integer("days", values["days"], 1)
    if "start" in values:
        try:
            out["start"] = date.fromisoformat(values["start"])
        except ValueError:
            raise _bad("start", "an ISO date (YYYY-MM-DD)", values["start"]) from None
    if "timezone" in values:
        try:
            ZoneInfo(values["timezone"])
        except (ZoneInfoNotFoundError, ValueError):
            raise _bad("timezone", "an IANA timezone like Europe/Paris", values["timezone"]) from None
        out["timezone"] = values["timezone"]
    if "hours" in values:
        h1, _, h2 = values["hours"].partition("-")
        try:
            hours = (int(h1), int(h2))
        except ValueError:
            hours = (0, 0)
        if not 0 <= hours[0] < hours[1] <= 24:
            raise _bad("hours", "H1-H2 with 0 <= H1 < H2 <= 24", values["hours"])
        out["hours"] = hours
    if "weekdays" in values:
        if values["weekdays"] not in ("all", "mon-fri"):
            raise _bad("weekdays", "all or mon-fri", values["weekdays"])
        out["weekdays"] = values["weekdays"]
    if "weekend_factor" in values:
        out["weekend_factor"] = _number("weekend_factor", values["weekend_factor"], 0)
    if "shape" in values:
        if values["shape"] not in ("flat", "diurnal"):
            raise _bad("shape", "flat or diurnal", values["shape"])
        out["shape"] = values["shape"]
    if "bursts_per_day" in values:
        out["bursts_per_day"] = _integer("bursts_per_day", values["bursts_per_day"], 0)
    if "burst_size" in values:
        out["burst_size"] = _integer("burst_size", values["burst_size"], 1)
    if "burst_s" in values:
        out["burst_s"] = _number("burst_s", values["burst_s"], 0)
    models: tuple[str, ...] = DEFAULT_MODEL
    if "model" in values:
        models = tuple(m.strip() for m in values["model"].split("|"))
        if not all(models):
            raise _bad("model", "one name or several as a|b", values["model"])
        out["model"] = models
    raw_weights = values.get("model_weights")
    if raw_weights is not None:
        weights = tuple(_number("model_weights", w.strip(), 0) for w in raw_weights.split("|"))
        if len(weights) != len(models) or sum(weights) <= 0:
            raise _bad("model_weights", f"{len(models)} weights a|b|... (one per model), not all 0", raw_weights)
    else:
        weights = (1.0,) * len(models)
    out["model_weights"] = tuple(w / sum(weights) for w in weights)
    for key in ("prompt_tokens", "output_tokens"):
        if key in values:
            out[key] = _number(key, values[key], 0, above=True)
    if "image_share" in values:
        out["image_share"] = _number("image_share", values["image_share"], 0, high=1)
    if "image" in values:
        w, _, h = values["image"].lower().partition("x")
        try:
            size = (int(w), int(h))
            image_tokens(size[1], size[0])
        except (ValueError, AspectRatioError):
            raise _bad("image", "WxH in pixels, like 1024x768", values["image"]) from None
        out["image"] = size
    seed = _integer("seed", overrides.get("seed", "0"), 0)
    out["seed"] = seed
    items = ([preset] if preset else []) + [f"{k}={x}" for k, x in overrides.items() if k != "seed"]
    out["text"] = ",".join([*items, f"seed={seed}"])
    return SyntheticSpec(**out)


def diurnal_weight(hour: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The ``diurnal`` shape's relative rate at local clock time ``hour`` (0..24, fractional):
    ``1 + 0.8 cos(2 pi (hour - 15) / 24)``, peak 1.8 at 15:00, trough 0.2 at 03:00 (a 9:1 ratio)."""
    return 1.0 + DIURNAL_AMPLITUDE * np.cos(2.0 * np.pi * (hour - DIURNAL_PEAK_HOUR) / 24.0)


def minute_profile(spec: SyntheticSpec) -> npt.NDArray[np.float64]:
    """The share of an active day's requests that arrive in each local minute of the day (1440, sum 1)."""
    minutes = np.arange(1440, dtype=np.float64)
    active = (minutes >= spec.hours[0] * 60) & (minutes < spec.hours[1] * 60)
    weight = diurnal_weight((minutes + 0.5) / 60.0) if spec.shape == "diurnal" else np.ones(1440)
    weight = np.where(active, weight, 0.0)
    return np.asarray(weight / weight.sum(), dtype=np.float64)


def _utc_offsets(t: npt.NDArray[np.float64], tz: ZoneInfo) -> npt.NDArray[np.float64]:
    """The zone's UTC offset (seconds) at each instant of ``t`` (evenly spaced minutes): looked up once an
    hour, and per minute only in an hour where it changes (a DST switch)."""

    def offset(x: float) -> float:
        off = datetime.fromtimestamp(x, tz).utcoffset()
        return off.total_seconds() if off is not None else 0.0

    t0 = float(t[0])
    hour_of = ((t - t0) // 3600).astype(np.int64)
    n_hours = int(hour_of[-1]) + 2
    per_hour = np.array([offset(t0 + 3600.0 * h) for h in range(n_hours)])
    out = per_hour[hour_of]
    for h in np.flatnonzero(per_hour[1:] != per_hour[:-1]):
        idx = np.flatnonzero(hour_of == h)
        out[idx] = [offset(float(x)) for x in t[idx]]
    return out


def synthetic(spec: str) -> Trace:
    """Generate traffic from a spec: a preset name, optionally followed by ``key=value`` overrides, or just
    overrides, comma-separated (``"seed000"``, ``"seed002,days=30,seed=7"``,
    ``"requests_per_day=500,hours=8-20,weekdays=all"``).

    Keys:

    - ``requests_per_day``: the mean number of requests on an active weekday (default 1000).
    - ``days``: how many local days the trace covers (default 7).
    - ``start``: the first day, an ISO date; the trace starts at its 00:00 in ``timezone`` (default
      2026-01-05, a Monday).
    - ``timezone``: the IANA zone the day and week shapes follow (default UTC). The rate is a function of
      the local clock time, so a day that DST makes 25 hours long repeats an hour's traffic.
    - ``hours``: ``H1-H2``, the active local hours [H1:00, H2:00); no request arrives outside them
      (default 0-24).
    - ``weekdays``: ``mon-fri`` (no requests on Saturday and Sunday) or ``all`` (default all).
    - ``weekend_factor``: with ``weekdays=all``, Saturday's and Sunday's rate as a multiple of a
      weekday's (default 1.0).
    - ``shape``: how an active day's requests spread over its active hours. ``flat``: evenly.
      ``diurnal``: in proportion to ``1 + 0.8 cos(2 pi (h - 15) / 24)`` at local time h (hours), so the
      rate peaks at 15:00 and is lowest at 03:00, 9 times lower (:func:`diurnal_weight`) (default flat).
    - ``bursts_per_day``: bursts on each active day, exactly this many (default 0). A burst starts at a
      time drawn from that day's rate curve (so within its active hours, more likely at its busy times).
    - ``burst_size``: requests each burst adds on top of the regular traffic (default 20).
    - ``burst_s``: a burst's requests arrive uniformly within this many seconds of its start (default 10).
    - ``model``: the model requests name (default ``demo``); several as ``a|b``, chosen per request
      with ``model_weights`` (``0.8|0.2``; default equal weights).
    - ``prompt_tokens``, ``output_tokens``: mean text prompt and output lengths; each request's is
      lognormal with sigma 0.5 around that mean, rounded, at least 1 (defaults 600 and 60).
    - ``image_share``: the share of requests carrying one image (default 0), of size ``image``
      (``WxH``, default 1024x768), costing Qwen3-VL's visual tokens for that size.
    - ``seed``: the random seed (default 0). The same spec and seed give the same trace, bit for bit.

    Presets (:data:`PRESETS`): ``seed000``: 800 requests per weekday between 09:00 and 18:00
    Asia/Shanghai time, none at weekends, prompts of about 600 tokens and answers of about 60 (about 1.2
    s each on one replica), 30% with one 1280x960 image. ``seed002``: 230,000 requests a day, every day,
    diurnal over 24 h, weekends at 0.6, 4 bursts a day of 300 requests within 30 s, prompts of about 800
    tokens and answers of about 200, 25% with one 1024x768 image.

    Arrivals are a non-homogeneous Poisson process: each UTC minute's count is Poisson with the rate at
    its local clock time (``requests_per_day`` x the day's factor x :func:`minute_profile`), its arrivals
    uniform within the minute. Three independent streams of ``np.random.default_rng`` (spawned from
    ``SeedSequence(seed)``) draw the regular arrivals, the bursts and the request sizes, so that adding
    bursts adds exactly ``bursts_per_day x burst_size`` requests per active day and keeps the others'
    times. Raises :class:`TraceError` naming the key of a bad value or an unknown key.
    """
    s = parse_synthetic(spec)
    tz = ZoneInfo(s.timezone)
    t0 = datetime.combine(s.start, time(0), tz).timestamp()
    t1 = datetime.combine(s.start + timedelta(days=s.days), time(0), tz).timestamp()
    minute_t = t0 + 60.0 * np.arange(math.ceil((t1 - t0) / 60.0), dtype=np.float64)
    local = minute_t + _utc_offsets(minute_t, tz)
    local_day = np.floor(local / 86400.0).astype(np.int64)
    weekday = (local_day + 3) % 7  # 1970-01-01 was a Thursday; Monday is 0
    minute_of_day = ((local - local_day * 86400.0) // 60.0).astype(np.int64)
    weekend = weekday >= 5
    day_factor = np.where(weekend, 0.0 if s.weekdays == "mon-fri" else s.weekend_factor, 1.0)
    rate = s.requests_per_day * day_factor * minute_profile(s)[minute_of_day]  # expected requests per minute

    arrivals_ss, bursts_ss, sizes_ss = np.random.SeedSequence(s.seed).spawn(3)
    rng = np.random.default_rng(arrivals_ss)
    counts = rng.poisson(rate)
    t = np.repeat(minute_t, counts) + 60.0 * rng.random(int(counts.sum()))
    if s.bursts_per_day:
        t = np.concatenate([t, _bursts(s, minute_t, local_day, rate, np.random.default_rng(bursts_ss))])
    if len(t) == 0:
        raise TraceError("synthetic", f"{s.text} generates no requests")
    t.sort()
    n = len(t)

    rng = np.random.default_rng(sizes_ss)
    if len(s.model) == 1:
        model = np.zeros(n, dtype=np.int32)
    else:
        cdf = np.cumsum(s.model_weights)
        model = np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), len(s.model) - 1)
        model = model.astype(np.int32)
    prompt = _lengths(rng, s.prompt_tokens, n)
    output = _lengths(rng, s.output_tokens, n)
    images = np.zeros(n, dtype=np.int64)
    if s.image_share > 0:
        images[rng.random(n) < s.image_share] = image_tokens(s.image[1], s.image[0])
    return Trace(
        t=t,
        model=model,
        prompt_tokens=prompt,
        image_tokens=images,
        output_tokens=output,
        priority=np.full(n, NORMAL, dtype=np.int8),
        key=np.zeros(n, dtype=np.int32),
        models=s.model,
        source=f"synthetic {s.text}",
    )


def _lengths(rng: np.random.Generator, mean: float, n: int) -> npt.NDArray[np.int64]:
    """Token counts: lognormal with sigma 0.5 and the given mean (mu = ln(mean) - sigma^2 / 2), at least 1."""
    x = rng.lognormal(math.log(mean) - TOKEN_SIGMA**2 / 2, TOKEN_SIGMA, n)
    return np.maximum(np.rint(x), 1.0).astype(np.int64)


def _bursts(
    s: SyntheticSpec,
    minute_t: npt.NDArray[np.float64],
    local_day: npt.NDArray[np.int64],
    rate: npt.NDArray[np.float64],
    rng: np.random.Generator,
) -> npt.NDArray[np.float64]:
    """Arrival times of every burst: ``bursts_per_day`` a day on each day with traffic, each starting at a
    time drawn from that day's rate curve and spreading ``burst_size`` requests over ``burst_s``."""
    starts: list[npt.NDArray[np.float64]] = []
    bounds = np.flatnonzero(np.diff(local_day)) + 1
    for lo, hi in zip(np.concatenate([[0], bounds]), np.concatenate([bounds, [len(local_day)]]), strict=True):
        day_rate = rate[lo:hi]
        total = day_rate.sum()
        if total <= 0:
            continue
        cdf = np.cumsum(day_rate) / total
        idx = np.minimum(np.searchsorted(cdf, rng.random(s.bursts_per_day), side="right"), hi - lo - 1)
        starts.append(minute_t[lo:hi][idx] + 60.0 * rng.random(s.bursts_per_day))
    if not starts:
        return np.zeros(0, dtype=np.float64)
    start = np.repeat(np.concatenate(starts), s.burst_size)
    return np.asarray(start + s.burst_s * rng.random(len(start)), dtype=np.float64)


# ---------------------------------------------------------------------------------------------------------
# The gateway's own usage records


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def from_db(url: str, since: float | None = None, until: float | None = None) -> Trace:
    """The requests this gateway served in [since, until) (epoch seconds; None: unbounded), from its
    accounting store's ``usage_records`` (a SQLAlchemy URL, as ``gateway.database``).

    One row per record, in start order: the time it started; the model the client named; the text tokens
    of its prompt (``prompt_text_tokens``, else the gateway's count, ``counted_prompt_tokens``, or the
    backend's ``prompt_tokens``, less its image and video tokens, never below 0: the breakdown is the
    gateway's, so its own total is subtracted from first); its image plus video tokens; its completion
    tokens (0 when none were reported); its key id ("" without auth). Priorities are not stored: every
    request is ``normal``. Raises :class:`TraceError` when the store cannot be read or the window holds
    no record.
    """
    import sqlalchemy as sa

    from frugalserve.accounting import store

    shown = sa.engine.make_url(store.normalize_url(url)).render_as_string(hide_password=True)
    window = f"[{_iso(since) if since is not None else '-inf'}, {_iso(until) if until is not None else '+inf'})"
    where = f"{shown} {window}"
    database = sa.engine.make_url(store.normalize_url(url))
    if database.get_backend_name() == "sqlite" and database.database not in (None, "", ":memory:"):
        if not Path(database.database).expanduser().exists():  # reading must not create an empty database
            raise TraceError(shown, "no such database file")
    c = store.usage_records.c
    q = sa.select(
        c.time,
        c.model,
        c.key_id,
        c.prompt_text_tokens,
        c.counted_prompt_tokens,
        c.prompt_tokens,
        c.prompt_image_tokens,
        c.prompt_video_tokens,
        c.completion_tokens,
    ).order_by(c.time, c.id)
    if since is not None:
        q = q.where(c.time >= since)
    if until is not None:
        q = q.where(c.time < until)
    engine = store.create_engine(url)
    cols = _Rows()
    try:
        with engine.connect() as conn:
            result = conn.execution_options(yield_per=50_000).execute(q)
            for part in result.partitions():
                cols.add_all(part)
    except sa.exc.SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise TraceError(shown, f"cannot read usage records: {detail}") from None
    finally:
        engine.dispose()
    if not cols.t:
        raise TraceError(where, "no usage records in this window")
    return cols.trace(f"usage records in {where}, {len(cols.t)} requests")


class _Rows:
    """Usage records as trace columns."""

    def __init__(self) -> None:
        self.t: list[float] = []
        self.model: list[int] = []
        self.prompt: list[int] = []
        self.image: list[int] = []
        self.output: list[int] = []
        self.key: list[int] = []
        self.models: dict[str, int] = {}
        self.keys: dict[str, int] = {"": 0}

    def add_all(self, rows: Iterable[Any]) -> None:
        models, keys = self.models, self.keys
        for t, model, key, text, counted, backend, image, video, completion in rows:
            visual = (image or 0) + (video or 0)
            if text is None:
                total = counted if counted is not None else backend
                text = max(0, (total or 0) - visual)
            self.t.append(float(t))
            self.model.append(models.setdefault(model, len(models)))
            self.key.append(keys.setdefault(key or "", len(keys)))
            self.prompt.append(text)
            self.image.append(visual)
            self.output.append(completion or 0)

    def trace(self, source: str) -> Trace:
        n = len(self.t)
        return _sorted(
            Trace(
                t=np.array(self.t, dtype=np.float64),
                model=np.array(self.model, dtype=np.int32),
                prompt_tokens=np.array(self.prompt, dtype=np.int64),
                image_tokens=np.array(self.image, dtype=np.int64),
                output_tokens=np.array(self.output, dtype=np.int64),
                priority=np.full(n, NORMAL, dtype=np.int8),
                key=np.array(self.key, dtype=np.int32),
                models=tuple(self.models),
                keys=tuple(self.keys),
                source=source,
            )
        )
