"""The bridge's ports and MAC learning table: what OVS's ``NORMAL`` action switches with.

What: :class:`Bridge` holds the bridge's ports and their VLAN mode as ``ovs-vsctl`` sets them
(``tag=V``: an access port of VLAN V; ``trunks=...``: a trunk of those VLANs; neither: a trunk
of every VLAN) and the MAC learning table; :meth:`Bridge.normal` is the ``NORMAL`` action's
decision for a flow (ofproto-dpif-xlate.c ``xlate_normal``): the ports to send to, each with
the VLAN tag the frame must carry there. Both engines call it: the reference engine per
packet, the translator (xlate.py) per megaflow.

Design, as OVS 3.x without bonds, mirrors, multicast snooping or native-VLAN modes:
- input: a partial VLAN tag is dropped; on an access port a tagged frame (VID != 0) is
  dropped, an untagged or priority-tagged one belongs to the port's VLAN; on a trunk the
  frame's VID must be one the port trunks; reserved multicast destinations (STP, LACP, CDP,
  ...; OVS's ``eth_addr_is_reserved``) are dropped (``forward-bpdu`` off).
- learning: a unicast source MAC is learned on (VLAN, input port), before the destination is
  looked up. The table changes only when an address is new or moves; every change bumps
  :attr:`Bridge.version`, and an engine with caches drops them all when it sees a new version
  (OVS revalidates every datapath flow after a learning change). No ageing: an entry lives
  until its address moves or, when the table is full (OVS's default 2,048 entries), it is the
  oldest one learned (OVS evicts the least recently used entry of the port with the most,
  refreshing entries as packets use them: the two differ only past 2,048 addresses) — so a
  cached decision stays right until the version changes.
- output: the learned port, or nothing when it is the input port; unknown unicast,
  multicast and broadcast destinations flood to every other port of the VLAN, in port order.
  Access ports get the frame untagged; trunks get it tagged with the VLAN and the frame's
  priority (untagged in VLAN 0 without priority).
- without an explicit port list (:meth:`Bridge.parse`), a bridge has the ports its rules name
  and grows by every port a packet arrives on (each a trunk of every VLAN; a new port is a
  change too: floods reach it from then on).

Known gap: a NORMAL that follows ``ct(table=N)`` in the same action list is decided by the
reference engine after the recirculated copy ran (and maybe learned), by the compiled
engine, as by OVS, when the pass is translated, before the copy runs: the two differ only
when the copy's pass learns the very address the original's NORMAL then looks up.

Invariants: :meth:`normal` depends on the flow only through the bits it ORs into ``wc``
(in_port, dl_src, dl_dst, the VLAN ID and CFI, and for ARP the bits OVS's gratuitous-ARP test
reads), and on the table only through :attr:`version`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ctaccel.errors import CtaccelError
from ctaccel.ofproto import actions as A
from ctaccel.packet import key as K

MAC_TABLE_SIZE = 2048  # OVS's other_config:mac-table-size default
VLAN_CFI = 0x1000
VLAN_VID_MASK = 0x0FFF
VLAN_PCP_MASK = 0xE000
# lib/packets.c eth_addr_is_reserved: STP, pause frames and other IEEE reserved addresses,
# Extreme's EDP/EAPS, Cisco's ISL, CDP/VTP/PAgP/UDLD/DTP, PVST+, uplink fast, CFM, ...
RESERVED_MACS = frozenset(
    [0x0180C2000000 + i for i in range(16)]
    + [0x00E02B000000, 0x00E02B000004, 0x00E02B000006, 0x01000C000000, 0x01000CCCCCCC,
       0x01000CCCCCCD, 0x01000CCDCDCD, 0x01000CCCCCC0, 0x01000CCCCCC1, 0x01000CCCCCC2,
       0x01000CCCCCC3, 0x01000CCCCCC4, 0x01000CCCCCC5, 0x01000CCCCCC6, 0x01000CCCCCC7]
)  # fmt: skip


def _mac_text(mac: int) -> str:
    return ":".join(f"{mac >> s & 0xFF:02x}" for s in range(40, -1, -8))


def vlan_action_tci(act, tci: int) -> int:
    """The flow's VLAN TCI after a VLAN action (OVS's xlate: mod_vlan_vid/pcp push a tag
    on an untagged flow, keeping the other field; push_vlan pushes VLAN 0, priority 0)."""
    if isinstance(act, A.StripVlan):
        return 0
    if isinstance(act, A.PushVlan):
        return VLAN_CFI
    if isinstance(act, A.SetVlanVid):
        return (tci & 0xE000) | 0x1000 | act.vid
    return (tci & 0x0FFF) | 0x1000 | (act.pcp << 13)


class BridgeError(CtaccelError):
    """A bridge port list that does not parse."""


@dataclass(frozen=True)
class Port:
    """One bridge port: ``tag`` makes it an access port; else a trunk of ``trunks`` (None:
    every VLAN)."""

    number: int
    tag: int | None = None
    trunks: frozenset | None = None

    def admits(self, vid: int) -> bool:
        """May a frame with this VID (0: untagged or priority-tagged) come in here?"""
        if self.tag is not None:
            return vid == 0
        return self.trunks is None or vid in self.trunks

    def carries(self, vlan: int) -> bool:
        if self.tag is not None:
            return self.tag == vlan
        return self.trunks is None or vlan in self.trunks

    def out_tci(self, vlan: int, pcp: int) -> int:
        """The tag a frame of VLAN ``vlan`` and priority bits ``pcp`` leaves with (0: none)."""
        if self.tag is not None:
            return 0
        tci = vlan | pcp
        return tci | VLAN_CFI if tci else 0

    def format(self) -> str:
        if self.tag is not None:
            return f"{self.number}:tag={self.tag}"
        if self.trunks is not None:
            return f"{self.number}:trunks={';'.join(str(v) for v in sorted(self.trunks))}"
        return str(self.number)


def _vlans(text: str, where: str) -> frozenset:
    out: set[int] = set()
    for part in text.split(";"):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        lo, hi = (int(m.group(1)), int(m.group(2) or m.group(1))) if m else (1, 0)
        if not m or lo > hi or hi > VLAN_VID_MASK:
            raise BridgeError(f"{where}: {part!r}: not a VLAN or range of VLANs (0-4095)")
        out.update(range(lo, hi + 1))
    return frozenset(out)


def parse_ports(spec: str) -> list[Port]:
    """``"1,2,5:tag=12,7:trunks=1-5;9"`` into ports (port numbers, as in ``in_port=``)."""
    ports: dict[int, Port] = {}
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        number, _, opt = item.partition(":")
        if not number.strip().isdigit() or not 0 < int(number) < 0xFF00:
            raise BridgeError(f"bridge port {item!r}: port number must be 1-65279")
        n = int(number)
        tag = trunks = None
        if opt:
            name, _, value = opt.partition("=")
            if name.strip() == "tag" and value.strip().isdigit():
                tag = int(value)
                if tag > VLAN_VID_MASK:
                    raise BridgeError(f"bridge port {item!r}: tag must be 0-4095")
            elif name.strip() == "trunks":
                trunks = _vlans(value, f"bridge port {item!r}")
            else:
                raise BridgeError(f"bridge port {item!r}: expected N, N:tag=VLAN or "
                                  "N:trunks=VLANS (VLANS: 1-5;7)")  # fmt: skip
        if n in ports:
            raise BridgeError(f"bridge port {n} listed twice")
        ports[n] = Port(n, tag, trunks)
    return list(ports.values())


class Bridge:
    """The ports and MAC learning table NORMAL switches with (see the module docstring)."""

    def __init__(self, ports=(), *, grows: bool = False, table_size: int = MAC_TABLE_SIZE):
        self.ports: dict[int, Port] = {p.number: p for p in ports}
        self.grows = grows  # ports are added as packets arrive on them
        self.table_size = table_size
        self.macs: dict[tuple[int, int], int] = {}  # (vlan, mac) -> port, oldest first
        self.version = 0  # bumped at every change that can alter a NORMAL decision
        self.notes: list[str] = []  # what the last decision did, in ofproto/trace's words

    @classmethod
    def parse(cls, spec: str) -> Bridge:
        return cls(parse_ports(spec))

    @classmethod
    def from_rules(cls, rules) -> Bridge:
        """The ports ``rules`` name (``in_port=`` matches, outputs), growing with traffic."""
        numbers: set[int] = set()
        for rule in rules:
            numbers.update(int(v) for col, v, m in rule.match if col == K.IN_PORT and m)
            for act in rule.actions:
                if isinstance(act, A.Output) and 0 < int(act.port) < 0xFF00:
                    numbers.add(int(act.port))
        return cls([Port(n) for n in sorted(numbers)], grows=True)

    def format(self) -> str:
        return ",".join(self.ports[n].format() for n in sorted(self.ports))

    def saw_port(self, port: int) -> None:
        """A packet arrived on ``port``: a growing bridge adds it."""
        if self.grows and port not in self.ports and 0 < port < 0xFF00:
            self.ports[port] = Port(port)
            self.version += 1

    def learn(self, mac: int, vlan: int, port: int) -> None:
        if mac >> 40 & 1:  # multicast sources are never learned
            return
        k = (vlan, mac)
        if self.macs.get(k) == port:
            return
        self.macs.pop(k, None)
        if len(self.macs) >= self.table_size:
            del self.macs[next(iter(self.macs))]
        self.macs[k] = port
        self.version += 1
        self.notes.append(f"learned that {_mac_text(mac)} is on port {port} in VLAN {vlan}")

    def dump_macs(self) -> str:
        """``ovs-appctl fdb/show``'s table, oldest first (no ageing here: the age is 0)."""
        lines = [" port  VLAN  MAC                Age"]
        for (vlan, mac), port in self.macs.items():
            lines.append(f"{port:5d}  {vlan:4d}  {_mac_text(mac)}  {0:3d}")
        return "\n".join(lines)

    def flush_macs(self) -> None:
        """``ovs-appctl fdb/flush``: forget every learned address (a change)."""
        if self.macs:
            self.macs.clear()
            self.version += 1

    def normal(self, key, wc=None) -> tuple[int, list[Port]]:
        """NORMAL for flow ``key``: (its VLAN, the ports to send to, in order; each tags the
        frame with :meth:`Port.out_tci`), learning the source on the way; the key bits read
        are ORed into ``wc``."""
        if wc is not None:
            wc[K.DL_SRC] = wc[K.DL_DST] = (1 << 48) - 1
            wc[K.VLAN_TCI] |= VLAN_VID_MASK | VLAN_CFI
            wc[K.IN_PORT] = 0xFFFFFFFF
        self.notes = []
        note = self.notes.append
        in_port = self.ports.get(int(key[K.IN_PORT]))
        if in_port is None:
            note("no input bundle, dropping")
            return 0, []
        tci = int(key[K.VLAN_TCI])
        if int(key[K.DL_TYPE]) in (K.ETH_TYPE_VLAN, K.ETH_TYPE_QINQ) and not tci & VLAN_CFI:
            note("partial VLAN tag, dropping")
            return 0, []
        vid = tci & VLAN_VID_MASK if tci & VLAN_CFI else 0
        if not in_port.admits(vid):
            note("disallowed VLAN VID for this input port, dropping")
            return 0, []
        vlan = in_port.tag if in_port.tag is not None else vid
        dst, src = int(key[K.DL_DST]), int(key[K.DL_SRC])
        if dst in RESERVED_MACS:
            note("packet has reserved destination MAC, dropping")
            return vlan, []
        self._gratuitous_arp_bits(key, wc)
        self.learn(src, vlan, in_port.number)
        if not dst >> 40 & 1:  # unicast: the learned port, if any
            learned = self.macs.get((vlan, dst))
            if learned is not None:
                port = self.ports.get(learned)
                if port is None:
                    note("learned port is unknown, dropping")
                    return vlan, []
                if learned == in_port.number:
                    note("learned port is input port, dropping")
                    return vlan, []
                note("forwarding to learned port")
                return vlan, [port]
        note("no learned MAC for destination, flooding")
        return vlan, [p for n, p in sorted(self.ports.items())
                      if n != in_port.number and p.carries(vlan)]  # fmt: skip

    @staticmethod
    def _gratuitous_arp_bits(key, wc) -> None:
        """The bits OVS's is_gratuitous_arp reads (only for its wildcards here: without bonds
        the answer changes nothing)."""
        if wc is None or int(key[K.DL_TYPE]) != K.ETH_TYPE_ARP:
            return
        if int(key[K.DL_DST]) != (1 << 48) - 1:
            return
        wc[K.NW_PROTO] = 0xFF
        if int(key[K.NW_PROTO]) == 1:  # a request: sender == target?
            wc[K.NW_SRC + 3] = wc[K.NW_DST + 3] = 0xFFFFFFFF
