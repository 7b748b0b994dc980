"""One error hierarchy for misuse and bad configuration.

Bad *packets* are never exceptions: they are results (an ``inv`` ct_state or a named drop
reason). Exceptions are for bad rule files, unreadable inputs and API misuse.
"""

from __future__ import annotations


class CtaccelError(Exception):
    """Base class of every error ctaccel raises on purpose."""


class RuleError(CtaccelError):
    """A rule file (or one rule) is invalid. ``str()`` is ``file:line: reason``."""

    def __init__(self, reason: str, filename: str = "<rules>", line: int = 0):
        self.reason = reason
        self.filename = filename
        self.line = line
        super().__init__(f"{filename}:{line}: {reason}" if line else f"{filename}: {reason}")


class InputError(CtaccelError):
    """A capture or other input file is missing, unreadable or not in a known format."""
