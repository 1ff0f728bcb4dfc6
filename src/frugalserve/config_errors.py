""":class:`ConfigError`, in a module of its own so that every config section can import it.

The sections live beside the code that uses them (``budget/limits.py``, ``lifecycle/config.py``, ...) and
:mod:`frugalserve.config` imports them all; a leaf module here keeps that graph free of cycles.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A config problem. ``str()`` is ``"<path>: <message>"``; ``path`` and ``message`` are kept apart so
    that code adding context (the file name) never repeats the path."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message
