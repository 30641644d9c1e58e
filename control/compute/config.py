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
