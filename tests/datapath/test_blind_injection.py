"""Blind injection against established connections whose packets take the fast path.

What (issue 20, item 4): 240 TCP connections (half with window scaling) are established and
warmed up in assume-established mode until their packets are served by the fast path; then
each gets one forged segment — RST, data or a bare ACK, from either side — whose sequence or
acknowledgement number sits at an edge of the tracker's window (the last value accepted, the
first refused) or far across it (±2**30, 2**31), and then one ordinary segment each way. The
edges are read from the connection's row (tcp.py in_strict_window: end <= seqhi, seq >=
seqlo - max_win << wscale, ack within MAXACKWINDOW of what the receiver sent).

Must hold: every packet's outputs, ct_state and drop reason equal the reference engine's (the
semantics, held to OVS by the oracle scenarios, scenarios_blind.py among them); a forged
segment the tracker refuses (+inv) or that changes the connection's state (an accepted RST)
never takes the fast path; the connection rows (TCP peers, state, timers) end equal; and the
edges behave as edges (accepted on one side, refused on the other), so the probes test what
they claim.
"""

from __future__ import annotations

import numpy as np

from ctaccel.conntrack import Conntrack
from ctaccel.conntrack.layout import (
    C_SPORT,
    C_USED,
    HOT_WIDTH,
    P_MAX_WIN,
    P_SEQHI,
    P_SEQLO,
    P_WSCALE,
    ROW_CONN,
    tcp_col,
)
from ctaccel.conntrack.tcp import MAXACKWINDOW
from ctaccel.datapath.engine import DatapathEngine
from ctaccel.datapath.reference import ReferenceEngine
from ctaccel.demo import TCP_FLOWS
from ctaccel.ofproto.rules import parse_flows
from ctaccel.packet import build as B

MA, MB = "02:00:00:00:00:01", "02:00:00:00:00:02"
A, B_ = "10.0.0.1", "10.0.0.2"
N = 240
M32 = 0xFFFFFFFF
# (kind, edge) -> whether the tracker must refuse it (+inv). Data: its last octet within what
# the receiver allowed, not more than a window behind, its ack within MAXACKWINDOW; a bare
# ACK's sequence number is not judged (OVS: a segment without data only may not claim to be
# ahead), its ack is; a RST must sit exactly where the sender is (+-1) and has no ack.
_FAR = ("far_plus_2_30", "far_2_31", "far_minus_2_30")
_ACKS = {"ack_ahead_ok": False, "ack_ahead_bad": True, "ack_behind_ok": False,
         "ack_behind_bad": True}  # fmt: skip
REFUSED = {
    **{("data", e): bad for e, bad in {"right_ok": False, "right_bad": True, "left_ok": False,
                                       "left_bad": True, **_ACKS}.items()},
    **{("data", e): True for e in _FAR},
    **{("ack", e): bad for e, bad in _ACKS.items()},
    **{("ack", e): False for e in _FAR},
    **{("rst", f"rst_{d:+d}"): abs(d) > 1 for d in (0, 1, -1, 2, -2)},
    **{("rst", e): True for e in _FAR},
}  # fmt: skip
COMBOS = [(side, kind, edge) for side in (0, 1) for kind, edge in REFUSED]


class Conn:
    def __init__(self, i: int):
        self.sport = 20000 + i
        self.ws = 7 if i % 2 else None
        self.seq = [(1000 + 7919 * i) & M32, (5000 + 104729 * i) & M32]  # next seq, per side

    def seg(self, side: int, flags: str, seq=None, ack=None, data=b""):
        s = self.seq[side] if seq is None else seq
        a = self.seq[1 - side] if ack is None else ack
        opts = B.TcpFields(wscale=self.ws, window=65535 if not self.ws else 1024)
        if side == 0:
            f = B.tcp_frame(MA, MB, A, B_, self.sport, 80, flags, s & M32, a & M32, data, opts)
            return 1, f
        f = B.tcp_frame(MB, MA, B_, A, 80, self.sport, flags, s & M32, a & M32, data, opts)
        return 2, f

    def send(self, side: int, data: bytes):
        out = self.seg(side, "PA", data=data)
        self.seq[side] = (self.seq[side] + len(data)) & M32
        return out


def _setup(conns):
    pkts = []
    for c in conns:
        pkts.append(c.seg(0, "S", ack=0))
        c.seq[0] += 1
        pkts.append(c.seg(1, "SA"))
        c.seq[1] += 1
        pkts.append(c.seg(0, "A"))
    for _round in range(4):
        for c in conns:
            pkts.append(c.send(0, b"q" * 50))
            pkts.append(c.send(1, b"r" * 80))
    return pkts


def _slots(ct: Conntrack) -> dict[int, int]:
    used = np.flatnonzero(ct.conns[:, C_USED] == ROW_CONN)
    return {int(ct.conns[s, C_SPORT]): int(s) for s in used}


def _probe(c: Conn, row, side: int, kind: str, edge: str):
    """The forged segment: ``side`` sends ``kind`` at ``edge`` of the window in ``row``."""
    src, dst = side, 1 - side
    seqlo, seqhi = row[tcp_col(src, P_SEQLO)], row[tcp_col(src, P_SEQHI)]
    dst_seqlo = row[tcp_col(dst, P_SEQLO)]
    dws = row[tcp_col(dst, P_WSCALE)] & 0xF if c.ws else 0
    sws = row[tcp_col(src, P_WSCALE)] & 0xF if c.ws else 0
    left = seqlo - (row[tcp_col(dst, P_MAX_WIN)] << dws)
    data = b"x" * 10 if kind == "data" else b""
    flags = {"data": "PA", "rst": "R", "ack": "A"}[kind]
    span = len(data)
    seq, ack = c.seq[side], c.seq[1 - side]
    if edge == "right_ok":
        seq = seqhi - span
    elif edge == "right_bad":
        seq = seqhi - span + 1
    elif edge == "left_ok":
        seq = left
    elif edge == "left_bad":
        seq = left - 1
    elif edge == "ack_ahead_ok":
        ack = dst_seqlo + MAXACKWINDOW
    elif edge == "ack_ahead_bad":
        ack = dst_seqlo + MAXACKWINDOW + 1
    elif edge == "ack_behind_ok":
        ack = dst_seqlo - (MAXACKWINDOW << sws)
    elif edge == "ack_behind_bad":
        ack = dst_seqlo - (MAXACKWINDOW << sws) - 1
    elif edge.startswith("rst_"):
        seq = seqlo + int(edge[4:])
    elif edge == "far_plus_2_30":
        seq += 1 << 30
    elif edge == "far_2_31":
        seq += 1 << 31
    else:
        seq -= 1 << 30
    return c.seg(side, flags, seq=seq, ack=ack, data=data)


def _run(engine, pkts, t0):
    frames = [f for _p, f in pkts]
    ports = [p for p, _f in pkts]
    return engine.process_batch(frames, ports, list(range(t0, t0 + len(pkts))))


def test_forged_segments_at_the_window_edges():
    rules = parse_flows(TCP_FLOWS, "fw.flows")
    ref = ReferenceEngine(rules, Conntrack())
    ae = DatapathEngine(rules, mode="assume-established", conntrack=Conntrack())
    conns = [Conn(i) for i in range(N)]
    warm = _setup(conns)
    r_warm = [ref.process(f, p, 1000 + k) for k, (p, f) in enumerate(warm)]
    a_warm = _run(ae, warm, 1000)
    last_round = a_warm[-2 * N :]
    assert sum(r.path == "fast" for r in last_round) >= 0.9 * len(last_round)
    for r, a in zip(r_warm, a_warm, strict=True):
        assert (r.ct_state, r.out_ports) == (a.ct_state, a.out_ports)

    slots = _slots(ref.conntrack)
    assert slots == _slots(ae.conntrack)
    probes, labels = [], []
    for i, c in enumerate(conns):
        side, kind, edge = COMBOS[i % len(COMBOS)]
        row = ref.conntrack.conns[slots[c.sport]].astype(np.int64)  # (words are uint32)
        probes.append(_probe(c, row, side, kind, edge))
        labels.append((side, kind, edge))
    follow = []
    for c in conns:
        follow.append(c.send(0, b"f" * 20))
        follow.append(c.send(1, b"g" * 20))
    t1 = 1000 + len(warm) + 10
    pkts = probes + follow
    r_res = [ref.process(f, p, t1 + k) for k, (p, f) in enumerate(pkts)]
    a_res = _run(ae, pkts, t1)

    seen = {}
    for k, (r, a) in enumerate(zip(r_res, a_res, strict=True)):
        what = labels[k] if k < N else ("follow-up", k - N)
        assert r.verdict() == a.verdict(), what
        if k < N:
            side, kind, edge = labels[k]
            seen.setdefault((kind, edge), set()).add(r.ct_state)
            if "inv" in r.ct_state or kind == "rst":
                assert a.path != "fast", (what, a.path, r.ct_state)
    # the edges are edges: the last value accepted, the first refused
    for (kind, edge), states in seen.items():
        assert {"inv" in st for st in states} == {REFUSED[kind, edge]}, (kind, edge, states)
    assert set(seen) == set(REFUSED)
    # and the connections end the same, field for field
    for sport, slot in slots.items():
        assert np.array_equal(ref.conntrack.conns[slot, :HOT_WIDTH],
                              ae.conntrack.conns[slot, :HOT_WIDTH]), sport  # fmt: skip
    assert ref.conntrack.dump(t1 + len(pkts)) == ae.conntrack.dump(t1 + len(pkts))
