"""kernel_sync.KernelSync: ctaccel's table and the kernel's kept converged (``run --kernel-sync``),
in a network namespace of the test's own (root; under CI a skip is a failure).

- The kernel's creations (a ctnetlink user, here another socket standing for ``conntrack -I``)
  are imported; a tool's deletions delete here too; the kernel's own expiry does not.
- ctaccel's commits appear in the kernel's table; its removals (flush, expiry) are deleted
  there; a connection whose timer traffic moved gets the new timeout there.
- Lost events: a receive buffer far too small for a burst of 20,000 creations overflows
  (ENOBUFS); the next tick dumps and imports every one of them.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from scapy.all import IP, TCP, Ether

from ctaccel.conntrack import Conntrack, action_row
from ctaccel.conntrack.layout import C_SPORT, C_USED, expirations, set_expiration
from ctaccel.io.ctnetlink import CtNetlink, KernelEntries
from ctaccel.kernel_sync import KernelSync
from ctaccel.packet.key import KEY_WIDTH
from ctaccel.packet.parse import parse_frame
from support.kernelct import entries, netns_fixture

netns = pytest.fixture(scope="module")(netns_fixture)


def udp(sport: int, timeout: int = 600) -> dict:
    return dict(family=2, proto=17, src="10.3.0.1", dst="10.3.0.2", sport=sport, dport=53,
                r_src="10.3.0.2", r_dst="10.3.0.1", r_sport=53, r_dport=sport, status=0xE,
                timeout_s=timeout)  # fmt: skip


def commit_syn(ct: Conntrack, sport: int, now_ms: int) -> None:
    """ctaccel's own connection: a SYN through ct(commit, zone=5)."""
    pkt = Ether() / IP(src="10.4.0.1", dst="10.4.0.2") / TCP(sport=sport, dport=80, flags="S")
    frame = np.frombuffer(bytes(pkt), np.uint8).copy()
    key = np.zeros(KEY_WIDTH, np.int64)
    parse_frame(frame, 1, key)
    ct.execute(frame, key, action_row(5, commit=True), now_ms)


def kernel_ports(nl: CtNetlink, proto: int) -> set[int]:
    e = nl.dump()
    return set(e.sport[e.proto == proto].tolist())


@pytest.fixture
def sync(netns):
    with CtNetlink(netns) as nl:
        nl.flush()
        ct = Conntrack()
        s = KernelSync(ct, zone_map={0: 5}, netns=netns)
        try:
            yield ct, s, nl
        finally:
            s.close()
            nl.flush()


def test_both_ways(sync):
    ct, s, tool = sync
    tool.create(entries(udp(1000), udp(1001)))
    assert s.start(0)["imported"] == 2
    tool.create(entries(udp(1002), udp(1003)))  # the kernel learns of two more
    s.tick(10)
    assert sorted(int(x) for x in ct.conns[ct.conns[:, C_USED] == 1][:, C_SPORT]) == [
        1000,
        1001,
        1002,
        1003,
    ]
    assert all("zone=5" in line for line in ct.dump(10))
    tool.delete(entries(udp(1001)))  # a tool deletes one: gone here too
    s.tick(20)
    assert "sport=1001," not in "".join(ct.dump(20)) and s.counts["deleted_here"] == 1
    for port in (2000, 2001, 2002):  # ctaccel's own connections appear in the kernel
        commit_syn(ct, port, 30)
    s.tick(30)
    assert {2000, 2001, 2002} <= kernel_ports(tool, 6)
    kernel = tool.dump()
    assert (kernel.zone[kernel.proto == 6] == 0).all()  # zone 5 is the kernel's zone 0
    assert (kernel.tcp_state[kernel.proto == 6] == 1).all()  # SYN_SENT
    ct.flush(zone=5)  # ... and go when ctaccel removes them
    s.tick(40)
    assert kernel_ports(tool, 6) == set() and kernel_ports(tool, 17) == set()
    assert s.counts["deleted_there"] >= 6


def test_the_kernels_own_expiry_does_not_delete_here_and_a_refresh_recreates(sync):
    ct, s, tool = sync
    tool.create(entries(udp(3000, timeout=1)))
    s.start(0)
    time.sleep(2.5)  # the kernel's copy expires: a DESTROY from the kernel itself (port id 0)
    tool.dump()  # (a dump makes the kernel reap expired entries)
    s.tick(100)
    assert "sport=3000," in "".join(ct.dump(100))
    slot = int(np.flatnonzero(ct.conns[:, C_SPORT] == 3000)[0])
    # traffic moved its timer
    set_expiration(ct.conns, slot, int(expirations(ct.conns, slot)) + 60_000)
    s.tick(5000)  # the next refresh creates the kernel's copy again, with ctaccel's timeout
    assert 3000 in kernel_ports(tool, 17)


def test_lost_events_resynchronise_with_a_dump(netns):
    with CtNetlink(netns) as tool:
        tool.flush()
        ct = Conntrack()
        s = KernelSync(ct, netns=netns, rcvbuf=4096)
        try:
            s.start(0)
            e = KernelEntries.empty(20_000)
            i = np.arange(20_000)
            e.family[:], e.proto[:], e.status[:], e.timeout_s[:] = 2, 17, 0xE, 600
            e.src[:, 3], e.dst[:, 3] = 0x0A050000 + i // 60000, 0x0A060001
            e.sport[:], e.dport[:] = 1024 + i % 60000, 53
            e.r_src[:], e.r_dst[:], e.r_sport[:], e.r_dport[:] = e.dst, e.src, e.dport, e.sport
            assert len(tool.create(e)) == 0
            s.tick(10)
            assert s.counts["resyncs"] >= 1
            assert len(ct) == 20_000
        finally:
            s.close()
            tool.flush()
