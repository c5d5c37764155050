"""`virtfleet lab ...`: real libvirtd hypervisors on this machine, tiny guests, simulated fleets.

Progress goes to stderr; stdout carries the result (for `up` and `simulate`, just the fleet
file's path, so `fleet=$(virtfleet lab up --hosts 3)` works in scripts).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from virtfleet.cli.fields import options_named
from virtfleet.cli.options import Json
from virtfleet.cli.output import emit, emit_json, table
from virtfleet.errors import InvalidInput
from virtfleet.lab.names import DEFAULT_LAB

# lab.lab and lab.simulate pull in the fleet-file models; they are imported by the commands
# that use them so that `virtfleet list` does not pay for them.

app = typer.Typer(no_args_is_help=True, help="A local lab of real libvirtd hypervisors.")

Name = Annotated[str, typer.Option(
    "--name", help="Lab name: picks its subnet 10.250.K.0/24, its namespaces and state dir.")]


def _say(message: str) -> None:
    sys.stderr.write(f"virtfleet: {message}\n")


@app.command("up")
def up(
    hosts: Annotated[int, typer.Option("--hosts", help="Number of hypervisors (1-200).")] = 3,
    pods: Annotated[int, typer.Option("--pods", help="Pods to spread them over.")] = 1,
    name: Name = DEFAULT_LAB,
    transport: Annotated[str, typer.Option(
        "--transport", help="How the hypervisors are reached: tcp (no auth, labs only; the "
        "fastest), ssh (each runs its own sshd) or tls (certificates from a lab CA).")] = "tcp",
    bmc: Annotated[bool, typer.Option(
        "--bmc", help="A simulated BMC (ipmi_sim) per hypervisor, in the fleet file's bmc: "
        "blocks, for fencing (docs/ha.md).")] = False,
    leases: Annotated[bool, typer.Option(
        "--leases", help="libvirt's lock manager (virtlockd) with each pod's disk leases "
        "beside its shared directory.")] = False,
) -> None:
    """Start HOSTS real libvirtd hypervisors, each in its own namespaces; print the fleet file.

    Leftovers of an earlier lab of the same name (even one whose maker was killed) are cleared
    first. With --transport ssh or tls, point VIRTFLEET_TRANSPORT_DIR at the lab's client
    directory (printed on stderr) and pin the ssh host keys with `apply --accept-new`.
    """
    from virtfleet.lab.bmc import LabBmcs
    from virtfleet.lab.lab import Lab

    lab = Lab(name)
    with options_named({"transport": "--transport"}):
        st = lab.up(hosts=hosts, pods=pods, progress=_say, transport=transport, leases=leases)
    if bmc:
        try:
            started = LabBmcs(lab).start()
        except BaseException:
            lab.down()  # no half-made lab: one asked for with BMCs has them
            raise
        for b in started:
            _say(f"{b.host}: BMC at {b.address}:{b.port}/udp (ipmi_sim pid {b.pid})")
    emit(f"{st.fleet_file}\n")


@app.command("down")
def down(name: Name = DEFAULT_LAB) -> None:
    """Stop every daemon and guest of the lab, remove its namespaces, interfaces and state."""
    from virtfleet.lab.lab import Lab

    cleared = Lab(name).down()
    _say(f"lab {name} down" + (f": removed {cleared.describe()}" if cleared.anything
                               else ": nothing was running"))


@app.command("status")
def status(name: Name = DEFAULT_LAB, json_out: Json = False) -> None:
    """Each lab hypervisor: address, URI, libvirtd pid, whether it answers, its domains."""
    from virtfleet.lab.lab import Lab

    lab = Lab(name)
    st = lab.require_state()
    rows = lab.status()
    if json_out:
        emit_json({"name": st.name, "subnet": st.subnet, "state_dir": st.state_dir,
                   "fleet_file": st.fleet_file, "transport": st.transport,
                   "client_dir": st.client_dir, "hosts": [r.as_json() for r in rows]})
        return

    def state_word(alive: bool, stopped: bool, answering: bool) -> str:
        if answering:
            return "running"
        if stopped:
            return "stopped"
        return "not answering" if alive else "dead"

    emit(table(
        ["Name", "Pod", "Address", "URI", "PID", "State", "Domains"],
        [[r.name, r.pod or "-", r.address, r.uri, r.pid,
          state_word(r.alive, r.stopped, r.answering), r.domains] for r in rows],
    ))
    if st.fleet_file:
        emit(f"\nfleet file: {st.fleet_file}\n")
    if st.client_dir:
        emit(f"transport: qemu+{st.transport}; VIRTFLEET_TRANSPORT_DIR={st.client_dir}\n")


@app.command("guests")
def guests(
    per_host: Annotated[int, typer.Option(
        "--per-host", help="Tiny guests each hypervisor should run (0 removes them).")],
    name: Name = DEFAULT_LAB,
    wait: Annotated[bool, typer.Option(
        "--wait/--no-wait", help="Wait until each guest's console shows it booted.")] = True,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for boots.")] = 120,
    json_out: Json = False,
) -> None:
    """Run tiny real QEMU guests (cloud kernel + busybox initramfs) on every lab hypervisor."""
    from virtfleet.lab.lab import Lab

    results = Lab(name).guests(per_host, wait=wait, timeout=timeout, progress=_say)
    if json_out:
        emit_json([r.as_json() for r in results])
        return
    emit(table(
        ["Host", "Guest", "Boot", "Console log"],
        [[r.host, r.name,
          f"{r.boot_seconds:.1f}s" if r.boot_seconds is not None
          else ("running" if not r.started else "-"),
          r.console_log] for r in results],
    ))


@app.command("image")
def image(json_out: Json = False) -> None:
    """The tiny guest's kernel, initramfs and root disk, built once and cached: what `vm create`
    needs on the lab (the disk goes into a pool with `vol upload`)."""
    from virtfleet.lab import guest

    images = guest.ensure_images(_say)
    paths = {"kernel": str(images.kernel), "initrd": str(images.initrd),
             "disk": str(guest.root_disk(_say))}
    if json_out:
        emit_json({**paths, "kernel_package": images.version})
        return
    emit("".join(f"{key:<7} {path}\n" for key, path in paths.items()))


@app.command("simulate")
def simulate(
    hypervisors: Annotated[int | None, typer.Option(
        "--hypervisors", help="Simulated hypervisors (default: the reference estate, 1,500).",
        show_default=False)] = None,
    vms_per_host: Annotated[int | None, typer.Option(
        "--vms-per-host", help="VMs on each (default 10).", show_default=False)] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Directory for node files and fleet.yaml (default: the lab's sim dir).",
        show_default=False)] = None,
    name: Name = DEFAULT_LAB,
    daemons: Annotated[int | None, typer.Option(
        "--daemons", help="libvirtd daemons serving them (default: one per 100 hypervisors, "
        "at most 15).", show_default=False)] = None,
    local: Annotated[bool, typer.Option(
        "--local", help="test:/// URIs for the in-process driver: no daemon, no root.")] = False,
) -> None:
    """Write libvirt test-driver node files for a simulated fleet and a fleet file for them.

    With no sizes: 3 sites (oregon, texas, virginia) x 5 pods x 100 hypervisors x 10 VMs.
    """
    from virtfleet.lab.lab import Lab
    from virtfleet.lab.simulate import SimSpec

    if hypervisors is None and vms_per_host is None:
        spec = SimSpec.reference()
    elif hypervisors is None:
        raise InvalidInput("hypervisors", "give --hypervisors with --vms-per-host")
    else:
        spec = SimSpec.custom(hypervisors, 10 if vms_per_host is None else vms_per_host)
    if local and daemons is not None:
        raise InvalidInput("daemons", "--local uses no daemon")
    _sim, fleet = Lab(name).simulate(spec, out=out, local=local, daemons=daemons, progress=_say)
    emit(f"{fleet}\n")
