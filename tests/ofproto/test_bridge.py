"""NORMAL's bridge (ofproto/bridge.py) and the VLAN actions' rule text.

The port list parses as documented and bad ones are refused naming the item; NORMAL's
decisions follow OVS's xlate_normal case by case; VLAN actions print and are refused as
``ovs-ofctl`` prints and refuses them. What NORMAL and the VLAN actions do to frames is
compared with the real OVS in tests/support/oracle/scenarios_vlan.py (all three modes).
"""

from __future__ import annotations

import numpy as np
import pytest

from ctaccel.errors import CtaccelError
from ctaccel.ofproto.bridge import Bridge, BridgeError, parse_ports
from ctaccel.ofproto.rules import parse_flows, parse_rule
from ctaccel.packet import key as K
from support.ofctl import assert_ovs_ofctl_agrees, rejection

A, B, C = 0x020000000001, 0x020000000002, 0x020000000003
BCAST = (1 << 48) - 1


def _key(in_port, src, dst, vid=None, pcp=0, dl_type=K.ETH_TYPE_IP):
    key = np.zeros(K.KEY_WIDTH, np.int64)
    key[K.IN_PORT], key[K.DL_SRC], key[K.DL_DST], key[K.DL_TYPE] = in_port, src, dst, dl_type
    if vid is not None:
        key[K.VLAN_TCI] = 0x1000 | vid | pcp << 13
    return key


def _decide(bridge, key):
    vlan, ports = bridge.normal(key)
    tci = int(key[K.VLAN_TCI])
    pcp = tci & 0xE000 if tci & 0x1000 else 0
    return vlan, [(p.number, p.out_tci(vlan, pcp)) for p in ports]


def test_port_list_parses():
    ports = parse_ports("1, 2,5:tag=12,7:trunks=1-3;9")
    assert [(p.number, p.tag, p.trunks) for p in ports] == [
        (1, None, None), (2, None, None), (5, 12, None), (7, None, frozenset({1, 2, 3, 9}))]  # fmt: skip
    assert Bridge(ports).format() == "1,2,5:tag=12,7:trunks=1;2;3;9"


@pytest.mark.parametrize(
    "spec",
    ["x", "0", "1:tag=4096", "1:tag=a", "1:mode=trunk", "1,1", "1:trunks=5-3", "1:trunks="],
)
def test_bad_port_lists_are_refused_naming_the_item(spec):
    with pytest.raises(BridgeError) as err:
        parse_ports(spec)
    assert isinstance(err.value, CtaccelError)
    assert "bridge port" in str(err.value)


def test_flood_learn_and_unicast():
    br = Bridge(parse_ports("1,2,3:tag=10,4:trunks=10;20"))
    # unknown destination in VLAN 0: the trunks of every VLAN only
    assert _decide(br, _key(1, A, B)) == (0, [(2, 0)])
    assert br.macs == {(0, A): 1}
    assert _decide(br, _key(2, B, A)) == (0, [(1, 0)])
    # access port 3: VLAN 10, tagged on trunks, untagged on access ports
    assert _decide(br, _key(3, C, BCAST)) == (10, [(1, 0x100A), (2, 0x100A), (4, 0x100A)])
    assert _decide(br, _key(4, B, C, vid=10, pcp=5)) == (10, [(3, 0)])
    # the priority of a frame from an access port stays on trunks
    assert _decide(br, _key(3, C, B, vid=0, pcp=3)) == (10, [(4, 0x100A | 3 << 13)])


def test_admission_and_reserved_destinations():
    br = Bridge(parse_ports("1,3:tag=10,4:trunks=10"))
    version = br.version
    assert _decide(br, _key(3, C, A, vid=10)) == (0, [])  # tagged on an access port
    assert _decide(br, _key(4, C, A, vid=30)) == (0, [])  # VLAN the trunk does not carry
    assert _decide(br, _key(9, C, A)) == (0, [])  # not a bridge port
    assert _decide(br, _key(1, C, 0x0180C2000000)) == (0, [])  # STP: never forwarded
    partial = _key(1, C, A, dl_type=K.ETH_TYPE_VLAN)  # a VLAN ethertype without a tag
    assert _decide(br, partial) == (0, [])
    assert br.version == version and not br.macs  # none of them learned anything


def test_moves_and_the_input_port():
    br = Bridge(parse_ports("1,2,3"))
    br.normal(_key(1, A, BCAST))
    v = br.version
    assert _decide(br, _key(1, B, A)) == (0, [])  # learned port is the input port
    assert br.version == v + 1  # B was new
    br.normal(_key(1, A, BCAST))
    assert br.version == v + 1  # nothing changed: no new version
    br.normal(_key(2, A, BCAST))  # A moved
    assert br.version == v + 2 and br.macs[(0, A)] == 2
    br.normal(_key(3, A | 1 << 40, BCAST))  # multicast sources are not learned
    assert br.version == v + 2


def test_decisions_are_noted_in_ofproto_trace_words():
    br = Bridge(parse_ports("1,2"))
    br.normal(_key(1, A, B))
    assert br.notes == ["learned that 02:00:00:00:00:01 is on port 1 in VLAN 0",
                        "no learned MAC for destination, flooding"]  # fmt: skip
    br.normal(_key(2, B, A))
    assert br.notes[-1] == "forwarding to learned port"
    br.normal(_key(1, B, A))
    assert br.notes == ["learned that 02:00:00:00:00:02 is on port 1 in VLAN 0",
                        "learned port is input port, dropping"]  # fmt: skip
    br.normal(_key(7, B, A))
    assert br.notes == ["no input bundle, dropping"]


def test_fdb_show_and_flush():
    br = Bridge(parse_ports("1,2"))
    br.normal(_key(2, A, BCAST, vid=None))
    assert br.dump_macs().splitlines() == [" port  VLAN  MAC                Age",
                                           "    2     0  02:00:00:00:00:01    0"]  # fmt: skip
    v = br.version
    br.flush_macs()
    assert not br.macs and br.version == v + 1


def test_full_table_forgets_the_oldest():
    br = Bridge(parse_ports("1,2"), table_size=2)
    for mac in (A, B, C):
        br.normal(_key(1, mac, BCAST))
    assert list(br.macs) == [(0, B), (0, C)]


def test_a_bridge_from_rules_grows_with_traffic():
    rules = parse_flows("in_port=3,actions=output:5\nactions=normal", "r.flows")
    br = Bridge.from_rules(rules)
    assert br.format() == "3,5"
    v = br.version
    br.saw_port(7)
    br.saw_port(7)
    assert br.format() == "3,5,7" and br.version == v + 1
    fixed = Bridge(parse_ports("1"))
    fixed.saw_port(7)
    assert fixed.format() == "1"


def test_wildcards_cover_what_normal_reads():
    br = Bridge(parse_ports("1,2"))
    wc = np.zeros(K.KEY_WIDTH, np.int64)
    arp = _key(1, A, BCAST, dl_type=K.ETH_TYPE_ARP)
    arp[K.NW_PROTO] = 1
    br.normal(arp, wc)
    for col in (K.IN_PORT, K.DL_SRC, K.DL_DST, K.NW_PROTO, K.NW_SRC + 3, K.NW_DST + 3):
        assert wc[col] != 0, col
    assert wc[K.VLAN_TCI] & 0x1FFF == 0x1FFF


VLAN_PRINTED = [
    ("in_port=1,actions=strip_vlan,output:2", "strip_vlan,output:2"),
    ("in_port=1,actions=pop_vlan", "strip_vlan"),
    ("in_port=1,actions=mod_vlan_vid:12,NORMAL", "mod_vlan_vid:12,NORMAL"),
    ("in_port=1,actions=mod_vlan_pcp:7,normal", "mod_vlan_pcp:7,NORMAL"),
    ("in_port=1,actions=mod_vlan_vid:0x0c", "mod_vlan_vid:12"),
]
VLAN_REJECTED = [
    ("in_port=1,actions=mod_vlan_vid:4096", "4096: not a valid VLAN VID"),
    ("in_port=1,actions=mod_vlan_pcp:8", "8: not a valid VLAN PCP"),
    ("in_port=1,actions=push_vlan:0x800", "0x800: not a valid VLAN ethertype"),
]


@pytest.mark.parametrize(("line", "actions"), VLAN_PRINTED)
def test_vlan_actions_print_as_ovs_ofctl(line, actions):
    assert parse_rule(line).format_actions() == actions


@pytest.mark.parametrize(("line", "reason"), VLAN_REJECTED)
def test_vlan_actions_rejected_as_ovs_ofctl(line, reason):
    assert rejection(line) == reason


@pytest.mark.oracle
def test_ovs_ofctl_agrees_on_vlan_actions():
    assert_ovs_ofctl_agrees([(line, f" actions={a}") for line, a in VLAN_PRINTED], VLAN_REJECTED)
    assert parse_rule("actions=push_vlan:0x88a8").format_actions() == "push_vlan:0x88a8"
