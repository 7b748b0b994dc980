"""The talk's benchmark workloads: TCP captures plus the rule sets they were measured with.

What: :func:`generate` writes a classic pcap of 60-byte (64 on the wire) Ethernet/IPv4 or
IPv6 TCP frames with correct checksums, the conntrack firewall rules and the stateless
"ceiling" rules, and returns a :class:`Workload` describing them. It is the project's one
generator of these workloads: :func:`build` returns the same packets in memory (frames,
direction, timestamps, the connections' endpoints; the tests' workload adapters in
tests/support/workloads.py are built on it) and :func:`rules` the same rule text.

- Workload A: ``flows`` TCP connections. First every handshake (all SYNs, then all SYN/ACKs,
  then all ACKs, so a SYN and its SYN/ACK are ``flows`` packets apart), then rounds in which
  each connection sends one data segment each way.
- Workload B: A plus unidirectional connections whose SYN is retransmitted (same sequence
  number) once per round. Each retransmitted SYN is ``new`` again, so with as many
  unidirectional as established connections (the default) one packet in three is NEW.
  ``new_fraction`` sets another share: ``u / (2 * flows + u)`` of each round's packets.

Design: the schedule is a table of *slots*. The handshake slots are used once; the round
slots repeat every round, and only sequence/acknowledgement numbers change from round to
round (``seq0 + round * seq_step``). Every flow direction has a template frame (seq = ack =
flags = 0): one frame of each kind is built for the first flow with
:mod:`ctaccel.packet.build`, and a chunk's templates are those with the flow's addresses and
ports written in and both checksums updated (RFC 1624), all in numpy, so ten million
connections need no table of frames and no Python loop per flow; a packet is its template with
seq, ack and flags patched in numpy and the TCP checksum updated incrementally (RFC 1624:
the patched fields were zero in the template, so their words just add to its sum). The
pcap is written in chunks of fixed-size records, so memory stays bounded and one million
packets take about a second. :func:`generate` and :func:`build` share everything up to the
frames (``_prepare`` then ``_slots`` and ``_patch_frames``), so they cannot drift apart.

With ``nat="snat"`` the firewall also source-NATs every connection to one address
(``ct(commit,nat(src=...))``, every packet through ``ct(nat)``), and the servers answer that
address: client ports are then drawn without repetition, so OVS keeps each one (no two
connections compete for a port) and the replies are known when the capture is written.

Invariants:
- Deterministic: the same arguments give the same bytes (one seeded numpy generator draws
  ports, server addresses and initial sequence numbers, in a fixed order).
- Every sequence and acknowledgement number is in window: data never runs ahead of what
  the peer acknowledged by more than one segment, well inside the 65,535-byte window.
- A SYN and its SYN/ACK are at least ``flows`` packets apart, so with 32 or more flows
  they never share a 32-packet rx batch (OVS looks a whole batch up before committing).
- Timestamps start at ``START_NS`` and advance ``PACKET_GAP_NS`` per packet (1 Mpps), so
  no conntrack timeout expires within any capture this generates.
- Handshake frames carry no TCP payload (Ethernet padding fills them to the frame size);
  data segments fill the frame with payload.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ctaccel.bench import templates as T
from ctaccel.bench.templates import TCP_HLEN, fold_words, header_len
from ctaccel.errors import CtaccelError
from ctaccel.io.pcap import LINKTYPE_ETHERNET, PCAP_MAGIC_US
from ctaccel.packet import build as B

KINDS = ("A", "B")
DEFAULT_FLOWS = 10_000
DEFAULT_TARGET_PACKETS = 1_000_000
MAX_FLOWS = 10_000_000  # issue 20's largest point (client addresses stay within 10/8)
DEFAULT_FRAME_SIZE = 64  # on the wire, FCS included: the talk's 60-byte captured frames
MAX_FRAME_SIZE = 9018  # a jumbo frame on the wire
FCS_LEN = 4  # counted on the wire, absent from captures
RX_BATCH = 32  # dpif-netdev's NETDEV_MAX_BURST: SYN and SYN/ACK must not share one

START_NS = 1_700_000_000 * 1_000_000_000  # first packet's timestamp (a fixed epoch)
PACKET_GAP_NS = 1_000
CHUNK_PACKETS = 1 << 18
SNAPLEN = 65535
TCP_WINDOW = 65535  # no window scaling: every segment must fit in this
TCP_FIELDS = B.TcpFields(window=TCP_WINDOW)

CLIENT_MAC, SERVER_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"
CLIENT_NET_V4, SERVER_NET_V4 = 0x0A000000, 0xAC100000  # 10.0.0.0/8, 172.16.0.0/12
CLIENT_NET_V6 = (0xFD00 << 112) | (1 << 64)  # fd00:0:0:1::/64
SERVER_NET_V6 = (0xFD00 << 112) | (2 << 64)  # fd00:0:0:2::/64
SERVER_PORTS = np.array([80, 443, 5201, 8080], np.int64)
PAYLOAD_PATTERN = b"ctaccel-workload-"

FIN, SYN, ACK, PSH = 0x01, 0x02, 0x10, 0x08

# Per flow the templates are rows 4f..4f+3 (established) or 4*flows + k (unidirectional),
# computed when a chunk needs them (templates.template_rows).
ROW_CLIENT_BARE, ROW_CLIENT_DATA, ROW_SERVER_BARE, ROW_SERVER_DATA = range(4)

IN_PORT, OUT_PORT, CT_ZONE = 1, 2, 5

CT_RULES = """\
# Workload {kind}: the talk's conntrack firewall. Packets enter on port 1 and leave on port 2;
# a new connection is committed only from port 1, then both directions are established.
table=0,priority=100,ct_state=-trk,{proto},actions=ct(table=0,zone={zone})
table=0,priority=90,ct_state=+trk+new,ct_zone={zone},{proto},in_port={inp},actions=ct(commit,zone={zone}),output:{out}
table=0,priority=80,ct_state=+trk+est,ct_zone={zone},{proto},actions=output:{out}
table=0,priority=1,actions=drop
"""

CT_SNAT_RULES = """\
# Workload {kind} with SNAT: the conntrack firewall, and every connection from port 1 is
# source-NATed to {snat} (replies come back to it and are translated back).
table=0,priority=100,ct_state=-trk,{proto},actions=ct(table=0,zone={zone},nat)
table=0,priority=90,ct_state=+trk+new,ct_zone={zone},{proto},in_port={inp},actions=ct(commit,zone={zone},nat(src={snat})),output:{out}
table=0,priority=80,ct_state=+trk+est,ct_zone={zone},{proto},actions=output:{out}
table=0,priority=1,actions=drop
"""
NATS = ("snat",)
SNAT_ADDR_V4 = 0xC0A80001  # 192.168.0.1
SNAT_ADDR_V6 = (0xFD00 << 112) | (3 << 64) | 1  # fd00:0:0:3::1
MAX_SNAT_FLOWS = 65536 - 1024  # one distinct client port per connection

STATELESS_RULES = """\
# Workload {kind}: the stateless ceiling (no conntrack): every TCP packet from port 1 to 2.
table=0,priority=100,{proto},in_port={inp},actions=output:{out}
"""


@dataclass(frozen=True)
class Workload:
    """What :func:`generate` wrote, and what a correct datapath must do with it."""

    kind: str
    pcap_path: Path
    flows_path: Path  # the conntrack firewall rules (ovs-ofctl add-flows syntax)
    stateless_flows_path: Path  # the stateless ceiling rules
    manifest_path: Path  # these fields as JSON
    packets: int
    flows: int  # connections in the capture: established + unidirectional
    established_flows: int
    unidirectional_flows: int
    rounds: int  # complete data rounds (a last partial round may follow)
    expected_new: int  # packets the firewall sees as ct_state +new (every pure SYN)
    frame_size: int  # on the wire; captured frames are 4 bytes shorter (no FCS)
    ipv6: bool
    seed: int

    @property
    def new_share(self) -> float:
        return self.expected_new / self.packets if self.packets else 0.0


class Endpoints(NamedTuple):
    """Per connection, established ones first: addresses (ints), ports and initial
    sequence numbers."""

    client_ip: list[int]
    server_ip: list[int]
    client_port: np.ndarray
    server_port: np.ndarray
    isn_client: np.ndarray
    isn_server: np.ndarray


@dataclass
class _Schedule:
    """Slot table: handshake slots first (used once), then one round's slots in order."""

    row: np.ndarray  # template row per slot
    flags: np.ndarray
    seq0: np.ndarray
    seq_step: np.ndarray  # added once per round
    ack0: np.ndarray
    ack_step: np.ndarray
    handshake: int
    round_len: int


def min_frame_size(ipv6: bool) -> int:
    """Smallest frame size on the wire: 64 (Ethernet minimum), more if the headers need it."""
    return max(DEFAULT_FRAME_SIZE, header_len(ipv6) + FCS_LEN)


def unidirectional_count(flows: int, new_fraction: float) -> int:
    """Unidirectional connections giving ``new_fraction`` NEW packets per round."""
    return int(round(2 * flows * new_fraction / (1.0 - new_fraction)))


def _check(kind, flows, packets, frame_size, ipv6, seed, new_fraction) -> tuple:
    kind = str(kind).upper()
    if kind not in KINDS:
        raise CtaccelError(f"workload must be A or B, not {kind!r}")
    if not 1 <= flows <= MAX_FLOWS:
        raise CtaccelError(f"flows must be between 1 and {MAX_FLOWS:,}, not {flows}")
    if seed < 0:
        raise CtaccelError(f"seed must be >= 0, not {seed}")
    smallest = min_frame_size(ipv6)
    if frame_size is None:
        frame_size = smallest
    if not smallest <= frame_size <= MAX_FRAME_SIZE:
        family = "IPv6" if ipv6 else "IPv4"
        raise CtaccelError(f"frame size {frame_size} is outside {smallest}..{MAX_FRAME_SIZE} "
                           f"for {family}/TCP (bytes on the wire, FCS included)")  # fmt: skip
    unidirectional = 0
    if new_fraction is not None and kind != "B":
        raise CtaccelError("new_fraction applies to workload B only")
    if kind == "B":
        share = 1.0 / 3.0 if new_fraction is None else float(new_fraction)
        if not 0.0 <= share < 1.0:
            raise CtaccelError(f"new_fraction must be in [0, 1), not {new_fraction}")
        unidirectional = unidirectional_count(flows, share)
        if flows + unidirectional > MAX_FLOWS:
            raise CtaccelError(f"new_fraction {share} needs {unidirectional:,} unidirectional "
                               f"flows; at most {MAX_FLOWS - flows:,} fit")  # fmt: skip
    handshake, round_len = 3 * flows, 2 * flows + unidirectional
    if packets is None:
        rounds = max(1, int(round((DEFAULT_TARGET_PACKETS - handshake) / round_len)))
        packets = handshake + rounds * round_len
    elif packets < handshake:
        raise CtaccelError(f"{packets} packets cannot hold the {handshake} handshake packets "
                           f"of {flows} flows")  # fmt: skip
    return kind, frame_size, unidirectional, int(packets)


def _endpoints(rng, total: int, ipv6: bool, nat: str | None = None):
    """Per connection: client/server address, port and initial sequence number; with NAT
    the client ports are distinct (drawn from their own generator, so the other draws are
    the same as without NAT)."""
    index = np.arange(total, dtype=np.int64)
    server_host = rng.integers(1, 1 << 20, total, dtype=np.int64)
    client_port = rng.integers(1024, 65536, total, dtype=np.int64)
    server_port = SERVER_PORTS[rng.integers(0, len(SERVER_PORTS), total)]
    isn_client = rng.integers(0, 1 << 32, total, dtype=np.int64)
    isn_server = rng.integers(0, 1 << 32, total, dtype=np.int64)
    if nat:
        ports = np.random.default_rng([rng.bit_generator.seed_seq.entropy, 1]).permutation(
            MAX_SNAT_FLOWS
        )
        client_port = ports[:total].astype(np.int64) + 1024
    if ipv6:
        client_ip = [CLIENT_NET_V6 + 1 + int(i) for i in index]
        server_ip = [SERVER_NET_V6 + int(h) for h in server_host]
    else:  # each client a distinct address: every 5-tuple is unique
        client_ip = [CLIENT_NET_V4 + 1 + int(i) for i in index]
        server_ip = [SERVER_NET_V4 + int(h) for h in server_host]
    return Endpoints(client_ip, server_ip, client_port, server_port, isn_client, isn_server)


def _schedule(endpoints, established: int, unidirectional: int, payload_len: int) -> _Schedule:
    """The slot table: 3 handshake blocks, then a round of data both ways plus the SYNs."""
    _c, _s, _cp, _sp, isn_c, isn_s = endpoints
    e, u = established, unidirectional
    flow = np.arange(e, dtype=np.int64)
    zero_e, step = np.zeros(e, np.int64), np.full(e, payload_len, np.int64)
    data_flags = ACK | PSH if payload_len else ACK
    ic, is_ = isn_c[:e], isn_s[:e]
    isn_u = isn_c[e : e + u]
    zero_u = np.zeros(u, np.int64)
    # handshake: every SYN, every SYN/ACK, every ACK (a SYN and its SYN/ACK are e apart)
    hs_row = np.concatenate([4 * flow + ROW_CLIENT_BARE, 4 * flow + ROW_SERVER_BARE,
                             4 * flow + ROW_CLIENT_BARE])  # fmt: skip
    hs_flags = np.repeat(np.array([SYN, SYN | ACK, ACK], np.int64), e)
    hs_seq = np.concatenate([ic, is_, ic + 1])
    hs_ack = np.concatenate([zero_e, ic + 1, is_ + 1])
    # one round, before ordering: client data, server data, unidirectional SYNs. In round r
    # the client's data starts after r segments and acknowledges the server's r segments;
    # the server's acknowledges the client's r + 1.
    rd_row = np.concatenate([4 * flow + ROW_CLIENT_DATA, 4 * flow + ROW_SERVER_DATA,
                             4 * e + np.arange(u, dtype=np.int64)])  # fmt: skip
    rd_flags = np.concatenate([np.full(2 * e, data_flags, np.int64), np.full(u, SYN, np.int64)])
    rd_seq = np.concatenate([ic + 1, is_ + 1, isn_u])
    rd_seq_step = np.concatenate([step, step, zero_u])
    rd_ack = np.concatenate([is_ + 1, ic + 1 + payload_len, zero_u])
    rd_ack_step = rd_seq_step
    # Spread the SYNs evenly among the data packets (each at its share of the round), so
    # the NEW share is the same in every part of the capture; a client segment always
    # precedes the server segment that acknowledges it.
    spread = np.concatenate([(np.arange(2 * e) + 0.5) / (2 * e), (np.arange(u) + 0.5) / max(u, 1)])
    order = np.argsort(spread, kind="stable")
    return _Schedule(
        row=np.concatenate([hs_row, rd_row[order]]),
        flags=np.concatenate([hs_flags, rd_flags[order]]),
        seq0=np.concatenate([hs_seq, rd_seq[order]]),
        seq_step=np.concatenate([zero_e, zero_e, zero_e, rd_seq_step[order]]),
        ack0=np.concatenate([hs_ack, rd_ack[order]]),
        ack_step=np.concatenate([zero_e, zero_e, zero_e, rd_ack_step[order]]),
        handshake=3 * e,
        round_len=2 * e + u,
    )


def _slots(sched: _Schedule, start: int, stop: int):
    """Template row, flags, seq and ack of packets ``start..stop-1``."""
    pos = np.arange(start, stop, dtype=np.int64)
    in_rounds = pos >= sched.handshake
    past = pos - sched.handshake
    rnd = np.where(in_rounds, past // sched.round_len, 0)
    slot = np.where(in_rounds, sched.handshake + past % sched.round_len, pos)
    seq = (sched.seq0[slot] + rnd * sched.seq_step[slot]) & 0xFFFFFFFF
    ack = (sched.ack0[slot] + rnd * sched.ack_step[slot]) & 0xFFFFFFFF
    return sched.row[slot], sched.flags[slot], seq, ack


def _patch_frames(frames: np.ndarray, plan: _Plan, rows, flags, seq, ack) -> None:
    """Fill ``frames`` (one row per packet) with the templates, seq/ack/flags patched in."""
    templates, tcp_sums = T.template_rows(plan.templates, rows)
    acc = tcp_sums + (seq >> 16) + (seq & 0xFFFF) + (ack >> 16) + (ack & 0xFFFF)
    checksum = ~fold_words(acc + flags) & 0xFFFF
    frames[:] = templates
    t = plan.tcp_ofs
    frames[:, t + 4 : t + 8] = seq.astype(">u4").view(np.uint8).reshape(-1, 4)
    frames[:, t + 8 : t + 12] = ack.astype(">u4").view(np.uint8).reshape(-1, 4)
    frames[:, t + 13] = flags  # flags < 0x100: the data-offset byte keeps its template value
    frames[:, t + 16 : t + 18] = checksum.astype(">u2").view(np.uint8).reshape(-1, 2)


def timestamps_ns(start: int, stop: int) -> np.ndarray:
    """Capture timestamps of packets ``start..stop-1`` (ns)."""
    return START_NS + np.arange(start, stop, dtype=np.int64) * PACKET_GAP_NS


def _fill_chunk(plan: _Plan, start: int, stop: int):
    """Records (16-byte pcap header + frame) for packets ``start..stop-1``; also the flags."""
    rows, flags, seq, ack = _slots(plan.sched, start, stop)
    frame_len = plan.templates.base.shape[1]
    records = np.empty((stop - start, 16 + frame_len), np.uint8)
    ts_ns = timestamps_ns(start, stop)
    header = np.empty((stop - start, 4), "<u4")
    header[:, 0] = ts_ns // 1_000_000_000
    header[:, 1] = (ts_ns % 1_000_000_000) // 1000
    header[:, 2] = frame_len
    header[:, 3] = frame_len
    records[:, :16] = header.view(np.uint8)
    _patch_frames(records[:, 16:], plan, rows, flags, seq, ack)
    return records, flags


def _write_rules(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CtaccelError(f"{path}: cannot write: {exc.strerror}") from None


def workload_stem(kind, flows, packets, frame_size, ipv6, seed, new_fraction=None,
                  nat=None) -> str:  # fmt: skip
    """File name stem naming every parameter, e.g. ``A-10000flows-990000pkts-64B-seed0``."""
    family = "-ipv6" if ipv6 else ""
    share = "" if new_fraction is None else f"-new{float(new_fraction):g}"
    nat = f"-{nat}" if nat else ""
    return f"{kind}{family}{nat}-{flows}flows-{packets}pkts-{frame_size}B{share}-seed{seed}"


@dataclass
class _Plan:
    """Everything a workload's packets are computed from (shared by generate and build)."""

    kind: str
    flows: int  # established connections
    unidirectional: int
    packets: int
    frame_size: int
    ipv6: bool
    seed: int
    new_fraction: float | None
    nat: str | None
    payload_len: int
    endpoints: Endpoints
    snat_addr: int | None  # the address servers answer under SNAT, else None
    templates: T.Templates
    tcp_ofs: int
    sched: _Schedule


def _prepare(kind, flows, packets, frame_size, ipv6, seed, new_fraction, nat) -> _Plan:
    """Check the arguments (:class:`CtaccelError`), then build templates and schedule."""
    kind, frame_size, unidirectional, packets = _check(
        kind, int(flows), packets, frame_size, ipv6, int(seed), new_fraction
    )
    if nat is not None and nat not in NATS:
        raise CtaccelError(f"nat must be one of {', '.join(NATS)}, not {nat!r}")
    if nat and int(flows) + unidirectional > MAX_SNAT_FLOWS:
        raise CtaccelError(f"an SNAT workload holds at most {MAX_SNAT_FLOWS:,} connections "
                           f"(one source port each)")  # fmt: skip
    frame_len = frame_size - FCS_LEN
    payload_len = frame_len - header_len(ipv6)
    payload = (PAYLOAD_PATTERN * (payload_len // len(PAYLOAD_PATTERN) + 1))[:payload_len]
    total = flows + unidirectional
    ends = _endpoints(np.random.default_rng(seed), total, ipv6, nat)
    snat_addr = (SNAT_ADDR_V6 if ipv6 else SNAT_ADDR_V4) if nat else None
    templates = T.templates(ends, flows, frame_len, payload, bool(ipv6), (CLIENT_MAC, SERVER_MAC),
                            TCP_FIELDS, snat_addr)  # fmt: skip
    tcp_ofs = header_len(ipv6) - TCP_HLEN
    return _Plan(kind=kind, flows=int(flows), unidirectional=unidirectional, packets=packets,
                 frame_size=frame_size, ipv6=bool(ipv6), seed=int(seed),
                 new_fraction=new_fraction, nat=nat, payload_len=payload_len, endpoints=ends,
                 snat_addr=snat_addr, templates=templates,
                 tcp_ofs=tcp_ofs,
                 sched=_schedule(ends, flows, unidirectional, payload_len))  # fmt: skip


def rules(kind: str = "A", ipv6: bool = False, nat: str | None = None,
          stateless: bool = False) -> str:  # fmt: skip
    """The workload's rules (ovs-ofctl add-flows text): the conntrack firewall (with SNAT
    when ``nat``), or the stateless ceiling."""
    fields = dict(kind=str(kind).upper(), proto="tcp6" if ipv6 else "tcp", zone=CT_ZONE,
                  inp=IN_PORT, out=OUT_PORT)  # fmt: skip
    if stateless:
        return STATELESS_RULES.format(**fields)
    if nat:
        import ipaddress

        fields["snat"] = str(ipaddress.ip_address(SNAT_ADDR_V6 if ipv6 else SNAT_ADDR_V4))
        return CT_SNAT_RULES.format(**fields)
    return CT_RULES.format(**fields)


@dataclass(frozen=True)
class Traffic:
    """A workload's packets in memory (:func:`build`): what :func:`generate` would write."""

    frames: np.ndarray  # (packets, frame_size - FCS_LEN) uint8, one frame per row
    from_client: np.ndarray  # bool per packet: client -> server, else the server's answer
    ts_ns: np.ndarray  # capture timestamps, as in the pcap
    tcp_flags: np.ndarray
    endpoints: Endpoints  # per connection, established ones first
    reply_to: int | None  # the address servers answer under SNAT, else None
    established_flows: int
    unidirectional_flows: int
    rounds: int  # complete data rounds (a last partial round may follow)
    payload_len: int  # TCP payload bytes of every data segment


def build(kind: str = "A", flows: int = DEFAULT_FLOWS, packets: int | None = None,
          frame_size: int | None = None, ipv6: bool = False, seed: int = 0,
          new_fraction: float | None = None, nat: str | None = None) -> Traffic:  # fmt: skip
    """Workload ``kind``'s packets in memory (tests, examples, benchmarks/scale.py): the
    arguments and the frames are :func:`generate`'s (same arguments, same bytes); the frames
    take packets x (frame size - 4) bytes, about 3 GB for ten million connections' 50M."""
    plan = _prepare(kind, flows, packets, frame_size, ipv6, seed, new_fraction, nat)
    n = plan.packets
    frames = np.empty((n, plan.templates.base.shape[1]), np.uint8)
    from_client = np.empty(n, bool)
    tcp_flags = np.empty(n, np.int64)
    established_rows = 4 * plan.flows  # then one row per unidirectional flow (a client's)
    for lo in range(0, n, CHUNK_PACKETS):  # in chunks: the temporaries stay small
        hi = min(n, lo + CHUNK_PACKETS)
        rows, flags, seq, ack = _slots(plan.sched, lo, hi)
        _patch_frames(frames[lo:hi], plan, rows, flags, seq, ack)
        from_client[lo:hi] = (rows >= established_rows) | (rows % 4 < ROW_SERVER_BARE)
        tcp_flags[lo:hi] = flags
    return Traffic(frames=frames, from_client=from_client, ts_ns=timestamps_ns(0, n),
                   tcp_flags=tcp_flags, endpoints=plan.endpoints, reply_to=plan.snat_addr,
                   established_flows=plan.flows, unidirectional_flows=plan.unidirectional,
                   rounds=(plan.packets - plan.sched.handshake) // plan.sched.round_len,
                   payload_len=plan.payload_len)  # fmt: skip


def build_lifecycle(flows: int = DEFAULT_FLOWS, rounds: int = 2, seed: int = 0) -> tuple:
    """Workload A's connections through their whole life, in memory (the CPU experiment,
    bench/cpu.py): :func:`build`'s handshakes and ``rounds`` complete data rounds, then
    every connection closed (all client FIN/ACKs, all server FIN/ACKs, all last ACKs, in
    blocks as the handshake). Returns (frames, phase ends): the packets ``0..ends[0]`` set
    connections up (the handshakes and the first round, whose packets are each direction's
    first after the handshake: they install the fast path's entries), ``..ends[1]`` are
    the other rounds (``rounds`` >= 2), ``..ends[2]`` tear down."""
    flows, rounds = int(flows), max(int(rounds), 2)
    plan = _prepare("A", flows, 3 * flows + 2 * flows * rounds, None, False, seed, None, None)
    n = plan.packets
    frames = np.empty((n + 3 * flows, plan.templates.base.shape[1]), np.uint8)
    for lo in range(0, n, CHUNK_PACKETS):
        hi = min(n, lo + CHUNK_PACKETS)
        _patch_frames(frames[lo:hi], plan, *_slots(plan.sched, lo, hi))
    ends = plan.endpoints
    c_next = ends.isn_client[:flows] + 1 + rounds * plan.payload_len  # next unsent seq
    s_next = ends.isn_server[:flows] + 1 + rounds * plan.payload_len
    row = 4 * np.arange(flows, dtype=np.int64)
    rows = np.concatenate([row + ROW_CLIENT_BARE, row + ROW_SERVER_BARE, row + ROW_CLIENT_BARE])
    flags = np.repeat(np.array([FIN | ACK, FIN | ACK, ACK], np.int64), flows)
    seq = np.concatenate([c_next, s_next, c_next + 1]) & 0xFFFFFFFF
    ack = np.concatenate([s_next, c_next + 1, s_next + 1]) & 0xFFFFFFFF
    _patch_frames(frames[n:], plan, rows, flags, seq, ack)
    return frames, (5 * flows, n, n + 3 * flows)


def generate(
    kind: str = "A",
    flows: int = DEFAULT_FLOWS,
    packets: int | None = None,
    frame_size: int | None = None,
    ipv6: bool = False,
    seed: int = 0,
    new_fraction: float | None = None,
    out_dir: str | os.PathLike = "workloads",
    nat: str | None = None,
) -> Workload:
    """Write workload ``kind`` (A or B) into ``out_dir``; return what was written.

    ``flows`` established connections (B adds ``flows`` unidirectional ones, or as many as
    ``new_fraction`` asks). ``packets`` is exact: the handshakes, complete rounds, then a
    partial round; None picks the number of complete rounds closest to one million
    packets. ``frame_size`` counts the FCS (64 = 60-byte captured frames); None picks the
    smallest that fits: 64 for IPv4, 78 for IPv6. Bad arguments raise
    :class:`CtaccelError` before anything is written. ``nat="snat"``: the SNAT variant
    (module docstring)."""
    plan = _prepare(kind, flows, packets, frame_size, ipv6, seed, new_fraction, nat)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CtaccelError(f"{out}: cannot create directory: {exc.strerror}") from None
    kind, packets, frame_size = plan.kind, plan.packets, plan.frame_size
    stem = workload_stem(kind, flows, packets, frame_size, ipv6, seed, new_fraction, nat)

    pcap_path = out / f"{stem}.pcap"
    partial = out / f".{stem}.pcap.partial"
    expected_new = 0
    try:
        with open(partial, "wb") as fh:
            fh.write(struct.pack("<IHHiIII", PCAP_MAGIC_US, 2, 4, 0, 0, SNAPLEN,
                                 LINKTYPE_ETHERNET))  # fmt: skip
            for start in range(0, packets, CHUNK_PACKETS):
                records, flags = _fill_chunk(plan, start, min(packets, start + CHUNK_PACKETS))
                records.tofile(fh)
                expected_new += int(np.count_nonzero(flags == SYN))
        os.replace(partial, pcap_path)  # never leave a half-written capture under its name
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise CtaccelError(f"{pcap_path}: cannot write capture: {exc.strerror}") from None

    flows_path, stateless_path = out / f"{stem}.ct.flows", out / f"{stem}.stateless.flows"
    _write_rules(flows_path, rules(kind, ipv6, nat))
    _write_rules(stateless_path, rules(kind, ipv6, stateless=True))
    workload = Workload(
        kind=kind,
        pcap_path=pcap_path,
        flows_path=flows_path,
        stateless_flows_path=stateless_path,
        manifest_path=out / f"{stem}.json",
        packets=packets,
        flows=plan.flows + plan.unidirectional,
        established_flows=plan.flows,
        unidirectional_flows=plan.unidirectional,
        rounds=(packets - plan.sched.handshake) // plan.sched.round_len,
        expected_new=expected_new,
        frame_size=frame_size,
        ipv6=ipv6,
        seed=int(seed),
    )
    manifest = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(workload).items()}
    manifest.update(nat=nat, new_fraction=new_fraction, new_share=workload.new_share, in_port=IN_PORT, out_port=OUT_PORT,
                    ct_zone=CT_ZONE, start_ns=START_NS, packet_gap_ns=PACKET_GAP_NS)  # fmt: skip
    _write_rules(workload.manifest_path, json.dumps(manifest, indent=2) + "\n")
    return workload
