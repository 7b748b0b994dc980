"""How OVS prints field values in matches (lib/match.c match_format and its helpers).

What: text for Ethernet and IP addresses (with masks, CIDR where OVS uses it), flag sets
(``+trk-new``), and masked integers in hex or decimal, exactly as ``ovs-ofctl dump-flows``
prints them; rule_match.py puts them in OVS's field order.

Design: pure functions of (value, mask); no knowledge of fields (fields.py) or rules.

Invariants: a full mask prints the value alone; output round-trips through fields.py's
parsers to the same (value, mask).
"""

from __future__ import annotations

import ipaddress


def format_eth(value: int) -> str:
    return ":".join(f"{(value >> s) & 0xFF:02x}" for s in range(40, -8, -8))


def format_ipv4(value: int, mask: int) -> str:
    text = str(ipaddress.IPv4Address(value))
    if mask == 0xFFFFFFFF:
        return text
    inv = ~mask & 0xFFFFFFFF
    if inv & (inv + 1) == 0:  # a CIDR prefix
        return f"{text}/{32 - inv.bit_length()}"
    return f"{text}/{ipaddress.IPv4Address(mask)}"


def _ipv6_text(value: int) -> str:
    a = ipaddress.IPv6Address(value)
    if a.ipv4_mapped is not None:  # inet_ntop writes the dotted quad
        return f"::ffff:{a.ipv4_mapped}"
    return a.compressed


def format_ipv6(value: int, mask: int) -> str:
    full = (1 << 128) - 1
    text = _ipv6_text(value)
    if mask == full:
        return text
    inv = ~mask & full
    if inv & (inv + 1) == 0:
        return f"{text}/{128 - inv.bit_length()}"
    return f"{text}/{_ipv6_text(mask)}"


def format_flags_masked(value: int, mask: int, full: int, names: tuple[str, ...]) -> str:
    """OVS format_flags(_masked): ``a|b`` when exact (``0`` if none), else ``+a-b``."""
    if mask == full:
        parts = [n for i, n in enumerate(names) if value & (1 << i)]
        unknown = value & ~((1 << len(names)) - 1)
        if unknown:
            parts.append(f"{unknown:#x}")
        return "|".join(parts) if parts else "0"
    out = []
    for i in range(full.bit_length()):
        bit = 1 << i
        if mask & bit:
            name = names[i] if i < len(names) else "[Unknown]"
            out.append(("+" if value & bit else "-") + name)
    return "".join(out)


def format_hex_masked(value: int, mask: int, full: int) -> str:
    """``%#x`` with ``/%#x`` unless exact (C's ``%#x`` prints 0 as ``0``)."""
    v = f"{value:#x}" if value else "0"
    if mask == full:
        return v
    return f"{v}/{mask:#x}" if mask else f"{v}/0"


def format_dec_or_hex_masked(value: int, mask: int, full: int) -> str:
    """Decimal when exact, else ``0x%x/0x%x`` (OVS format_be16/uint16_masked)."""
    if mask == full:
        return str(value)
    return f"0x{value:x}/0x{mask:x}"
