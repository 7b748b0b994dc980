"""Batched ctnetlink (io/ctnetlink.py, io/ctnetlink_codec.py).

Pure tests: one message of every layout against bytes built here attribute by attribute
with ``struct`` (a plain reference encoder), the seq-to-row mapping of a mixed batch, dump
parsing (grouped and per message, hand-built kernel-style messages) and error reading.

Kernel tests: as root, in a network namespace made here and always deleted (the host's table
is never touched): create a mixed batch (IPv4 TCP ESTABLISHED, IPv6 UDP, ICMP echo, a zone, a
mark, SNAT, labels when nft can load a label rule), dump it back and compare field by field,
also with ``conntrack -L -o extended`` where the tool exists; EEXIST, EBUSY and ERANGE at the
right rows; delete everything. Skipped (with the reason) when not root or ``ip netns`` fails,
except under ``CI=true``, where root is given and a skip is a failure.
"""

from __future__ import annotations

import errno
import ipaddress
import re
import shutil
import socket
import struct
import sys

import numpy as np
import pytest

from ctaccel.errors import InputError
from ctaccel.io.ctnetlink import CtNetlink, KernelEntries, encode_create, encode_delete
from ctaccel.io.ctnetlink_codec import (
    datagram_messages,
    dump_request,
    encode_create_messages,
    parse_entries,
    parse_errors,
)
from support.kernelct import entries, in_ns, netns_fixture

NEW, DELETE = 0x100, 0x102
CREATE_FLAGS, DELETE_FLAGS = 0x1 | 0x400 | 0x200, 0x1


# ---- the reference encoder: one attribute at a time -----------------------------------------
def nla(kind: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("<HH", n, kind) + payload + bytes(-n % 4)


def nest(kind: int, *parts: bytes) -> bytes:
    return nla(kind | 0x8000, b"".join(parts))


def message(kind: int, flags: int, family: int, seq: int, *attrs: bytes) -> bytes:
    body = struct.pack("<BBH", family, 0, 0) + b"".join(attrs)
    return struct.pack("<IHHII", 16 + len(body), kind, flags, seq, 0) + body


def ip_attrs(src: str, dst: str) -> bytes:
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    base = 1 if a.version == 4 else 3
    return nest(1, nla(base, a.packed), nla(base + 1, b.packed))


def ports(proto: int, sport: int, dport: int) -> bytes:
    return nest(2, nla(1, bytes([proto])), nla(2, struct.pack(">H", sport)),
                nla(3, struct.pack(">H", dport)))  # fmt: skip


def echo(proto: int, ident: int, kind: int, code: int) -> bytes:
    base = 4 if proto == 1 else 7
    return nest(2, nla(1, bytes([proto])), nla(base, struct.pack(">H", ident)),
                nla(base + 1, bytes([kind])), nla(base + 2, bytes([code])))  # fmt: skip


def be32(kind: int, value: int) -> bytes:
    return nla(kind, struct.pack(">I", value))


def tcp_info(state: int, ws: tuple[int, int], flags: tuple[int, int]) -> bytes:
    return nest(4, nest(1, nla(1, bytes([state])), nla(2, bytes([ws[0]])), nla(3, bytes([ws[1]])),
                        nla(4, bytes([flags[0], 0xFF])), nla(5, bytes([flags[1], 0xFF]))))  # fmt: skip


TCP4 = dict(family=2, proto=6, src="10.0.0.1", dst="10.99.0.1", sport=40000, dport=80,
            r_src="10.99.0.1", r_dst="10.0.0.1", r_sport=80, r_dport=40000, status=0xE,
            timeout_s=3600, mark=42, tcp_state=3, tcp_wscale=(7, 8), tcp_flags=(0x0B, 0x09))  # fmt: skip
UDP6 = dict(family=10, proto=17, src="fd00::1", dst="fd00::99", sport=5353, dport=53,
            r_src="fd00::99", r_dst="fd00::1", r_sport=53, r_dport=5353, status=0x8,
            timeout_s=30)  # fmt: skip
PING4 = dict(family=2, proto=1, src="10.0.0.2", dst="10.99.0.1", sport=77, dport=77,
             icmp_type=8, r_src="10.99.0.1", r_dst="10.0.0.2", r_sport=77, r_dport=77,
             status=0x8, timeout_s=30)  # fmt: skip
PING6 = dict(family=10, proto=58, src="fd00::2", dst="fd00::99", sport=9, dport=9,
             icmp_type=128, r_src="fd00::99", r_dst="fd00::2", r_sport=9, r_dport=9,
             status=0x8, timeout_s=30)  # fmt: skip
GRE_LIKE = dict(family=2, proto=50, src="10.0.0.3", dst="10.99.0.1", r_src="10.99.0.1",
                r_dst="10.0.0.3", status=0xE, timeout_s=600)  # fmt: skip
# SNAT 10.0.0.4:41000 -> 192.168.1.1:2001: the reply as the kernel shows it, translated
SNAT4 = {**TCP4, "src": "10.0.0.4", "sport": 41000, "r_dst": "192.168.1.1", "r_dport": 2001,
         "status": 0xE | 0x10, "mark": 0}  # fmt: skip


# ---- pure: one message of each layout -------------------------------------------------------
def test_ipv4_tcp_create_with_zone_and_labels_is_the_reference_bytes():
    row = {**TCP4, "zone": 7, "label": (1 << 31, 0, 0, 5)}
    want = message(NEW, CREATE_FLAGS, 2, 1,
                   nest(1, ip_attrs("10.0.0.1", "10.99.0.1"), ports(6, 40000, 80)),
                   nest(2, ip_attrs("10.99.0.1", "10.0.0.1"), ports(6, 80, 40000)),
                   nla(18, struct.pack(">H", 7)), be32(3, 0xE), be32(7, 3600), be32(8, 42),
                   nla(22, (5 | 1 << 127).to_bytes(16, "little")),
                   tcp_info(3, (7, 8), (0x0B, 0x09)))  # fmt: skip
    assert encode_create(entries(row)) == want
    assert len(want) == 224  # the facts' size of a full IPv4 TCP create


def test_ipv4_tcp_create_without_zone_or_labels_is_196_bytes():
    got = encode_create(entries(TCP4), seq0=9)
    want = message(NEW, CREATE_FLAGS, 2, 9,
                   nest(1, ip_attrs("10.0.0.1", "10.99.0.1"), ports(6, 40000, 80)),
                   nest(2, ip_attrs("10.99.0.1", "10.0.0.1"), ports(6, 80, 40000)),
                   be32(3, 0xE), be32(7, 3600), be32(8, 42), tcp_info(3, (7, 8), (0x0B, 0x09)))  # fmt: skip
    assert got == want and len(want) == 196


def test_ipv6_udp_create_and_update():
    want = message(NEW, 0x1 | 0x400, 10, 1,
                   nest(1, ip_attrs("fd00::1", "fd00::99"), ports(17, 5353, 53)),
                   nest(2, ip_attrs("fd00::99", "fd00::1"), ports(17, 53, 5353)),
                   be32(3, 0x8), be32(7, 30), be32(8, 0))  # fmt: skip
    assert encode_create(entries(UDP6), exclusive=False) == want


def test_icmp_and_icmpv6_echo_creates_carry_the_inverse_type_in_the_reply():
    want4 = message(NEW, CREATE_FLAGS, 2, 1,
                    nest(1, ip_attrs("10.0.0.2", "10.99.0.1"), echo(1, 77, 8, 0)),
                    nest(2, ip_attrs("10.99.0.1", "10.0.0.2"), echo(1, 77, 0, 0)),
                    be32(3, 0x8), be32(7, 30), be32(8, 0))  # fmt: skip
    want6 = message(NEW, CREATE_FLAGS, 10, 1,
                    nest(1, ip_attrs("fd00::2", "fd00::99"), echo(58, 9, 128, 0)),
                    nest(2, ip_attrs("fd00::99", "fd00::2"), echo(58, 9, 129, 0)),
                    be32(3, 0x8), be32(7, 30), be32(8, 0))  # fmt: skip
    assert encode_create(entries(PING4)) == want4
    assert encode_create(entries(PING6)) == want6


def test_other_protocol_create_has_no_ports():
    want = message(NEW, CREATE_FLAGS, 2, 1,
                   nest(1, ip_attrs("10.0.0.3", "10.99.0.1"), nest(2, nla(1, bytes([50])))),
                   nest(2, ip_attrs("10.99.0.1", "10.0.0.3"), nest(2, nla(1, bytes([50])))),
                   be32(3, 0xE), be32(7, 600), be32(8, 0))  # fmt: skip
    assert encode_create(entries(GRE_LIKE)) == want


def test_snat_create_sends_the_plain_inverse_and_a_one_address_range():
    nat = nest(6, be32(1, 0xC0A80101), be32(2, 0xC0A80101),
               nest(3, nla(1, struct.pack(">H", 2001)), nla(2, struct.pack(">H", 2001))))  # fmt: skip
    want = message(NEW, CREATE_FLAGS, 2, 1,
                   nest(1, ip_attrs("10.0.0.4", "10.99.0.1"), ports(6, 41000, 80)),
                   nest(2, ip_attrs("10.99.0.1", "10.0.0.4"), ports(6, 80, 41000)),
                   be32(3, 0x1E), be32(7, 3600), be32(8, 0), tcp_info(3, (7, 8), (0x0B, 0x09)),
                   nat)  # fmt: skip
    assert encode_create(entries(SNAT4)) == want


def test_ipv6_dnat_create_takes_the_translation_from_the_reply_source():
    row = {**UDP6, "r_src": "fd00::7", "r_sport": 5300, "status": 0x8 | 0x20}
    v6 = ipaddress.ip_address("fd00::7").packed
    nat = nest(13, nla(4, v6), nla(5, v6),
               nest(3, nla(1, struct.pack(">H", 5300)), nla(2, struct.pack(">H", 5300))))  # fmt: skip
    want = message(NEW, CREATE_FLAGS, 10, 1,
                   nest(1, ip_attrs("fd00::1", "fd00::99"), ports(17, 5353, 53)),
                   nest(2, ip_attrs("fd00::99", "fd00::1"), ports(17, 53, 5353)),
                   be32(3, 0x28), be32(7, 30), be32(8, 0), nat)  # fmt: skip
    assert encode_create(entries(row)) == want


def test_deletes_carry_the_original_tuple_and_a_nonzero_zone():
    want = message(DELETE, DELETE_FLAGS, 2, 1,
                   nest(1, ip_attrs("10.0.0.1", "10.99.0.1"), ports(6, 40000, 80)),
                   nla(18, struct.pack(">H", 7)))  # fmt: skip
    assert encode_delete(entries({**TCP4, "zone": 7})) == want
    assert len(want) == 80
    want = message(DELETE, DELETE_FLAGS, 2, 1,
                   nest(1, ip_attrs("10.0.0.2", "10.99.0.1"), echo(1, 77, 8, 0)))  # fmt: skip
    assert encode_delete(entries(PING4)) == want


def _walk(buf: bytes):
    off = 0
    while off < len(buf):
        length, kind, flags, seq = struct.unpack_from("<IHHI", buf, off)
        yield buf[off : off + length], seq
        off += length


def test_a_mixed_batch_is_every_row_once_with_seq_seq0_plus_row():
    rows = [TCP4, UDP6, PING4, SNAT4, GRE_LIKE, {**TCP4, "zone": 3}, PING6, {**UDP6, "sport": 1}]
    e = entries(*rows)
    got = dict((seq, msg) for msg, seq in _walk(encode_create(e, seq0=100)))
    assert sorted(got) == list(range(100, 100 + len(rows)))
    for i, row in enumerate(rows):
        assert got[100 + i] == encode_create(entries(row), seq0=100 + i)
    dels = dict((seq, msg) for msg, seq in _walk(encode_delete(e, seq0=5)))
    assert all(dels[5 + i] == encode_delete(entries(r), seq0=5 + i) for i, r in enumerate(rows))


def test_bad_entries_are_refused_with_the_column_named():
    e = entries(TCP4)
    with pytest.raises(InputError, match="family 4"):
        encode_create(entries({**TCP4, "family": 4}))
    bad = KernelEntries(**{**{f: getattr(e, f) for f in e.__dataclass_fields__},
                           "src": np.zeros(4, np.int64)})  # fmt: skip
    with pytest.raises(InputError, match="KernelEntries.src"):
        encode_delete(bad)


# ---- pure: parsing --------------------------------------------------------------------------
def _aligned(data: bytes) -> np.ndarray:
    buf = np.zeros(len(data) + 64, np.uint8)
    buf[: len(data)] = np.frombuffer(data, np.uint8)
    return buf


def _offsets(data: bytes) -> np.ndarray:
    return np.array([0] + list(np.cumsum([len(m) for m, _ in _walk(data)]))[:-1], np.int64)


def _same(a: KernelEntries, b: KernelEntries, skip=("use", "id")) -> None:
    for name in a.__dataclass_fields__:
        if name not in skip:
            assert np.array_equal(getattr(a, name), getattr(b, name)), name


def test_create_messages_parse_back_to_their_rows_grouped_or_one_by_one():
    rows = [TCP4, UDP6, PING4, PING6, GRE_LIKE, {**TCP4, "zone": 3, "label": (1, 2, 3, 4)}]
    e = entries(*(rows * 3))
    buf, ends = encode_create_messages(e, seq0=1)
    offs = np.concatenate([[0], ends[:-1]])
    seqs = buf.view(np.uint8)[offs[:, None] + np.arange(8, 12)].copy().view("<u4").ravel() - 1
    want = e.take(seqs.astype(np.int64))
    data = _aligned(buf.tobytes())
    _same(parse_entries(data, offs), want)
    _same(parse_entries(data, offs, max_groups=0), want)  # the per-message walk
    _same(parse_entries(data, offs, max_groups=2), want)


def test_a_kernel_style_dump_message_with_use_id_synproxy_and_flagless_nests():
    """Dumped entries carry USE, ID and SYNPROXY; nests without NLA_F_NESTED still parse."""
    plain = lambda kind, *parts: nla(kind, b"".join(parts))  # noqa: E731
    msg = message(NEW, 0x2, 2, 7,
                  plain(1, ip_attrs("10.0.0.1", "10.99.0.1"), ports(6, 40000, 80)),
                  nest(2, ip_attrs("10.99.0.1", "192.168.1.1"), ports(6, 80, 2001)),
                  be32(3, 0x19E), be32(7, 3599), be32(8, 42),
                  nla(22, (1 << 127).to_bytes(16, "little")), tcp_info(3, (7, 7), (0x0B, 0x09)),
                  be32(11, 1), be32(12, 0xDEADBEEF), nla(18, struct.pack(">H", 7)),
                  nest(24, be32(1, 0), be32(2, 0), be32(3, 0)))  # fmt: skip
    got = parse_entries(_aligned(msg * 2), np.array([0, len(msg)], np.int64))
    want = entries({**TCP4, "r_dst": "192.168.1.1", "r_dport": 2001, "status": 0x19E,
                    "timeout_s": 3599, "label": (1 << 31, 0, 0, 0), "tcp_wscale": (7, 7),
                    "use": 1, "id": 0xDEADBEEF, "zone": 7}, {})  # fmt: skip
    want = want.take([0, 0])
    _same(got, want, skip=())


def test_datagram_offsets_done_and_errors():
    one = message(NEW, 0x2, 2, 1, be32(3, 8))
    done = struct.pack("<IHHIIi", 20, 3, 0x2, 1, 0, 0)
    buf = _aligned(one * 3)
    offs, end = datagram_messages(buf, 0, 3 * len(one))
    assert offs.tolist() == [0, len(one), 2 * len(one)] and end == 0
    buf = _aligned(one * 2 + done)
    offs, end = datagram_messages(buf, 0, 2 * len(one) + 20)
    assert offs.tolist() == [0, len(one)] and end == -1
    error = struct.pack("<IHHIIi", 36, 2, 0, 1, 0, -errno.EPERM) + bytes(16)
    assert datagram_messages(_aligned(error), 0, 36)[1] == errno.EPERM
    ack = struct.pack("<IHHIIi", 36, 2, 0, 1, 0, 0) + struct.pack("<IHHII", 20, NEW, 1, 5, 0)
    eexist = struct.pack("<IHHIIi", 36, 2, 0, 1, 0, -17) + struct.pack("<IHHII", 80, NEW, 1, 9, 0)
    assert parse_errors(ack + eexist, 72) == [(9, 17)]
    assert dump_request(10, seq=3)[:16] == struct.pack("<IHHII", 20, 0x101, 0x301, 3, 0)


# ---- kernel: a namespace of our own ---------------------------------------------------------
netns = pytest.fixture(scope="module")(netns_fixture)


@pytest.fixture
def ct(netns):
    with CtNetlink(netns) as sock:
        sock.flush()
        yield sock
        sock.flush()


def _labels_stored(netns: str) -> bool:
    """Labels are kept only while something in the namespace uses them: an nft rule."""
    if shutil.which("nft") is None:
        return False
    rules = ("add table inet ctnl\n"
             "add chain inet ctnl c { type filter hook input priority 0; }\n"
             "add rule inet ctnl c ct label 127 counter\n")  # fmt: skip
    return in_ns(netns, "nft", "-f", "-", stdin=rules).returncode == 0


def _conntrack_lines(netns: str) -> dict[tuple, str] | None:
    if shutil.which("conntrack") is None:
        return None
    out = in_ns(netns, "conntrack", "-L", "-o", "extended")
    lines = {}
    for line in out.stdout.splitlines():
        src, dst = re.findall(r"src=(\S+)", line)[0], re.findall(r"dst=(\S+)", line)[0]
        zone = re.findall(r"zone=(\d+)", line) or ["0"]
        lines[(ipaddress.ip_address(src), ipaddress.ip_address(dst), int(zone[0]))] = line
    return lines


def _address(row: np.ndarray, family: int):
    packed = struct.pack(">4I", *row.tolist())
    return ipaddress.ip_address(packed[12:] if family == 2 else packed)


def _check_conntrack_tool(lines: dict[tuple, str], got: KernelEntries) -> None:
    for i in range(len(got)):
        f = int(got.family[i])
        line = lines[(_address(got.src[i], f), _address(got.dst[i], f), int(got.zone[i]))]
        fields = line.split()
        assert fields[0] == ("ipv4" if f == 2 else "ipv6") and int(fields[3]) == got.proto[i]
        assert abs(int(fields[4]) - got.timeout_s[i]) <= 1, line
        assert re.findall(r"dst=(\S+)", line)[1] == str(_address(got.r_dst[i], f)), line
        assert f"mark={got.mark[i]}" in line, line
        assert (f"zone={got.zone[i]}" in line) == (got.zone[i] != 0), line
        assert ("[ASSURED]" in line) == bool(got.status[i] & 4), line
        if got.proto[i] == 6:
            states = ["NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT"]
            assert fields[5] == states[got.tcp_state[i]], line
            assert f"dport={got.r_dport[i]}" in line, line
        if got.proto[i] in (1, 58):
            assert f"type={got.icmp_type[i]} code=0 id={got.sport[i]}" in line, line


def test_create_dump_compare_and_delete_in_a_namespace(ct, netns):
    labels = _labels_stored(netns)
    label = (1 << 31, 0, 0, 1) if labels else (0,) * 4
    rows = [TCP4, UDP6, PING4, {**TCP4, "zone": 7, "mark": 0},  # the same tuple in zone 7
            {**UDP6, "src": "fd00::5", "r_dst": "fd00::5", "mark": 0xFFFFFFFF}, SNAT4, PING6,
            {**TCP4, "src": "10.0.0.8", "r_dst": "10.0.0.8", "label": label},
            {**TCP4, "src": "10.0.0.6", "r_src": "10.5.0.5", "r_sport": 8080,  # SNAT and DNAT
             "r_dst": "192.168.1.2", "r_dport": 2002, "status": 0xE | 0x30}]  # fmt: skip
    e = entries(*rows)
    assert ct.create(e).shape == (0, 2)
    # window scales are kept only when both directions' flags have WINDOW_SCALE
    lone = entries({**TCP4, "src": "10.0.0.7", "r_dst": "10.0.0.7", "tcp_flags": (0x0B, 0x08)})
    assert ct.create(lone).shape == (0, 2)
    back = ct.dump(zone=0)
    assert back.tcp_wscale[back.src[:, 3] == lone.src[0, 3]].tolist() == [[0, 0]]
    assert ct.delete(lone).shape == (0, 2)
    got = ct.dump()
    assert len(got) == len(rows)
    key = lambda t, i: (int(t.family[i]), tuple(t.src[i]), int(t.zone[i]))  # noqa: E731
    where = {key(got, i): i for i in range(len(got))}
    got = got.take([where[key(e, i)] for i in range(len(e))])
    for name in ("family", "proto", "zone", "src", "dst", "sport", "dport", "icmp_type",
                 "icmp_code", "r_src", "r_dst", "r_sport", "r_dport", "mark", "label",
                 "tcp_state", "tcp_wscale", "tcp_flags"):  # fmt: skip
        assert np.array_equal(getattr(got, name), getattr(e, name)), name
    assert (np.abs(got.timeout_s - e.timeout_s) <= 1).all()
    nat = (e.status & 0x30) != 0
    assert (got.status[~nat] == e.status[~nat]).all()
    # the kernel's own bits: SRC_NAT / DST_NAT as asked, SRC_NAT_DONE | DST_NAT_DONE
    assert (got.status[nat] & 0x30 == e.status[nat] & 0x30).all()
    assert (got.status[nat] & 0x180 == 0x180).all()
    assert (got.use == 1).all() and len(set(got.id.tolist())) == len(rows)
    assert len(ct.dump(socket.AF_INET6)) == 3 and len(ct.dump(zone=7)) == 1
    lines = _conntrack_lines(netns)
    if lines is not None:
        _check_conntrack_tool(lines, got)
    assert ct.delete(e).shape == (0, 2)
    assert len(ct.dump()) == 0
    assert ct.delete(e.take([1, 4])).tolist() == [[0, errno.ENOENT], [1, errno.ENOENT]]


def test_refused_rows_come_back_at_their_row(ct):
    n = 1000
    e = KernelEntries.empty(n)
    i = np.arange(n)
    e.family[:], e.proto[:], e.status[:], e.timeout_s[:], e.tcp_state[:] = 2, 6, 0xE, 60, 3
    e.src[:, 3], e.dst[:, 3], e.sport[:], e.dport[:] = 0x0A000001, 0x0A630001, 10000 + i, 80
    e.r_src[:], e.r_dst[:], e.r_sport[:], e.r_dport[:] = e.dst, e.src, e.dport, e.sport
    first = np.arange(0, n, 97)
    assert ct.create(e.take(first)).shape == (0, 2)
    e.status[5] = 0x4  # ASSURED without CONFIRMED: EBUSY
    e.tcp_state[6] = 10  # TCP_CONNTRACK_MAX: ERANGE
    want = sorted([(int(r), errno.EEXIST) for r in first] + [(5, errno.EBUSY), (6, errno.ERANGE)])
    assert ct.create(e).tolist() == [list(w) for w in want]
    assert len(ct.dump()) == n - 2
    assert ct.delete(e).tolist() == [[5, errno.ENOENT], [6, errno.ENOENT]]


def test_a_missing_namespace_is_an_input_error(netns):
    with pytest.raises(InputError, match="network namespace"):
        CtNetlink(f"{netns}-missing")


def test_lost_errors_are_reported_as_row_minus_one(netns):
    """Errors beyond the receive buffer are dropped by the kernel: the caller must dump."""
    e = KernelEntries.empty(5000)
    i = np.arange(len(e))
    e.family[:], e.proto[:], e.status[:], e.timeout_s[:] = 2, 17, 0x8, 60
    e.src[:, 3], e.dst[:, 3], e.sport[:], e.dport[:] = 0x0A000001, 0x0A630001, 10000 + i, 53
    e.r_src[:], e.r_dst[:], e.r_sport[:], e.r_dport[:] = e.dst, e.src, e.dport, e.sport
    with CtNetlink(netns, rcvbuf=64 << 10) as small:
        small.flush()
        assert small.create(e).shape == (0, 2)
        small.chunk_messages = len(e)  # more errors per chunk than the buffer holds
        refused = small.create(e)
        assert refused[0].tolist() == [-1, errno.ENOBUFS]
        assert 0 < len(refused) - 1 < len(e) and (refused[1:, 1] == errno.EEXIST).all()
        small.flush()


def test_without_net_admin_every_call_is_a_clear_input_error(netns):
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    code = ("from ctaccel.io.ctnetlink import CtNetlink\n"
            "try:\n    CtNetlink().dump()\nexcept Exception as e:\n"
            "    print(type(e).__name__, e)\n")  # fmt: skip
    run = in_ns(netns, "setpriv", "--bounding-set=-net_admin", sys.executable, "-c", code)
    assert run.stdout.startswith("InputError ctnetlink dump: permission denied"), run.stderr
    assert "CAP_NET_ADMIN" in run.stdout
