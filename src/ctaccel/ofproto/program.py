"""Datapath action programs: what a megaflow entry tells compiled code to do.

What: the translation of one datapath pass (``ofproto/xlate.py``) is a short program of
fixed-width int64 rows; the compiled executor (``datapath/vm.py``) runs it per packet. The
translator owns this encoding (it lives beside it, in ofproto/); the datapath reads it and
reaches ofproto otherwise only through the upcall (``xlate.translate``). Also the one
vocabulary of drop reasons, with why each happens.

Design: a program is ``ops[n, OPW]`` (int64); row ``[opcode, a0, a1, ...]``. Every decision
that depends only on the flow key is taken at translation time (rule lookups, resubmit,
goto_table, output-to-in_port, zone taken from a register, move from a field), so the
program contains only what must happen per packet: counters, key writes, conntrack,
recirculation and outputs. This mirrors OVS's xlate → datapath actions split.

Invariants:
- ``OP_CT`` is always followed by ``OP_NAT_SPEC`` when its flags have ``CTF_NAT``, then an
  optional ``OP_RECIRC`` and then ``OP_CLEAR_CT_FIELDS`` (the original continues with its
  ct fields cleared, OVS's flow_clear_conntrack).
- recirc ids: ``recirc_id = table + 1``; 0 is the first pass. Registers, metadata and ct
  fields are part of the megaflow key, so the table is all the frozen state needed.
- Drop reason codes index ``DROP_REASON_NAMES``; 0 means none.
"""

from __future__ import annotations

from ctaccel.conntrack.layout import (
    CA_WIDTH,
    CAF_ALG_FTP,
    CAF_ALG_TFTP,
    CAF_COMMIT,
    CAF_FORCE,
    CAF_SET_LABEL,
    CAF_SET_MARK,
)

OPW = 16  # int64 words per op row

OP_END = 0  # padding; never executed
OP_RULE = 1  # a0 = rule id: a rule matched (counters +1 packet +len bytes; last ct_state := md;
#             the lookup did not miss)
OP_MISS = 2  # a lookup matched no rule (table miss): remember it for the drop reason
OP_OUTPUT = 3  # a0 = port
OP_CONTROLLER = 4  # send to the controller
OP_SET = 5  # a0 = key column, a1 = value, a2 = mask: key[c] = (key[c] & ~mask) | (value & mask)
OP_CT = 6  # a0..a11 = the ct action's row as conntrack takes it (conntrack/layout.py CA_*):
#            zone, CTF_* flags, mark, mark mask, label (4 x 32 bits, most significant
#            first), label mask
OP_RECIRC = 7  # a0 = recirc id: fork; the copy is processed to completion first
OP_CLEAR_CT_FIELDS = 8  # the flow's ct fields read as untracked (the packet keeps its ct md)
OP_CT_CLEAR = 9  # the ct_clear action: ct fields, ct md and the connection handle cleared
OP_DROP = 10  # a0 = drop reason code: stop this pass (e.g. resubmit too deep)
OP_NAT_SPEC = 11  # a0..a11 = the NAT spec row (conntrack/nat.py NS_*) of the OP_CT before it;
#                   data only, skipped by the executor
OP_SET_ETH = 12  # a0 = 0 (source) or 1 (destination), a1 = MAC: the key's column and the
#                  frame's bytes (the packet's rewritten copy from here on)
OP_SET_TOS = 13  # a0 = DSCP bits (ToS / traffic class, ECN kept): key and frame (IPv4
#                  header checksum updated); translated only for IP packets
OP_DEC_TTL = 14  # TTL / hop limit minus one: key and frame (IPv4 header checksum updated);
#                  translated only for IP packets whose TTL is above 1
OP_SET_VLAN = 15  # a0 = value, a1 = mask, a2 = TPID of a pushed tag, a3 = 1 to push a second
#                   tag: VLAN_TCI := (VLAN_TCI & ~mask) | value, then the frame's outer tag
#                   made to match (pushed, popped or rewritten; the header offsets follow)
OP_OUTPUT_VLAN = 16  # a0 = port, a1 = 0 (access port: untagged) or 1 (trunk: tagged with VLAN
#                      a2 and the flow's priority, untagged if both are 0), a2 = VLAN: emit
#                      the frame so tagged (NORMAL's outputs); the flow stays as it was

OP_NAMES = {
    OP_END: "end",
    OP_RULE: "rule",
    OP_MISS: "miss",
    OP_OUTPUT: "output",
    OP_CONTROLLER: "controller",
    OP_SET: "set",
    OP_CT: "ct",
    OP_RECIRC: "recirc",
    OP_CLEAR_CT_FIELDS: "clear_ct_fields",
    OP_CT_CLEAR: "ct_clear",
    OP_DROP: "drop",
    OP_NAT_SPEC: "nat_spec",
    OP_SET_ETH: "set_eth",
    OP_SET_TOS: "set_tos",
    OP_DEC_TTL: "dec_ttl",
    OP_SET_VLAN: "set_vlan",
    OP_OUTPUT_VLAN: "output_vlan",
}

# OP_CT flags: conntrack's own (conntrack/layout.py CAF_*), plus CTF_NAT, which only the
# executor reads
CTF_COMMIT = CAF_COMMIT
CTF_FORCE = CAF_FORCE
CTF_SET_MARK = CAF_SET_MARK
CTF_SET_LABEL = CAF_SET_LABEL
CTF_NAT = 16  # the ct action has nat: its spec is the next row
CTF_ALG = {None: 0, "ftp": CAF_ALG_FTP, "tftp": CAF_ALG_TFTP}  # ct(alg=...)
assert not CTF_NAT & (CAF_COMMIT | CAF_FORCE | CAF_SET_MARK | CAF_SET_LABEL | CAF_ALG_FTP
                      | CAF_ALG_TFTP)  # fmt: skip
assert 1 + CA_WIDTH <= OPW

# Drop reasons (the value of ``drop_reason`` in packets.jsonl and stats), each with why. The
# compiled path reports them as codes: the index in DROP_REASON_NAMES (0: none).
DROP_REASONS = {
    "rx_invalid": "frame shorter than an Ethernet header (dpif-netdev drops it on receive)",
    "table_miss": "the last lookup matched no rule (table-miss: drop)",
    "rule_drop": "rules matched but their actions emitted nothing (drop, or ct without output)",
    "recirc_depth": "more than 8 recirculations",
    "resubmit_depth": "resubmit nesting deeper than 64",
    "ipf_held": "IP fragment stored for reassembly; emitted when its datagram completes",
    "ipf_invalid": "IP fragment rejected by reassembly (see ipf counters)",
}
DROP_REASON_NAMES = ("", *DROP_REASONS)
DROP_CODE = {name: i for i, name in enumerate(DROP_REASON_NAMES) if name}

CONTROLLER_PORT = -1  # the controller in compiled output-port arrays


def recirc_id_for_table(table: int) -> int:
    return table + 1


def table_for_recirc_id(recirc_id: int) -> int:
    return recirc_id - 1


def format_program(ops) -> str:
    """Human-readable program, one op per line (for traces and test failures)."""
    lines = []
    for row in ops:
        op = int(row[0])
        name = OP_NAMES.get(op, f"op{op}")
        if op in (OP_RULE, OP_OUTPUT, OP_RECIRC, OP_DROP, OP_SET_TOS):
            lines.append(f"{name}({int(row[1])})")
        elif op == OP_NAT_SPEC:
            lines.append(f"nat_spec({','.join(str(int(v)) for v in row[1:13])})")
        elif op == OP_SET:
            lines.append(f"set(col={int(row[1])},value={int(row[2]):#x},mask={int(row[3]):#x})")
        elif op == OP_SET_VLAN:
            lines.append(f"set_vlan(value={int(row[1]):#x},mask={int(row[2]):#x},"
                         f"tpid={int(row[3]):#x},second={int(row[4])})")  # fmt: skip
        elif op == OP_OUTPUT_VLAN:
            mode = f"trunk,vlan={int(row[3])}" if row[2] else "access"
            lines.append(f"output_vlan({int(row[1])},{mode})")
        elif op == OP_SET_ETH:
            lines.append(f"set_eth({'dst' if row[1] else 'src'}={int(row[2]):#014x})")
        elif op == OP_CT:
            flags = int(row[2])
            parts = [f"zone={int(row[1])}"]
            parts += [n for b, n in ((CTF_COMMIT, "commit"), (CTF_FORCE, "force")) if flags & b]
            if flags & CTF_SET_MARK:
                parts.append(f"mark={int(row[3]):#x}/{int(row[4]):#x}")
            if flags & CTF_SET_LABEL:
                parts.append("label")
            if flags & CTF_NAT:
                parts.append("nat")
            lines.append(f"ct({','.join(parts)})")
        else:
            lines.append(name)
    return "\n".join(lines)
