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


class ConfigError(CtaccelError):
    """A configuration file (security groups, ports) is invalid and was rejected whole.

    ``str()`` is ``file: object: field: reason``, e.g. ``groups.json: security_groups[2] (id
    sg-web) security_group_rules[4]: port_range_min: must be an integer 0-65535, got "http"``;
    the object and field parts are left out where they do not apply (a JSON syntax error gives
    ``file: line L col C: ...``)."""

    def __init__(self, reason: str, filename: str = "<config>", where: str = "", field: str = ""):
        self.reason = reason
        self.filename = filename
        self.where = where
        self.field = field
        parts = [p for p in (filename, where, field) if p]
        super().__init__(": ".join(parts + [reason]))
