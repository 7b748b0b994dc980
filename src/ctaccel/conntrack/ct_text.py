"""Saved conntrack tables as text: ``conntrack -L`` and ``dpctl/dump-conntrack`` lines read back.

What: :func:`read_table` parses a file of either format (or both mixed) into io/ctnetlink
KernelEntries, plus the TCP peers' states where the text gives them (a verbose dpctl dump),
for conntrack/kernel_map.import_entries: ``ctaccel replay --ct-import FILE``.

Design: one line per connection; blank lines, ``#`` comments and conntrack's closing
"N flow entries have been shown." are skipped.
- ``conntrack -L`` (conntrack-tools, also ``-o extended``): ``tcp 6 431999 ESTABLISHED
  src=.. dst=.. sport=.. dport=.. src=.. ... [ASSURED] mark=N zone=N use=N``; the first
  ``src=`` group is the original tuple, the second the reply; no ``[UNREPLIED]`` means the
  reply was seen. The kernel's TCP state names.
- ``dpctl/dump-conntrack`` (OVS, with or without ``-m``/``-s``):
  ``tcp,orig=(src=..,dst=..,sport=..,dport=..),reply=(..),zone=N,status=..,timeout=N,
  mark=N,labels=0x..,protoinfo=(state=..)`` or ``protoinfo=(state_orig=..,state_reply=..,
  wscale_orig=..,wscale_reply=..,flags_orig=..,flags_reply=..)``. OVS's state names.
- NAT is read from the tuples (a reply tuple that is not the reversed original: its
  destination changed = SNAT, its source = DNAT); a missing ``timeout=`` is -1 (the importer
  then arms the state's default timeout); a dpctl line without ``status=`` says whether the
  reply was seen only for TCP (the reply side's state): UDP, ICMP and others are taken as
  answered (a repeated echo request stays +est, as it was; one-way UDP only gets the shorter
  both-ways timeout).

Invariants: a file is read whole or rejected whole: any line that cannot be read raises
InputError naming ``file:line`` and what is wrong.
"""

from __future__ import annotations

import functools
import re
import socket
import struct

import numpy as np

from ctaccel.conntrack.kernel_map import K_STATE_NAMES
from ctaccel.conntrack.tcp import TCP_STATE_NAMES, TCPS_SYN_SENT
from ctaccel.errors import InputError
from ctaccel.io.ctnetlink_codec import (
    AF_INET,
    AF_INET6,
    IPS_ASSURED,
    IPS_CONFIRMED,
    IPS_DST_NAT,
    IPS_SEEN_REPLY,
    IPS_SRC_NAT,
    KernelEntries,
)

PROTO_NUMBERS = {"icmp": 1, "icmpv6": 58, "tcp": 6, "udp": 17, "sctp": 132, "udplite": 136,
                 "dccp": 33, "igmp": 2, "gre": 47, "unknown": 0}  # fmt: skip
_STATUS_BITS = {"EXPECTED": 0x1, "SEEN_REPLY": 0x2, "ASSURED": 0x4, "CONFIRMED": 0x8,
                "SRC_NAT": 0x10, "DST_NAT": 0x20, "SEQ_ADJUST": 0x40, "SRC_NAT_DONE": 0x80,
                "DST_NAT_DONE": 0x100, "DYING": 0x200, "FIXED_TIMEOUT": 0x400}  # fmt: skip
_TCP_FLAG_BITS = {"WINDOW_SCALE": 0x1, "SACK_PERM": 0x2, "CLOSE_INIT": 0x4, "BE_LIBERAL": 0x8,
                  "DATA_UNACKNOWLEDGED": 0x10, "MAXACK_SET": 0x20}  # fmt: skip
# OVS's one printed TCP state -> the peers' states (tcp.py TCPS_*): orig, reply
_OVS_STATE = {"SYN_SENT": (2, 0), "SYN_RECV": (4, 2), "ESTABLISHED": (4, 4),
              "CLOSING": (7, 4), "FIN_WAIT_1": (7, 4), "CLOSE_WAIT": (9, 4),
              "LAST_ACK": (9, 7), "FIN_WAIT_2": (9, 4), "TIME_WAIT": (9, 9),
              "CLOSED": (10, 10)}  # fmt: skip
_DPCTL_HEAD = re.compile(r"^(\w+),orig=\(")
# a nested section opening (``reply=(``), a ``key=value`` item, or a section's end
_TOKEN = re.compile(r"(\w+)=\(|(\w+)=([^,()]*)|(\))")


class _Row(dict):
    """One connection's fields before they become columns."""


@functools.lru_cache(maxsize=1 << 16)
def _addr(text: str) -> tuple[int, tuple[int, ...]]:
    """(family, 4 words most significant first) of an address (a table names the same few
    addresses many times: cached)."""
    v6 = ":" in text
    try:
        raw = socket.inet_pton(socket.AF_INET6 if v6 else socket.AF_INET, text)
    except OSError:
        raise ValueError(f"{text!r} is not an IP address") from None
    if v6:
        return AF_INET6, struct.unpack(">4I", raw)
    return AF_INET, (0, 0, 0, int.from_bytes(raw, "big"))


def _int(text: str) -> int:
    return int(text, 0)


def _tuple(row: _Row, side: str, pairs: dict) -> None:
    """src/dst/sport/dport (or id/type/code) of one direction into ``row``."""
    fam, row[side + "src"] = _addr(pairs["src"])
    fam2, row[side + "dst"] = _addr(pairs["dst"])
    if fam != fam2:
        raise ValueError("source and destination are of different IP versions")
    row["family"] = fam
    if "id" in pairs or "type" in pairs:
        row[side + "sport"] = row[side + "dport"] = _int(pairs.get("id", "0"))
        if side == "":
            row["icmp_type"], row["icmp_code"] = _int(pairs["type"]), _int(pairs["code"])
    else:
        row[side + "sport"] = _int(pairs.get("sport", "0"))
        row[side + "dport"] = _int(pairs.get("dport", "0"))


def _flags(text: str, names: dict) -> int:
    if text in ("", "0"):
        return 0
    bits = 0
    for name in text.split("|"):
        if name not in names:
            raise ValueError(f"unknown flag {name!r}")
        bits |= names[name]
    return bits


def _peer_state(name: str) -> int:
    if name not in TCP_STATE_NAMES[:-1]:
        raise ValueError(f"unknown TCP state {name!r}")
    return TCP_STATE_NAMES.index(name)


def _sections(line: str) -> tuple[str, dict]:
    """The protocol and {"orig"|"reply"|"protoinfo"|...|"": {key: value}} of a dpctl line,
    in one regex scan; text that is no ``key=value`` item makes it a ValueError."""
    m = _DPCTL_HEAD.match(line)
    if not m or "reply=(" not in line:
        raise ValueError("expected PROTO,orig=(...),reply=(...)")
    sections: dict = {"": {}, "orig": {}}
    current = "orig"
    for opened, key, value, closed in _TOKEN.findall(line, m.end()):
        if opened:
            current = opened
            sections[current] = {}
        elif closed:
            current = ""
        else:
            sections[current][key] = value
    left = _TOKEN.sub("", line[m.end() :]).strip(",() \n")
    if left:
        raise ValueError(f"{left.split(',')[0]!r} is not key=value")
    return m.group(1), sections


def _dpctl_line(line: str) -> _Row:
    proto, sections = _sections(line)
    row = _Row(proto=PROTO_NUMBERS[proto] if proto in PROTO_NUMBERS else int(proto))
    _tuple(row, "", sections["orig"])
    _tuple(row, "r_", sections.get("reply", {}))
    fields = sections[""]
    row["zone"] = _int(fields.get("zone", "0"))
    row["mark"] = _int(fields.get("mark", "0"))
    row["label"] = _int(fields.get("labels", "0"))
    row["timeout_s"] = _int(fields["timeout"]) if "timeout" in fields else -1
    info = sections.get("protoinfo", {})
    if row["proto"] == 6:
        if "state_orig" in info:
            row["peers"] = (_peer_state(info["state_orig"]), _peer_state(info["state_reply"]))
        elif info.get("state") in _OVS_STATE:
            row["peers"] = _OVS_STATE[info["state"]]
        else:
            text = ",".join(f"{k}={v}" for k, v in info.items())
            raise ValueError(f"TCP connection without a known state: {text!r}")
        row["tcp_wscale"] = [
            _int(info.get("wscale_orig", "0")),
            _int(info.get("wscale_reply", "0")),
        ]
        row["tcp_flags"] = [_flags(info.get("flags_orig", "0"), _TCP_FLAG_BITS),
                            _flags(info.get("flags_reply", "0"), _TCP_FLAG_BITS)]  # fmt: skip
    if "status" in fields:
        row["status"] = _flags(fields["status"], _STATUS_BITS)
    return row


def _conntrack_line(line: str) -> _Row:
    words = line.split()
    if words[0] in ("ipv4", "ipv6"):
        words = words[2:]
    if len(words) < 3 or not words[1].isdigit() or not words[2].isdigit():
        raise ValueError("expected PROTO NUMBER TIMEOUT ...")
    row = _Row(proto=int(words[1]), timeout_s=int(words[2]), zone=0, mark=0, label=0)
    pos = 3
    if row["proto"] == 6:
        if pos >= len(words) or words[pos] not in K_STATE_NAMES:
            raise ValueError(f"TCP connection without a known state: {words[pos : pos + 1]}")
        row["tcp_state"] = K_STATE_NAMES.index(words[pos])
        pos += 1
    groups: list[dict] = []
    status = IPS_CONFIRMED | IPS_SEEN_REPLY
    for word in words[pos:]:
        if word == "[UNREPLIED]":
            status &= ~IPS_SEEN_REPLY
        elif word == "[ASSURED]":
            status |= IPS_ASSURED
        elif "=" in word:
            key, _sep, value = word.partition("=")
            if key == "src":
                groups.append({})
            if key in ("src", "dst", "sport", "dport", "type", "code", "id") and groups:
                groups[-1].setdefault(key, value)
            elif key in ("mark", "zone"):
                row[key] = _int(value)
    if len(groups) < 2:
        raise ValueError("expected an original and a reply tuple (src=... twice)")
    _tuple(row, "", groups[0])
    _tuple(row, "r_", groups[1])
    row["status"] = status
    return row


def parse_line(line: str) -> _Row | None:
    """One connection from a line of either format; None for blank/comment/summary lines."""
    line = line.strip()
    if not line or line.startswith("#") or line.startswith("conntrack v"):
        return None
    if ",orig=(" in line:
        return _dpctl_line(line)
    return _conntrack_line(line)


def _status_of(row: _Row, peers) -> int:
    """The status bits: the line's own, else derived; NAT always from the tuples."""
    if "status" in row:
        status = row["status"] | IPS_CONFIRMED
    else:  # a plain dpctl line: TCP says by its state; others are taken as answered
        seen = peers is None or peers[1] >= TCPS_SYN_SENT
        status = IPS_CONFIRMED | ((IPS_SEEN_REPLY | IPS_ASSURED) if seen else 0)
    status &= ~(IPS_SRC_NAT | IPS_DST_NAT)
    icmp = row["proto"] in (1, 58)
    if row["r_dst"] != row["src"] or (not icmp and row["r_dport"] != row["sport"]):
        status |= IPS_SRC_NAT
    elif row["r_src"] != row["dst"] or (not icmp and row["r_sport"] != row["dport"]):
        status |= IPS_DST_NAT
    return status


def _columns(rows: list[_Row]) -> tuple[KernelEntries, np.ndarray]:
    """The rows as columns, each filled from one list (not element by element)."""
    e = KernelEntries.empty(len(rows))
    if not rows:
        return e, np.full((0, 2), -1, np.int64)
    for name in ("family", "proto", "zone", "sport", "dport", "r_sport", "r_dport", "mark",
                 "timeout_s", "icmp_type", "icmp_code", "tcp_state"):  # fmt: skip
        getattr(e, name)[:] = [row.get(name, 0) for row in rows]
    for name in ("src", "dst", "r_src", "r_dst"):
        getattr(e, name)[:] = [row[name] for row in rows]
    e.label[:] = [[(row["label"] >> (32 * (3 - w))) & 0xFFFFFFFF for w in range(4)]
                  if row["label"] else (0, 0, 0, 0) for row in rows]  # fmt: skip
    e.tcp_flags[:] = [row.get("tcp_flags", (0, 0)) for row in rows]
    e.tcp_wscale[:] = [row.get("tcp_wscale", (0, 0)) for row in rows]
    e.status[:] = [_status_of(row, row.get("peers")) for row in rows]
    peers = np.array([row.get("peers", (-1, -1)) for row in rows], np.int64)
    return e, peers


def read_table(path: str) -> tuple[KernelEntries, np.ndarray]:
    """(entries, TCP peer states (N, 2), -1 where the line gave only the kernel's state)."""
    try:
        with open(path) as f:
            lines = f.readlines()
    except OSError as e:
        raise InputError(f"{path}: {e.strerror}") from None
    rows = []
    for no, line in enumerate(lines, 1):
        try:
            row = parse_line(line)
        except (ValueError, KeyError, IndexError) as e:
            raise InputError(f"{path}:{no}: not a conntrack entry: {e}") from None
        if row is not None:
            rows.append(row)
    return _columns(rows)
