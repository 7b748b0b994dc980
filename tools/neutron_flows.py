"""The flows OpenStack Neutron's OVS firewall driver installs, for security groups and ports
given in Neutron's API JSON: the reference ``ctaccel sg compile`` is checked against.

    pip install neutron            # optional: not needed by users, tests or CI
    python3 tools/neutron_flows.py --groups GROUPS.json --ports PORTS.json [-o OUT.flows]

GROUPS.json: ``{"security_groups": [{"id", "stateful", "security_group_rules": [{"direction",
"ethertype", "protocol", "port_range_min", "port_range_max", "remote_ip_prefix",
"remote_group_id", "remote_address_group_id"}]}]}``; PORTS.json: ``{"ports": [{"id",
"mac_address", "fixed_ips": [{"ip_address"}], "allowed_address_pairs", "security_groups",
"port_security_enabled", "ofport", "local_vlan"}]}`` (the last two are what the agent learns
from OVSDB). GROUPS.json may also hold ``"address_groups": [{"id", "addresses"}]`` for
``remote_address_group_id``. Without ``--groups``/``--ports``, a built-in example (one port, a
five-rule group).

How: Neutron's own driver (``neutron.agent.linux.openvswitch_firewall``) runs against a mocked
bridge, the way its unit tests run it; every ``add_flow`` it makes is written in ovs-ofctl
syntax by Neutron's own formatter (``ovs_lib._build_flow_expr_str``), driver-wide flows first,
then each port's, after the OVS agent's own base flows of br-int that the firewall sits in
(``--no-prelude`` leaves them out): table 0 to the transient table 60 (the agent goes through
two empty rate-limit tables), the dead-VLAN drop, and table 60's NORMAL at priority 1
(``br_int.setup_default_table``). What the agent receives is built as Neutron's server builds it
(``securitygroups_rpc_base``): each rule goes through the API's converters and the rule
validation of ``SecurityGroupDbMixin`` (so invalid input fails here as the API would refuse it),
``remote_ip_prefix`` reaches the driver as ``source_ip_prefix`` (ingress) or ``dest_ip_prefix``
(egress) in its normalized CIDR form; a remote group's members are its ports' fixed IPs (MAC
None) and their allowed address pairs (with the pair's MAC, the port's when the pair has
none); an address group's members are its addresses (MAC None). Hardware offload is off (the
default; a bare mock would answer True and turn the ingress accept into ``mod_vlan_vid,normal``).
The driver ignores a group's ``stateful`` flag (it is not passed on). Nothing of Neutron's is
copied here: it is imported from the installed package.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from unittest import mock

EXAMPLE_GROUPS = {"security_groups": [{"id": "sg-web", "stateful": True, "security_group_rules": [
    {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 22,
     "port_range_max": 22},
    {"direction": "ingress", "ethertype": "IPv4", "protocol": "icmp"},
    {"direction": "egress", "ethertype": "IPv4"},
    {"direction": "egress", "ethertype": "IPv6"},
    {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 80,
     "port_range_max": 90},
]}]}  # fmt: skip
EXAMPLE_PORTS = {"ports": [{"id": "port-1", "mac_address": "fa:16:3e:00:00:01",
                            "fixed_ips": [{"ip_address": "10.0.0.1"}],
                            "allowed_address_pairs": [], "security_groups": ["sg-web"],
                            "port_security_enabled": True, "ofport": 5, "local_vlan": 12}]}  # fmt: skip

RULE_KEYS = ("direction", "ethertype", "protocol", "port_range_min", "port_range_max",
             "remote_ip_prefix", "remote_group_id", "remote_address_group_id")  # fmt: skip


def _driver():
    """Neutron's OVS firewall driver on a mocked integration bridge (as its unit tests)."""
    from neutron.agent.common import ovs_lib
    from neutron.agent.linux import ip_conntrack
    from neutron.agent.linux.openvswitch_firewall import firewall as ovsfw
    from neutron.conf.agent import securitygroups_rpc as sg_conf
    from neutron.conf.plugins.ml2.drivers import ovs_conf
    from oslo_config import cfg

    ovs_conf.register_ovs_agent_opts(cfg=cfg.CONF)
    sg_conf.register_securitygroups_opts()
    cfg.CONF([], project="neutron")
    bridge = mock.patch.object(ovs_lib, "OVSBridge", autospec=True).start()
    mock.patch.object(ip_conntrack.IpConntrackManager, "_process_queue_worker").start()
    fw = ovsfw.OVSFirewallDriver(bridge)
    fw.int_br.br.is_hw_offload_enabled = False  # OVSDB's other_config:hw-offload default
    mock.patch.object(fw.ipconntrack, "delete_conntrack_state_by_remote_ips").start()
    return fw, ovs_lib


class _VifPort:
    def __init__(self, port: dict):
        self.port_name = f"tap{port['id']}"[:14]
        self.ofport = int(port["ofport"])
        self.vif_mac = port["mac_address"]


def _flows_of(bridge) -> list[dict]:
    out = []
    for b in (bridge.br, bridge, bridge.deferred.return_value):
        out += [dict(c.kwargs) for c in b.add_flow.call_args_list]
        b.add_flow.reset_mock()
    return out


def _agent_rule(rule: dict) -> dict:
    """One rule as the server sends it to the agent: the API's conversions and checks, then
    the remote prefix under the direction's key (normalized CIDR)."""
    import netaddr
    from neutron.db.securitygroups_db import SecurityGroupDbMixin
    from neutron.extensions import securitygroup as ext_sg

    api = {k: rule.get(k) for k in RULE_KEYS}
    api["project_id"] = "p"
    api["protocol"] = ext_sg.convert_protocol(api["protocol"])
    api["ethertype"] = ext_sg.convert_ethertype_to_case_insensitive(api["ethertype"])
    for key in ("port_range_min", "port_range_max"):
        api[key] = ext_sg.convert_validate_port_value(api[key])
    api["remote_ip_prefix"] = ext_sg.convert_ip_prefix_to_cidr(api["remote_ip_prefix"])
    db = SecurityGroupDbMixin.__new__(SecurityGroupDbMixin)  # its checks use no state
    db._validate_base_security_group_rule_attributes(api)
    out = {"direction": api["direction"], "ethertype": api["ethertype"]}
    for key in RULE_KEYS[2:]:
        if api.get(key) is None:
            continue
        if key == "remote_ip_prefix":
            side = "source_ip_prefix" if api["direction"] == "ingress" else "dest_ip_prefix"
            out[side] = str(netaddr.IPNetwork(api[key]).cidr)
        else:
            out[key] = api[key]
    return out


def _with_pair_macs(port: dict) -> list[dict]:
    """The port's allowed address pairs, a missing MAC filled with the port's (as the API)."""
    return [{"ip_address": a["ip_address"], "mac_address": a.get("mac_address") or
             port["mac_address"]} for a in port.get("allowed_address_pairs", [])]  # fmt: skip


def _members(remote_id: str, groups: dict, ports: dict) -> dict:
    """{"IPv4": [(address, MAC)], "IPv6": [...]} of a security group or address group."""
    members: dict[str, set] = {"IPv4": set(), "IPv6": set()}

    def family(addr):
        return "IPv6" if ":" in addr else "IPv4"

    for ag in groups.get("address_groups", []):
        if ag["id"] == remote_id:
            for addr in ag.get("addresses", []):
                members[family(addr)].add((addr, None))
    for p in ports["ports"]:
        if remote_id in p.get("security_groups", []):
            for ip in p.get("fixed_ips", []):
                members[family(ip["ip_address"])].add((ip["ip_address"], None))
            for pair in _with_pair_macs(p):
                members[family(pair["ip_address"])].add((pair["ip_address"], pair["mac_address"]))
    return {k: sorted(v, key=str) for k, v in members.items()}


def _text(ovs_lib, kw: dict) -> str:
    """One add_flow in ovs-ofctl syntax, by Neutron's formatter, without the zero timeouts
    it spells out (the defaults)."""
    line = ovs_lib._build_flow_expr_str(kw, "add", False)
    return line.replace("hard_timeout=0,", "").replace("idle_timeout=0,", "")


def agent_prelude() -> list[str]:
    """br-int's flows around the firewall, from the OVS agent's setup_default_table."""
    from neutron_lib.plugins.ml2 import ovs_constants as c

    return [f"table=0,priority={c.OPENFLOW_MAX_PRIORITY},dl_vlan={c.DEAD_VLAN_TAG},actions=drop",
            f"table=0,priority=0,actions=resubmit(,{c.TRANSIENT_TABLE})",
            f"table={c.TRANSIENT_TABLE},priority=1,actions=normal"]  # fmt: skip


def neutron_flows(groups: dict, ports: dict) -> list[str]:
    """Every flow the driver adds for ``groups`` and ``ports``, in ovs-ofctl syntax."""
    fw, ovs_lib = _driver()
    br = fw.int_br
    by_device = {p["id"]: p for p in ports["ports"]}
    br.br.get_vif_port_by_id.side_effect = lambda device: _VifPort(by_device[device])
    lines = [_text(ovs_lib, kw) for kw in _flows_of(br)]
    for sg in groups["security_groups"]:
        rules = []
        for r in sg.get("security_group_rules", []):
            if _agent_rule(r) not in rules:  # the server sends each distinct rule once
                rules.append(_agent_rule(r))
        fw.update_security_group_rules(sg["id"], rules)
        fw.update_security_group_members(sg["id"], _members(sg["id"], groups, ports))
    for ag in groups.get("address_groups", []):
        fw.update_security_group_members(ag["id"], _members(ag["id"], groups, ports))
    for p in ports["ports"]:
        br.br.db_get_val.return_value = {"tag": int(p["local_vlan"]), "net_uuid": "net",
                                         "network_type": "vxlan", "physical_network": None,
                                         "segmentation_id": 100}  # fmt: skip
        port_dict = {"device": p["id"], "mac_address": p["mac_address"],
                     "fixed_ips": [ip["ip_address"] for ip in p.get("fixed_ips", [])],
                     "allowed_address_pairs": _with_pair_macs(p),
                     "security_groups": p.get("security_groups", []),
                     "port_security_enabled": p.get("port_security_enabled", True)}  # fmt: skip
        fw.prepare_port_filter(port_dict)
        lines += [_text(ovs_lib, kw) for kw in _flows_of(br)]
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--groups", type=Path)
    ap.add_argument("--ports", type=Path)
    ap.add_argument("-o", "--out", type=Path)
    ap.add_argument("--no-prelude", action="store_true", help="only the firewall's flows")
    args = ap.parse_args()
    try:
        import neutron
    except ImportError:
        print("neutron_flows: needs Neutron (pip install neutron)", file=sys.stderr)
        return 2
    groups = json.loads(args.groups.read_text()) if args.groups else EXAMPLE_GROUPS
    ports = json.loads(args.ports.read_text()) if args.ports else EXAMPLE_PORTS
    try:
        from importlib.metadata import version as dist_version

        version = dist_version("neutron")
    except Exception:  # a source tree without metadata
        version = getattr(neutron, "__version__", None) or "installed"
    text = f"# the flows of Neutron ({version})'s OVS firewall driver\n"
    lines = ([] if args.no_prelude else agent_prelude()) + neutron_flows(groups, ports)
    text += "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
