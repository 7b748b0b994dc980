"""The flows OpenStack Neutron's OVS firewall driver installs, for security groups and ports
given in Neutron's API JSON: the reference ``ctaccel sg compile`` is checked against.

    pip install neutron            # optional: not needed by users, tests or CI
    python3 tools/neutron_flows.py --groups GROUPS.json --ports PORTS.json [-o OUT.flows]

GROUPS.json: ``{"security_groups": [{"id", "stateful", "security_group_rules": [{"direction",
"ethertype", "protocol", "port_range_min", "port_range_max", "remote_ip_prefix",
"remote_group_id", "remote_address_group_id"}]}]}``; PORTS.json: ``{"ports": [{"id",
"mac_address", "fixed_ips": [{"ip_address"}], "allowed_address_pairs", "security_groups",
"port_security_enabled", "ofport", "local_vlan"}]}`` (the last two are what the agent learns
from OVSDB). Without ``--groups``/``--ports``, a built-in example (one port, a five-rule group).

How: Neutron's own driver (``neutron.agent.linux.openvswitch_firewall``) runs against a mocked
bridge, the way its unit tests run it; every ``add_flow`` it makes is written in ovs-ofctl
syntax by Neutron's own formatter (``ovs_lib._build_flow_expr_str``), driver-wide flows first,
then each port's. Remote groups get their members from the ports' fixed IPs. Nothing of
Neutron's is copied here: it is imported from the installed package.
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


def neutron_flows(groups: dict, ports: dict) -> list[str]:
    """Every flow the driver adds for ``groups`` and ``ports``, in ovs-ofctl syntax."""
    fw, ovs_lib = _driver()
    br = fw.int_br
    by_device = {p["id"]: p for p in ports["ports"]}
    br.br.get_vif_port_by_id.side_effect = lambda device: _VifPort(by_device[device])
    lines = [ovs_lib._build_flow_expr_str(kw, "add", False) for kw in _flows_of(br)]
    for sg in groups["security_groups"]:
        rules = [{k: r[k] for k in RULE_KEYS if r.get(k) is not None}
                 for r in sg.get("security_group_rules", [])]  # fmt: skip
        fw.update_security_group_rules(sg["id"], rules)
        members: dict[str, list[tuple[str, str]]] = {"IPv4": [], "IPv6": []}
        for p in ports["ports"]:  # (address, MAC) pairs, as the agent receives them
            if sg["id"] in p.get("security_groups", []):
                for ip in p.get("fixed_ips", []):
                    family = "IPv6" if ":" in ip["ip_address"] else "IPv4"
                    members[family].append((ip["ip_address"], p["mac_address"]))
        fw.update_security_group_members(sg["id"], members)
    for p in ports["ports"]:
        br.br.db_get_val.return_value = {"tag": int(p["local_vlan"]), "net_uuid": "net",
                                         "network_type": "vxlan", "physical_network": None,
                                         "segmentation_id": 100}  # fmt: skip
        port_dict = {"device": p["id"], "mac_address": p["mac_address"],
                     "fixed_ips": [ip["ip_address"] for ip in p.get("fixed_ips", [])],
                     "allowed_address_pairs": p.get("allowed_address_pairs", []),
                     "security_groups": p.get("security_groups", []),
                     "port_security_enabled": p.get("port_security_enabled", True)}  # fmt: skip
        fw.prepare_port_filter(port_dict)
        lines += [ovs_lib._build_flow_expr_str(kw, "add", False) for kw in _flows_of(br)]
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--groups", type=Path)
    ap.add_argument("--ports", type=Path)
    ap.add_argument("-o", "--out", type=Path)
    args = ap.parse_args()
    try:
        import neutron
    except ImportError:
        print("neutron_flows: needs Neutron (pip install neutron)", file=sys.stderr)
        return 2
    groups = json.loads(args.groups.read_text()) if args.groups else EXAMPLE_GROUPS
    ports = json.loads(args.ports.read_text()) if args.ports else EXAMPLE_PORTS
    version = getattr(neutron, "__version__", None) or "installed"
    text = f"# the flows of Neutron ({version})'s OVS firewall driver\n"
    text += "\n".join(neutron_flows(groups, ports)) + "\n"
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
