"""OpenFlow action objects, as the engine executes them and as dump-flows prints them.

What: one small dataclass per supported action. ``rules.py`` builds them from rule text; the
reference engine (``datapath/``) interprets them; :meth:`format` gives the text
``ovs-ofctl dump-flows`` prints for the action (OVS's canonical form, which is not always the
form the rule was written in: ``set_field`` prints as ``load``, ``goto_table:N`` as
``resubmit(,N)``, ``in_port`` as ``IN_PORT``, a ``note`` is zero-padded).

Design: plain data, no behaviour besides formatting. ``load`` and ``set_field`` are one
:class:`SetField` whose ``value`` and ``mask`` are relative to its ``field`` bit range
(``whole_value``/``whole_mask`` shift them into place, so executing it is
``new = (old & ~whole_mask) | whole_value`` on the field's int).

Invariants:
- ``SetField.value & ~SetField.mask == 0``; both fit in ``SetField.field.nbits`` bits.
- ``Ct.zone`` and ``Ct.zone_field`` are never both set; ``Ct.table`` is None or 0..254.
- ``Ct.exec_`` holds only SetField actions on ct_mark / ct_label.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ctaccel.ofproto.field_text import format_eth
from ctaccel.ofproto.fields import FieldRef

OFPP_LOCAL = 65534
OFPP_CONTROLLER_MAX_LEN = 65535  # OVS's default max_len (UINT16_MAX: the whole packet)


def _hex0(value: int) -> str:
    """C's ``%#x``: ``0`` for zero, ``0x..`` otherwise."""
    return f"{value:#x}" if value else "0"


@dataclass
class Output:
    """Send the packet to an OpenFlow port (``output:N``; OVS emits nothing if N is in_port)."""

    port: int

    def format(self) -> str:
        return "LOCAL" if self.port == OFPP_LOCAL else f"output:{self.port}"


@dataclass
class OutputInPort:
    """Send the packet back out of its input port (``in_port`` / ``output:in_port``)."""

    def format(self) -> str:
        return "IN_PORT"


@dataclass
class Controller:
    """Send the packet to the controller (a packet-in)."""

    reason: str = "action"
    max_len: int = OFPP_CONTROLLER_MAX_LEN
    userdata: bytes | None = None
    controller_id: int = 0

    def format(self) -> str:
        if self.reason == "action" and self.userdata is None and self.controller_id == 0:
            return f"CONTROLLER:{self.max_len}"
        parts = []
        if self.reason != "action":
            parts.append(f"reason={self.reason}")
        if self.max_len != OFPP_CONTROLLER_MAX_LEN:
            parts.append(f"max_len={self.max_len}")
        if self.controller_id:
            parts.append(f"id={self.controller_id}")
        if self.userdata is not None:
            parts.append("userdata=" + ".".join(f"{b:02x}" for b in self.userdata))
        return f"controller({','.join(parts)})"


@dataclass
class Drop:
    """An explicit ``drop`` (or an empty action list): the packet goes nowhere."""

    def format(self) -> str:
        return "drop"


@dataclass
class SetField:
    """``load:`` / ``set_field:``: write ``value`` under ``mask`` into the bits of ``field``.

    ``value`` and ``mask`` are relative to the bit range ``field`` names (bit 0 of ``value``
    goes to bit ``field.start`` of the field): ``load:3->NXM_NX_REG1[4..7]`` is value 3,
    mask 0xf; ``set_field:0x5/0xff->reg3`` names the whole field, so value 5, mask 0xff.
    :attr:`whole_value` / :attr:`whole_mask` give them shifted into place over the whole field.
    """

    field: FieldRef
    value: int
    mask: int

    @property
    def whole_value(self) -> int:
        return self.value << self.field.start

    @property
    def whole_mask(self) -> int:
        return self.mask << self.field.start

    def format(self) -> str:
        # OVS prints a set_field as one load per contiguous run of mask bits, low bits first.
        runs = []
        bit, mask = 0, self.whole_mask
        while mask >> bit:
            if not (mask >> bit) & 1:
                bit += 1
                continue
            start = bit
            while (mask >> bit) & 1:
                bit += 1
            runs.append((start, bit - start))
        value = self.whole_value
        out = []
        for start, nbits in runs:
            ref = self.field.with_bits(start, nbits)
            out.append(f"load:{_hex0((value >> start) & ((1 << nbits) - 1))}->{ref.format()}")
        return ",".join(out)


@dataclass
class Move:
    """``move:SRC[a..b]->DST[c..d]``: copy a bit range between fields (equal widths)."""

    src: FieldRef
    dst: FieldRef

    def format(self) -> str:
        return f"move:{self.src.format()}->{self.dst.format()}"


@dataclass(frozen=True)
class Nat:
    """``nat`` inside ``ct(...)``: bare (``kind`` None: apply the connection's translation) or
    ``nat(src|dst=ADDR[-ADDR][:PORT[-PORT]][,persistent][,hash|random])``.

    ``family`` is 4, 6 or 0 (no address given); addresses are ints; ``max_addr`` None when a
    single address was given; ports 0 when not given."""

    kind: str | None = None  # "src", "dst" or None
    family: int = 0
    min_addr: int = 0
    max_addr: int | None = None
    min_port: int = 0
    max_port: int = 0
    persistent: bool = False
    hash: bool = False
    random: bool = False

    def format(self) -> str:
        """OVS format_NAT."""
        if self.kind is None:
            return "nat"
        text = self.kind
        if self.family:
            text += "=" + self._addr(self.min_addr)
            if self.max_addr is not None and self.max_addr != self.min_addr:
                text += "-" + self._addr(self.max_addr)
            if self.min_port:
                text += f":{self.min_port}"
                if self.max_port and self.max_port != self.min_port:
                    text += f"-{self.max_port}"
            flags = [n for n, on in (("persistent", self.persistent), ("hash", self.hash),
                                     ("random", self.random)) if on]  # fmt: skip
            if flags:
                text += "," + ",".join(flags)
        return f"nat({text})"

    def _addr(self, value: int) -> str:
        import ipaddress

        if self.family == 4:
            return str(ipaddress.IPv4Address(value))
        text = str(ipaddress.IPv6Address(value))
        return f"[{text}]" if self.min_port else text

    def __str__(self) -> str:
        return self.format()


@dataclass
class Ct:
    """``ct(...)``: send the packet through the connection tracker.

    ``zone`` is an immediate zone (None: zone 0 unless ``zone_field`` names the register bits
    to read it from); ``table`` None means no recirculation (later actions see an untracked
    packet); ``nat`` is the :class:`Nat` inside it, if any.
    """

    commit: bool = False
    force: bool = False
    zone: int | None = None
    zone_field: FieldRef | None = None
    table: int | None = None
    exec_: list[SetField] = field(default_factory=list)
    nat: Nat | None = None
    alg: str | None = None

    def format(self) -> str:
        parts = []
        if self.commit:
            parts.append("commit")
        if self.force:
            parts.append("force")
        if self.table is not None:
            parts.append(f"table={self.table}")
        if self.zone_field is not None:
            parts.append(f"zone={self.zone_field.format()}")
        elif self.zone:
            parts.append(f"zone={self.zone}")
        if self.nat is not None:
            parts.append(str(self.nat))
        if self.exec_:
            parts.append("exec(" + ",".join(a.format() for a in self.exec_) + ")")
        if self.alg:
            parts.append(f"alg={self.alg}")
        return f"ct({','.join(parts)})"


@dataclass
class CtClear:
    """``ct_clear``: forget the packet's conntrack state (untracked again)."""

    def format(self) -> str:
        return "ct_clear"


@dataclass
class Resubmit:
    """``resubmit(port,table)``: look the packet up again (None: keep in_port / this table)."""

    in_port: int | None = None
    table: int | None = None

    def format(self) -> str:
        if self.in_port is not None and self.table is None:
            return f"resubmit:{self.in_port}"
        port = "" if self.in_port is None else str(self.in_port)
        table = "" if self.table is None else str(self.table)
        return f"resubmit({port},{table})"


@dataclass
class GotoTable:
    """``goto_table:N``: continue in a later table (OVS prints it as ``resubmit(,N)``)."""

    table: int

    def format(self) -> str:
        # ovs-ofctl sends flows as NXM (OpenFlow 1.0 + extensions), which has no instructions:
        # the switch stores goto_table as resubmit(,N) and dump-flows prints that.
        return f"resubmit(,{self.table})"


@dataclass
class Note:
    """``note:hex.bytes``: a comment carried in the flow; does nothing."""

    data: bytes

    def format(self) -> str:
        # NXAST_NOTE is padded so the whole action is a multiple of 8 bytes (10-byte header).
        padded_len = (len(self.data) + 10 + 7) // 8 * 8 - 10
        data = self.data + bytes(padded_len - len(self.data))
        return "note:" + ".".join(f"{b:02x}" for b in data)


@dataclass
class SetEth:
    """``mod_dl_src:MAC`` / ``mod_dl_dst:MAC``: rewrite the frame's Ethernet source or
    destination; the flow changes too, so later lookups of the pass see the new address."""

    dst: bool
    mac: int

    def format(self) -> str:
        return f"mod_dl_{'dst' if self.dst else 'src'}:{format_eth(self.mac)}"


@dataclass
class SetTos:
    """``mod_nw_tos:N``: the DSCP bits (N, a multiple of 4) of an IPv4 ToS or IPv6 traffic
    class; the ECN bits stay. Nothing for other packets."""

    tos: int

    def format(self) -> str:
        return f"mod_nw_tos:{self.tos}"


@dataclass
class DecTtl:
    """``dec_ttl[(ids)]``: decrement an IP packet's TTL / hop limit; at 0 or 1 the rest of
    the rule's actions are skipped (OVS would send an invalid-TTL packet-in to controllers
    that ask for them: none here). Nothing for other packets."""

    ids: tuple[int, ...] = ()

    def format(self) -> str:
        return f"dec_ttl({','.join(str(i) for i in self.ids)})" if self.ids else "dec_ttl"


@dataclass
class StripVlan:
    """``strip_vlan`` / ``pop_vlan``: remove the outer 802.1Q tag, if any (OVS prints both as
    ``strip_vlan``)."""

    def format(self) -> str:
        return "strip_vlan"


@dataclass
class PushVlan:
    """``push_vlan:TPID``: push a tag (TPID 0x8100 or 0x88a8) of VLAN 0, priority 0 (OVS
    sets the fields with later actions; a tagged packet gets a second, outer tag). Known
    gap: the flow key holds one tag, so a ``strip_vlan`` after a second tag was pushed
    leaves the flow untagged where OVS's shows the inner tag until the next parse. At most
    MAX_TAG_BYTES (8 tags) are pushed onto a frame; later pushes change only the flow.)"""

    tpid: int = 0x8100

    def format(self) -> str:
        return f"push_vlan:{self.tpid:#x}"


@dataclass
class SetVlanVid:
    """``mod_vlan_vid:VID``: the tag's VLAN ID; an untagged packet gets a tag (priority 0)."""

    vid: int

    def format(self) -> str:
        return f"mod_vlan_vid:{self.vid}"


@dataclass
class SetVlanPcp:
    """``mod_vlan_pcp:PCP``: the tag's priority; an untagged packet gets a tag (VLAN ID 0)."""

    pcp: int

    def format(self) -> str:
        return f"mod_vlan_pcp:{self.pcp}"


@dataclass
class Normal:
    """``normal``: OVS's L2 switch (ofproto/bridge.py): learn the source MAC per VLAN, send to
    the learned port of the destination or flood the VLAN, tagging per the ports' VLAN mode."""

    def format(self) -> str:
        return "NORMAL"


# What an interpreter's action handler (xlate's, the reference engine's) answers to skip
# the rest of the rule's actions (dec_ttl at TTL <= 1)
SKIP_REST = object()


@dataclass
class Conjunction:
    """``conjunction(id,k/n)``: this rule is dimension ``k`` of ``n`` of the conjunctive flow
    ``id`` (the classifier's business: such a rule is never executed, see classifier.py)."""

    id: int
    clause: int
    n_clauses: int

    def format(self) -> str:
        return f"conjunction({self.id},{self.clause}/{self.n_clauses})"


Action = (
    Output
    | OutputInPort
    | Controller
    | Drop
    | SetField
    | Move
    | Ct
    | CtClear
    | Resubmit
    | GotoTable
    | Note
    | Conjunction
    | SetEth
    | SetTos
    | DecTtl
    | StripVlan
    | PushVlan
    | SetVlanVid
    | SetVlanPcp
    | Normal
)


def format_actions(actions: list) -> str:
    """The ``actions=`` text of a rule as dump-flows prints it (``drop`` when empty)."""
    if not actions:
        return "drop"
    return ",".join(a.format() for a in actions)
