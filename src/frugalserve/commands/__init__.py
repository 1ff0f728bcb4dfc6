"""One module per ``frugalserve`` subcommand: ``configure(parser)`` and ``run(args) -> int``."""

from __future__ import annotations

import sys

from frugalserve import config as cfg


def load_config(path: str | None) -> cfg.Config | None:
    """The chosen config, or None after printing its first error (the command then exits with 2)."""
    try:
        return cfg.load(path)
    except cfg.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
