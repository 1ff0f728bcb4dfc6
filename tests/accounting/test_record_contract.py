"""The contract between the request path and accounting: every RequestRecord fact has its column."""

from __future__ import annotations

import dataclasses

from frugalserve.accounting import store
from frugalserve.accounting.store import COMPUTED_COLUMNS, RECORD_COLUMNS, RENAMED_COLUMNS
from frugalserve.records import RequestRecord

# Fields that are deliberately not stored, with the reason.
NOT_STORED = {
    "started_mono": "a monotonic clock reading, meaningless outside the process",
    "trace": "the request's live spans while tracing is on; they go to the OTLP collector",
}


def test_every_record_field_has_a_column():
    stored = {name for _, name in RECORD_COLUMNS}
    fields = {f.name for f in dataclasses.fields(RequestRecord)}
    assert fields - stored == set(NOT_STORED)


def test_every_column_is_a_record_field_or_computed_by_accounting():
    fields = {f.name for f in dataclasses.fields(RequestRecord)}
    for column in store.usage_records.columns:
        if column.name in COMPUTED_COLUMNS:
            continue
        assert RENAMED_COLUMNS.get(column.name, column.name) in fields, column.name
