"""Compute networks (Cyclades): private Ethernets and a public NAT'd one, as Linux bridges
in the instance's network namespace, DHCP by dnsmasq, per-NIC firewall profiles (nftables).

model (records, validation, address plan), store (SQL), host (the kernel side: namespace,
bridges, taps, dnsmasq, nftables), service (what the API and servers call), api, cli.
"""
