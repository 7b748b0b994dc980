"""Frame-rewriting actions (mod_dl_src, mod_dl_dst, mod_nw_tos, dec_ttl): parsed, checked and printed as
ovs-ofctl does; what they do is compared with the real OVS in
tests/support/oracle/scenarios_rewrite.py (all three modes)."""

from __future__ import annotations

import pytest

from ctaccel.ofproto.rules import parse_rule
from support.ofctl import assert_ovs_ofctl_agrees, rejection

PRINTED = [
    ("in_port=1,actions=mod_dl_src:02:00:00:00:00:AA,mod_dl_dst:2:0:0:0:0:bb,output:2",
     "mod_dl_src:02:00:00:00:00:aa,mod_dl_dst:02:00:00:00:00:bb,output:2"),
    ("in_port=1,actions=mod_dl_src:02:00:00:00:00:AA/ff:ff:ff:ff:ff:ff",
     "mod_dl_src:02:00:00:00:00:aa"),
    ("ip,actions=mod_nw_tos:16,output:1", "mod_nw_tos:16,output:1"),
    ("ipv6,actions=mod_nw_tos:0xfc", "mod_nw_tos:252"),
    ("actions=mod_nw_tos:16", "mod_nw_tos:16"),
    ("ip,actions=dec_ttl,output:1", "dec_ttl,output:1"),
    ("ip,actions=dec_ttl(1,2)", "dec_ttl(1,2)"),
    ("ip,actions=dec_ttl(0)", "dec_ttl(0)"),
    ("ip,actions=dec_ttl()", "dec_ttl"),
]  # fmt: skip
REJECTED = [
    ("in_port=1,actions=mod_dl_src:zz", "invalid mac address zz"),
    ("in_port=1,actions=mod_dl_dst", "invalid mac address "),
    ("ip,actions=mod_nw_tos:17", "17: not a valid TOS"),
    ("ip,actions=mod_nw_tos:256", 'invalid TOS "256"'),
]


@pytest.mark.parametrize(("line", "actions"), PRINTED)
def test_printed_as_ovs_ofctl_prints(line, actions):
    assert parse_rule(line).format_actions() == actions


@pytest.mark.parametrize(("line", "reason"), REJECTED)
def test_rejected_as_ovs_ofctl_rejects(line, reason):
    assert rejection(line) == reason


@pytest.mark.oracle
def test_ovs_ofctl_agrees():
    assert_ovs_ofctl_agrees([(line, f" actions={a}") for line, a in PRINTED], REJECTED)
