"""Kernel conntrack in tests: a network namespace of the test's own, and entries built from dicts.

``netns_fixture`` makes a namespace (always deleted); without root or ``ip`` the test is
skipped, except under ``CI=true`` where that is a failure. ``entries`` builds io/ctnetlink
KernelEntries from dicts of column values, addresses as strings.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import struct
import subprocess
import uuid

import pytest

from ctaccel.io.ctnetlink import KernelEntries


def words(addr: str) -> list[int]:
    """ctaccel's convention: 4 words most significant first, IPv4 in word 3."""
    packed = ipaddress.ip_address(addr).packed.rjust(16, b"\0")
    return list(struct.unpack(">4I", packed))


def entries(*rows: dict) -> KernelEntries:
    """KernelEntries from dicts of column values (addresses as strings)."""
    e = KernelEntries.empty(len(rows))
    for i, row in enumerate(rows):
        for name, value in row.items():
            getattr(e, name)[i] = words(value) if isinstance(value, str) else value
    return e


def unavailable(reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}, and CI=true: the kernel tests must run", pytrace=False)
    pytest.skip(reason)


def netns_fixture():
    if os.geteuid() != 0:
        unavailable("kernel conntrack tests need root (a network namespace of their own)")
    if shutil.which("ip") is None:
        unavailable("kernel conntrack tests need the ip command")
    name = f"ctnl-{uuid.uuid4().hex[:8]}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode:
        unavailable(f"ip netns add failed: {made.stderr.strip()}")
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def in_ns(netns: str, *cmd: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", netns, *cmd], input=stdin, capture_output=True,
                          text=True, timeout=20)  # fmt: skip
