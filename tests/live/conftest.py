"""The live tests' ground rules: root and the tools they drive, or no live tests (under CI:
an error, not a skip); a fresh two-namespace topology per test, always removed."""

from __future__ import annotations

import os

import pytest

from ctaccel.bench.netns import Topology, missing_tools

if os.geteuid() != 0 or missing_tools():
    if os.environ.get("CI") == "true":
        raise RuntimeError(f"live tests need root and {missing_tools()} under CI")
    collect_ignore_glob = ["test_*.py"]  # not root, or no ip/curl/ping: nothing to run here


@pytest.fixture
def topo():
    with Topology() as t:
        yield t
