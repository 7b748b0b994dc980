"""Seeded random security groups and ports in Neutron's API JSON, for the sg tests' data.

    python3 tools/sg_generate.py --seed 3 --out tests/data/sg/random-3 [--groups 3 --ports 4]

writes ``groups.json`` and ``ports.json`` (and ``groups-v2.json``: the same groups with one
rule removed, for the rule-change tests) into ``--out``. Then
``tools/neutron_flows.py`` makes ``neutron.flows`` (and ``neutron-v2.flows``) from them.

What is drawn: rules over both directions and ethertypes; protocols tcp, udp, sctp, icmp,
ipv6-icmp (also the legacy IPv6 spellings icmp/icmpv6/1), numbers as ints and strings, and
any; port ranges (one port, ranges that need several masks, the full range) and ICMP
type/code; remote IP prefixes (IPv4/IPv6, 0.0.0.0/0, prefixes with host bits), remote groups
(the group itself and the other groups) and an address group; some groups stateless (a port
never mixes the two, as the API requires). Ports: two networks (local VLANs 101 and 102) with
several ports each, fixed IPv4 and sometimes IPv6 addresses, allowed address pairs (an
address, a CIDR, with and without their own MAC), one port without port security.

Design: a pure function of the seed (``random.Random(seed)``); every object is one the API
accepts (neutron_flows.py runs the API's own checks on the rules).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

VLANS = (101, 102)


def _subnet(vlan: int, v6: bool) -> str:
    return f"fd00:{vlan:x}::" if v6 else f"10.{vlan - 100}.0."


def _prefix(rng: random.Random, v6: bool) -> str:
    if v6:
        return rng.choice(["::/0", "fd00:65::/64", "fd00:66::/32", "fd00:65::5/120",
                           "2001:db8::/48"])  # fmt: skip
    return rng.choice(["0.0.0.0/0", "10.1.0.0/24", "10.2.0.0/16", "10.1.0.7/28", "10.0.0.0/8",
                       "192.0.2.1/32", "10.2.0.12/30"])  # fmt: skip


def _ports_of(rng: random.Random, rule: dict, proto) -> None:
    if proto in ("tcp", "udp", "sctp", "6", 17):
        kind = rng.choice(["one", "range", "range", "full", "none"])
        if kind == "one":
            rule["port_range_min"] = rule["port_range_max"] = rng.choice([22, 53, 80, 443, 5000])
        elif kind == "range":
            lo = rng.choice([1, 20, 80, 1000, 1024, 8000, 32768])
            rule["port_range_min"], rule["port_range_max"] = lo, lo + rng.choice([1, 9, 100, 999])
        elif kind == "full":
            rule["port_range_min"], rule["port_range_max"] = 1, 65535
    elif proto in ("icmp", "ipv6-icmp", "icmpv6", "1", 58):
        kind = rng.choice(["none", "type", "type-code"])
        if kind != "none":
            rule["port_range_min"] = rng.choice([0, 3, 8, 128, 129])
        if kind == "type-code":
            rule["port_range_max"] = rng.choice([0, 1, 4])


def _rule(rng: random.Random, group_ids: list[str], self_id: str, ag_id: str) -> dict:
    v6 = rng.random() < 0.35
    rule: dict = {"direction": rng.choice(["ingress", "egress"]),
                  "ethertype": "IPv6" if v6 else "IPv4"}  # fmt: skip
    protos = ["tcp", "tcp", "udp", "sctp", "6", 17, "47", None, None]
    protos += ["ipv6-icmp", "icmp", "icmpv6", "1"] if v6 else ["icmp", "icmp"]
    proto = rng.choice(protos)
    if proto is not None:
        rule["protocol"] = proto
    _ports_of(rng, rule, proto)
    remote = rng.random()
    if remote < 0.25:
        rule["remote_ip_prefix"] = _prefix(rng, v6)
    elif remote < 0.6:
        rule["remote_group_id"] = rng.choice(group_ids + [self_id])
    elif remote < 0.67:
        rule["remote_address_group_id"] = ag_id
    return rule


def _key(rule: dict) -> str:
    return json.dumps(rule, sort_keys=True)


def generate(seed: int, n_groups: int = 3, n_ports: int = 3) -> tuple[dict, dict, dict]:
    """(groups, ports, groups-v2) of one seed."""
    rng = random.Random(seed)
    ids = [f"sg-{seed}-{i}" for i in range(n_groups)]
    ag_id = f"ag-{seed}"
    stateless = {i for i in ids[1:] if rng.random() < 0.3}
    groups = []
    for sg_id in ids:
        rules: dict[str, dict] = {}
        for _ in range(rng.randint(2, 5)):
            rule = _rule(rng, [i for i in ids if i != sg_id], sg_id, ag_id)
            rules.setdefault(_key(rule), rule)
        groups.append({"id": sg_id, "stateful": sg_id not in stateless,
                       "security_group_rules": list(rules.values())})  # fmt: skip
    address_groups = [{"id": ag_id, "addresses": ["10.1.0.0/28", "10.2.0.3/32", "fd00:65::/124"]}]
    ports = []
    for i in range(n_ports):
        vlan = VLANS[i % 2] if i < n_ports - 1 or rng.random() < 0.5 else VLANS[0]
        host = 10 + i
        port: dict = {"id": f"port-{seed}-{i}", "mac_address": f"fa:16:3e:{seed % 256:02x}:00:{i:02x}",
                      "fixed_ips": [{"ip_address": _subnet(vlan, False) + str(host)}],
                      "ofport": 10 + i, "local_vlan": vlan}  # fmt: skip
        if rng.random() < 0.5:
            port["fixed_ips"].append({"ip_address": _subnet(vlan, True) + f"{host:x}"})
        if i == n_ports - 1 and rng.random() < 0.5:
            port.update(security_groups=[], port_security_enabled=False)
        else:
            kind = stateless if rng.random() < 0.4 and stateless else set(ids) - stateless
            port["security_groups"] = rng.sample(sorted(kind), rng.randint(1, min(2, len(kind))))
            pairs = []
            if rng.random() < 0.4:
                pairs.append({"ip_address": _subnet(vlan, False) + str(100 + i)})
            if rng.random() < 0.3:
                pairs.append({"ip_address": _subnet(vlan, False) + "200/30",
                              "mac_address": f"fa:16:3e:ff:00:{i:02x}"})  # fmt: skip
            if rng.random() < 0.2 and len(port["fixed_ips"]) > 1:
                pairs.append({"ip_address": _subnet(vlan, True) + "100/126"})
            port["allowed_address_pairs"] = pairs
        ports.append(port)
    v2 = json.loads(json.dumps({"security_groups": groups, "address_groups": address_groups}))
    used = [g for g in v2["security_groups"]
            if g["security_group_rules"] and any(g["id"] in p.get("security_groups", [])
                                                 for p in ports)]  # fmt: skip
    if used:
        target = rng.choice(used)["security_group_rules"]
        target.pop(rng.randrange(len(target)))
    return ({"security_groups": groups, "address_groups": address_groups}, {"ports": ports}, v2)


def write_case(out: Path, groups: dict, ports: dict, v2: dict | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "groups.json").write_text(json.dumps(groups, indent=1) + "\n")
    (out / "ports.json").write_text(json.dumps(ports, indent=1) + "\n")
    if v2 is not None:
        (out / "groups-v2.json").write_text(json.dumps(v2, indent=1) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--groups", type=int, default=3)
    ap.add_argument("--ports", type=int, default=3)
    ap.add_argument("--no-v2", action="store_true", help="no groups-v2.json")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    groups, ports, v2 = generate(args.seed, args.groups, args.ports)
    write_case(args.out, groups, ports, None if args.no_v2 else v2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
