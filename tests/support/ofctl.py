"""The real ``ovs-ofctl`` as an oracle for rule text: how it parses, prints or rejects a line.

What: :func:`parse_flow` runs ``ovs-ofctl parse-flow LINE`` (no switch needed) and returns the
finished process; a test that calls it is skipped, with a note, where OVS is not installed
(.ci/run installs it).
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

OFCTL = shutil.which("ovs-ofctl")


def parse_flow(line: str, check: bool = False) -> subprocess.CompletedProcess:
    """``ovs-ofctl parse-flow line`` (``check``: a non-zero exit raises)."""
    if OFCTL is None:
        pytest.skip("ovs-ofctl is not installed: cannot compare with the real OVS")
    return subprocess.run([OFCTL, "parse-flow", line], capture_output=True, text=True,
                          timeout=30, check=check)  # fmt: skip
