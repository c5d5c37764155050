"""virt-install's defaults for an OS variant: chipset, buses, models and the devices it adds.

Each rule follows virt-install (virtinst/guest.py `set_defaults` and devices/*.py, version
4.1 as Debian 12 ships it) and asks libosinfo (design/osinfo.py) what the guest OS drives, so
a VM made by `vm create` has what `virt-install --os-variant` would give the same guest. Where
virtfleet deliberately differs, the difference is listed in docs/vms.md and in the test that
compares the two (tests/unit/test_virt_install_compare.py).

virt-install also asks the host (domain capabilities) whether QEMU has virtio-gpu, qemu-xhci
and the q35 machine; every QEMU a fleet runs today (Debian 12's 7.2, RHEL 8's 6.2) has all
three, so these rules take them as given rather than asking each host.
"""

from __future__ import annotations

from collections.abc import Sequence

from virtfleet.design.osinfo import OSVariant
from virtfleet.errors import InvalidInput
from virtfleet.xml.domain import (
    Channel,
    Controller,
    Domain,
    Input,
    MemBalloon,
    RedirDev,
    Rng,
    Sound,
    Video,
)

# virt-install adds 14, not 16: QEMU 6.1 misbehaves with 15 or more (qemu issue 641). Spare
# PCIe root ports are what lets a disk or NIC be hot-plugged into a q35 guest later.
PCIE_ROOT_PORTS = 14
GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0"
SPICE_AGENT_CHANNEL = "com.redhat.spice.0"


def machine(os: OSVariant) -> str:
    """q35 for an OS that drives it (with virtio 1.0, if virtio at all); i440fx ('pc') for
    older or unknown ones. The host's libvirt expands either alias to its newest version."""
    return "q35" if os.q35 else "pc"


def disk_bus(os: OSVariant, requested: str | None) -> str:
    if requested is not None:
        return requested
    if os.virtio_disk:
        return "virtio"
    return "sata" if os.q35 else "ide"


def check_buses(os: OSVariant, buses: Sequence[tuple[str, str | None]]) -> None:
    """Refuse now what libvirt would refuse at define: q35 has no IDE controller. `buses`:
    each disk's request field and bus."""
    for field, bus in buses:
        if os.q35 and bus == "ide":
            raise InvalidInput(field, f"bus 'ide' does not exist on the q35 machine "
                               f"{os.short_id} gets; use sata or virtio")


def nic_model(os: OSVariant, requested: str | None) -> str:
    if requested is not None:
        return requested
    if os.virtio_net:
        return "virtio"
    return "e1000e" if os.q35 else "e1000"


def video_model(os: OSVariant, graphics: str) -> str:
    if os.virtio_gpu:
        return "virtio"
    if graphics == "spice":
        return "qxl"  # only better than VGA when paired with SPICE
    return "vga"


def set_platform(d: Domain, os: OSVariant, virt_type: str, graphics: str) -> None:
    """Chipset, features, CPU mode, clock and power management."""
    d.os.machine = machine(os)
    features = d.features
    features.acpi = True  # `vm shutdown` asks the guest to power off through ACPI
    features.apic = True
    if os.is_windows:  # Hyper-V enlightenments, as virt-install gives every Windows guest
        features.hyperv_relaxed = features.hyperv_vapic = features.hyperv_spinlocks = True
        features.hyperv_spinlock_retries = 8191
    if graphics == "spice":
        features.vmport = False  # VMware's port only fights SPICE's agent for the mouse
    if virt_type == "kvm":
        # host-model, not virt-install's host-passthrough: a pod's VMs restart and migrate on
        # other hypervisors of the pod, and libvirt can check a named model against each one.
        d.cpu_mode = "host-model"
    clock = d.clock
    clock.offset = os.clock_offset
    # -rtc driftfix=slew, -no-kvm-pit-reinjection, -no-hpet: Red Hat's QEMU advice that
    # virt-install follows (HPET only costs time); Windows also gets the Hyper-V clock.
    clock.rtc_tickpolicy = "catchup"
    clock.pit_tickpolicy = "delay"
    clock.hpet_present = False
    if os.is_windows:
        clock.hypervclock_present = True
    # An ACPI power-button press must power off, not suspend the guest.
    d.suspend_to_mem = d.suspend_to_disk = False


def _controller(kind: str, model: str | None = None, *, ports: int | None = None,
                startport: int | None = None) -> Controller:
    c = Controller()
    c.type = kind
    if model is not None:
        c.model = model
    if ports is not None:
        c.ports = ports
    if startport is not None:
        c.master_startport = startport
    return c


def add_devices(d: Domain, os: OSVariant, graphics: str, *, scsi_disks: bool) -> None:
    """The controllers and devices virt-install adds around the disks and NICs."""
    devices = d.devices
    if os.usb3:
        devices.controllers.append(_controller("usb", "qemu-xhci", ports=15))
    else:  # USB 2 companions, as QEMU's ich9 has them
        devices.controllers.append(_controller("usb", "ich9-ehci1"))
        for i in range(3):
            devices.controllers.append(_controller("usb", f"ich9-uhci{i + 1}", startport=2 * i))
    if scsi_disks and os.virtio_scsi:
        devices.controllers.append(_controller("scsi", "virtio-scsi"))
    if os.q35:
        devices.controllers.append(_controller("pci", "pcie-root"))
        for _ in range(PCIE_ROOT_PORTS):
            devices.controllers.append(_controller("pci", "pcie-root-port"))
    if os.virtio_serial:  # the guest agent: fsfreeze for snapshots, clean shutdown, addresses
        agent = Channel()
        agent.type, agent.source_mode = "unix", "bind"
        agent.target_type, agent.target_name = "virtio", GUEST_AGENT_CHANNEL
        devices.channels.append(agent)
    if graphics == "spice":
        vdagent = Channel()
        vdagent.type = "spicevmc"
        vdagent.target_type, vdagent.target_name = "virtio", SPICE_AGENT_CHANNEL
        devices.channels.append(vdagent)
    if graphics != "none":
        tablet = Input()  # absolute pointer: the mouse follows the viewer's, no grabbing
        tablet.type, tablet.bus = "tablet", "usb"
        devices.inputs.append(tablet)
        if graphics == "spice":
            sound = Sound()
            sound.model = "ich9" if os.q35 else "ich6"
            devices.sounds.append(sound)
        video = Video()
        video.model = video_model(os, graphics)
        devices.videos.append(video)
    if graphics == "spice":
        # Two, not four: four would fill the USB 2 ports passed-through devices need.
        for _ in range(2):
            redir = RedirDev()
            redir.bus, redir.type = "usb", "spicevmc"
            devices.redirdevs.append(redir)
    if os.virtio_balloon:
        balloon = MemBalloon()
        balloon.model = "virtio"
        devices.memballoons.append(balloon)
    if os.virtio_rng:
        rng = Rng()
        rng.model, rng.backend_model, rng.backend = "virtio", "random", "/dev/urandom"
        devices.rngs.append(rng)
