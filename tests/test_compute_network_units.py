"""Units of compute networks: subnet and address checks, the address plan (Hypothesis),
and the nftables script (checked by nft itself when it is installed)."""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archipelago.errors import InvalidArgument, QuotaExceeded
from control.compute.network.firewall import ruleset
from control.compute.network.model import (
    Network,
    Port,
    check_cidr,
    check_fixed,
    check_profile,
    free_address,
    new_mac,
)


def _net(nid: int = 1, cidr: str = "10.0.0.0/24", public: bool = False) -> Network:
    return Network(nid, f"n{nid}", "u", cidr, str(next(ipaddress.IPv4Network(cidr).hosts())),
                   public, 0.0)


def _port(pid: int, nid: int, profile: str) -> Port:
    return Port(pid, nid, "u", "s", new_mac(), f"10.0.0.{pid + 1}", profile, 0.0)


@pytest.mark.parametrize("bad", ["10.0.0.1/24", "10.0.0.0/8", "10.0.0.0/30", "::1/64", "x", None])
def test_bad_subnets_are_refused(bad: object) -> None:
    with pytest.raises(InvalidArgument):
        check_cidr(bad)


def test_profiles_and_fixed_addresses() -> None:
    assert check_profile("protected") == "PROTECTED"
    with pytest.raises(InvalidArgument):
        check_profile("OPEN")
    n = _net()
    assert check_fixed(n, "10.0.0.7", set()) == "10.0.0.7"
    for bad in ("10.0.0.1", "10.0.0.0", "10.0.0.255", "10.0.1.7", "nope"):
        with pytest.raises(InvalidArgument):
            check_fixed(n, bad, set())
    with pytest.raises(InvalidArgument, match="twice"):
        check_fixed(n, "10.0.0.7", {"10.0.0.7"})
    mac = new_mac()
    assert int(mac[:2], 16) & 0b11 == 0b10 and len(mac.split(":")) == 6  # local, unicast


@settings(max_examples=200, deadline=None)
@given(prefix=st.integers(24, 29), used_idx=st.sets(st.integers(0, 255), max_size=300))
def test_free_address_is_the_lowest_free_host(prefix: int, used_idx: set[int]) -> None:
    net = ipaddress.IPv4Network(f"10.1.2.0/{prefix}")
    hosts = [str(h) for h in net.hosts()]
    gateway = hosts[0]
    used = {hosts[i] for i in used_idx if i < len(hosts)}
    free = [h for h in hosts if h != gateway and h not in used]
    if not free:
        with pytest.raises(QuotaExceeded):
            free_address(str(net), gateway, used)
        return
    assert free_address(str(net), gateway, used) == free[0]


def test_ruleset_marks_profiles_keeps_bridges_apart_and_nats_only_public() -> None:
    nets = [_net(1), _net(2, "10.0.0.0/24"), _net(3, "192.168.9.0/24", public=True)]
    ports = [_port(1, 1, "ENABLED"), _port(2, 1, "PROTECTED"), _port(3, 2, "DISABLED")]
    text = ruleset(nets, ports)
    assert 'oifname "atp1" meta mark set 1' in text and 'oifname "atp2" meta mark set 2' in text
    assert "atp3" not in text  # DISABLED: no rule at all
    for b in ("abr1", "abr2", "abr3"):
        assert f'iifname "{b}" oifname "{b}" accept' in text
    assert 'iifname "abr1" oifname "abr2"' not in text and "masquerade" not in text
    nat = ruleset(nets, ports, uplink="aup0")
    assert 'oifname "aup0" masquerade' in nat and 'iifname "abr3" oifname "aup0" accept' in nat
    assert 'iifname "abr1" oifname "aup0"' not in nat  # private networks never get out


NFT = shutil.which("nft") or ("/usr/sbin/nft" if os.path.exists("/usr/sbin/nft") else None)


@pytest.mark.skipif(NFT is None, reason="nft is not installed (bash scripts/install.sh)")
def test_ruleset_is_valid_nft() -> None:
    if os.geteuid() != 0:
        pytest.skip("nft --check needs root")
    nets = [_net(1), _net(3, "192.168.9.0/24", public=True)]
    text = ruleset(nets, [_port(1, 1, "ENABLED"), _port(2, 1, "PROTECTED")], uplink="aup0")
    r = subprocess.run([str(NFT), "--check", "-f", "-"], input=text, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
