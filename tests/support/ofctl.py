"""The real ``ovs-ofctl`` as an oracle for rule text: how it parses, prints or rejects a line.

What: :func:`parse_flow` runs ``ovs-ofctl parse-flow LINE`` (no switch needed) and returns the
finished process; a test that calls it is skipped, with a note, where OVS is not installed
(.ci/run installs it). :func:`rejection` is ctaccel's reason for refusing a line, and
:func:`assert_ovs_ofctl_agrees` checks a table of printed and refused lines against ovs-ofctl.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from ctaccel.errors import RuleError
from ctaccel.ofproto.rules import parse_flows

OFCTL = shutil.which("ovs-ofctl")


def parse_flow(line: str, check: bool = False) -> subprocess.CompletedProcess:
    """``ovs-ofctl parse-flow line`` (``check``: a non-zero exit raises)."""
    if OFCTL is None:
        pytest.skip("ovs-ofctl is not installed: cannot compare with the real OVS")
    return subprocess.run([OFCTL, "parse-flow", line], capture_output=True, text=True,
                          timeout=30, check=check)  # fmt: skip


def rejection(line: str) -> str:
    """The reason ctaccel refuses ``line`` with (a RuleError is required)."""
    with pytest.raises(RuleError) as err:
        parse_flows(line, "r.flows")
    return err.value.reason


def assert_ovs_ofctl_agrees(printed, rejected) -> None:
    """ovs-ofctl's output for each ``(line, text)`` of ``printed`` contains ``text``, and it
    refuses each ``(line, reason)`` of ``rejected`` saying ``reason``."""
    for line, text in printed:
        out = parse_flow(line, check=True).stdout.replace("ADD  ", "ADD ")
        assert text in out, (line, out)
    for line, reason in rejected:
        done = parse_flow(line)
        assert done.returncode != 0 and reason.strip() in done.stderr, (line, done.stderr)
