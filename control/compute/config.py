"""[compute]: the compute plugin's section of archipelago.toml."""

from __future__ import annotations

from dataclasses import dataclass, field

from archipelago.config import doc


@dataclass
class ComputeConfig:
    """[compute]: VMs (qemu) on archipelago volumes over NBD."""

    accel: str = field(default="auto", metadata=doc(
        "qemu accelerator; auto probes KVM with a tiny guest and falls back to TCG",
        choices=("auto", "kvm", "tcg")))
    accel_probe_timeout: float = field(default=5.0, metadata=doc(
        "seconds the KVM probe guest may take before KVM counts as unusable"))
    qemu: str = field(default="qemu-system-x86_64", metadata=doc("qemu system emulator binary"))
    stop_timeout: float = field(default=30.0, metadata=doc(
        "seconds a guest gets to obey the ACPI power button before a hard stop"))
    reconnect_delay: int = field(default=30, metadata=doc(
        "seconds qemu holds guest I/O while the NBD server (nbdkit, mapper) restarts"))
    kernel_args: str = field(default="console=ttyS0 panic=-1", metadata=doc(
        "kernel command line prefix of servers booted with -kernel (images with kernel_id)"))
    max_nics: int = field(default=4, metadata=doc(
        "most NICs (ports) one server may have; one more is refused as over quota"))
    public_nat: bool = field(default=False, metadata=doc(
        "give the public network a way out: a veth to the host and nftables masquerade (it "
        "turns on the host's ip_forward; off on test machines)"))
    public_uplink: str = field(default="10.254.0.0/30", metadata=doc(
        "IPv4 /30 of the veth between the instance's network namespace and the host "
        "(used when public_nat is on)"))
