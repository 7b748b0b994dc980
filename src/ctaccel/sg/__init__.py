"""Security groups: OpenStack Neutron's API objects compiled to OpenFlow rules.

What: ``model`` loads and validates security groups, address groups and ports written in
Neutron's API JSON (plus the two values the OVS agent learns locally, ``ofport`` and
``local_vlan``); ``compile`` turns them into the ``ovs-ofctl`` flows whose behaviour is that of
the flows Neutron's OVS firewall driver installs; ``sg_cli`` is ``ctaccel sg compile``.

Design: plain Python, no datapath dependency: the output is text a rule file loader reads.

Invariants: a file that fails validation is rejected whole (one ``ConfigError``); the compiler
only ever sees validated, normalized objects.
"""

from ctaccel.sg.compile import compile_flows
from ctaccel.sg.model import (
    AddressGroup,
    Groups,
    Port,
    SecurityGroup,
    SgRule,
    load_groups,
    load_ports,
    parse_groups,
    parse_ports,
)

__all__ = [
    "AddressGroup",
    "Groups",
    "Port",
    "SecurityGroup",
    "SgRule",
    "compile_flows",
    "load_groups",
    "load_ports",
    "parse_groups",
    "parse_ports",
]
