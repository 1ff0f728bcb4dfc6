"""The ``auth:`` and ``accounting:`` config sections (parsed by :func:`frugalserve.config.parse`).

This module imports nothing heavy: :mod:`frugalserve.config` imports it for every command.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class AuthConfig:
    # Off by default so the local demo needs no key; the gateway warns loudly when it listens beyond
    # loopback with auth off.
    enabled: bool = False
    # Environment variable holding the admin key (for /admin routes); unset: admin routes answer 401.
    admin_key_env: str = "FRUGALSERVE_ADMIN_KEY"

    def validate(self, path: str) -> None:
        from frugalserve.config_errors import ConfigError

        if not self.admin_key_env:
            raise ConfigError(f"{path}.admin_key_env", "must not be empty")


@dataclass(frozen=True)
class AccountingConfig:
    enabled: bool = True  # write usage records and replica events to gateway.database
    batch_size: int = 500  # records per INSERT; a full batch is written at once
    flush_interval_s: float = 1.0  # longest a record waits in memory before it is written
    spool_path: str = "frugalserve-spool.jsonl"  # where batches go while the database is unreachable
    dead_letter_path: str = "frugalserve-dead-letter.jsonl"  # single rows the database refused, with the error
    # batch: records wait in memory up to flush_interval_s (a kill -9 loses those); wal: each record is also
    # appended to journal_path before its response ends and replayed at the next start (see docs/accounting.md)
    durability: Literal["batch", "wal"] = "batch"
    journal_path: str = "frugalserve-journal.jsonl"
    journal_fsync: bool = False  # wal: fsync every record too (survives power loss; costs a disk flush each)
    retention_days: float = 0.0  # delete records and events older than this; 0 keeps everything
    budget_refresh_s: float = 5.0  # how often keys and spend are re-read from the database
    anomaly_threshold: float = 6.0  # robust z-score (median/MAD) above which a request is flagged
    anomaly_history: int = 200  # recent requests per key+pool the statistics are taken over
    anomaly_min_history: int = 20  # no flags until a key+pool has this many requests

    def validate(self, path: str) -> None:
        from frugalserve.config_errors import ConfigError

        for name in ("batch_size", "anomaly_history", "anomaly_min_history"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{path}.{name}", "must be >= 1")
        for name in ("flush_interval_s", "budget_refresh_s", "anomaly_threshold"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{path}.{name}", "must be > 0")
        if self.retention_days < 0:
            raise ConfigError(f"{path}.retention_days", "must be >= 0 (0 keeps everything)")
        for name in ("spool_path", "dead_letter_path", "journal_path"):
            if not getattr(self, name):
                raise ConfigError(f"{path}.{name}", "must not be empty")
        if len({self.spool_path, self.dead_letter_path, self.journal_path}) < 3:
            raise ConfigError(f"{path}.dead_letter_path", "spool, dead-letter and journal paths must differ")
