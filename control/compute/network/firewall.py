"""The namespace's nftables rules: isolation of networks and the per-NIC profiles.

Bridged IPv4/IPv6 goes through the inet hooks (bridge-nf-call-iptables in the namespace),
where conntrack works; this kernel has no bridge-family conntrack. A bridge-family chain
marks each frame by the NIC it leaves to (the mark is the profile); the inet forward chain
applies the profile with ``ct state``, then lets a frame through only when it stays on its
own bridge. Routed traffic between bridges or to the uplink is dropped, except the public
network's way out (masqueraded). The namespace itself answers only DHCP.
"""

from __future__ import annotations

from control.compute.network.model import DISABLED, ENABLED, PROTECTED, Network, Port

TABLE = "archip"
MARKS = {ENABLED: 1, PROTECTED: 2}


def ruleset(nets: list[Network], ports: list[Port], uplink: str | None = None) -> str:
    """The whole nft script (it replaces the tables atomically)."""
    marks = [f'    oifname "{p.tap}" meta mark set {MARKS[p.firewall]}'
             for p in ports if p.firewall != DISABLED and p.server_id]
    fwd = [
        # ND and DHCP keep working under every profile (they are not "inbound traffic")
        "    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert } accept",
        "    meta mark 1 ct state established,related accept",
        "    meta mark 1 icmp type echo-request accept",
        "    meta mark 1 icmpv6 type echo-request accept",
        "    meta mark 1 tcp dport 22 accept",
        "    meta mark 1 drop",
        "    meta mark 2 ct state established,related accept",
        "    meta mark 2 drop",
    ]
    fwd += [f'    iifname "{n.bridge}" oifname "{n.bridge}" accept' for n in nets]
    pub = [n for n in nets if n.public]
    if uplink and pub:
        for n in pub:
            fwd += [f'    iifname "{n.bridge}" oifname "{uplink}" accept',
                    f'    iifname "{uplink}" oifname "{n.bridge}" ct state established,related '
                    "accept"]
    out = [
        f"table bridge {TABLE}", f"delete table bridge {TABLE}", f"table bridge {TABLE} {{",
        "  chain nicmark {", "    type filter hook forward priority -200; policy accept;",
        *marks, "  }", "}",
        f"table inet {TABLE}", f"delete table inet {TABLE}", f"table inet {TABLE} {{",
        "  chain input {", "    type filter hook input priority 0; policy drop;",
        '    iifname "lo" accept', "    ct state established,related accept",
        "    udp dport 67 accept", "    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } "
        "accept", "  }",
        "  chain forward {", "    type filter hook forward priority 0; policy drop;", *fwd, "  }",
        "}",
    ]
    if uplink and pub:
        out += [f"table ip {TABLE}nat", f"delete table ip {TABLE}nat", f"table ip {TABLE}nat {{",
                "  chain post {", "    type nat hook postrouting priority 100; policy accept;",
                f'    oifname "{uplink}" masquerade', "  }", "}"]
    return "\n".join(out) + "\n"
