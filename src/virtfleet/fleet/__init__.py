"""The fleet services: one module per capability, each taking a typed request and returning
typed per-host or per-VM results. The CLI, the controller and the API call these; only they
and the layers below (provision/, virt/, inventory/, placement/) know how the work is done.

scope.py: which hypervisors a verb runs on, and what each of them answered (shared by every
service). vms.py: VMs by name anywhere (lifecycle verbs, console, create, undefine, dominfo);
locate.py: finding a VM by name, the base of the VM services. snapshots.py: a VM's snapshots.
templates.py: sealed templates and their clones. hosts.py: the inventory's hypervisors and
their facts; queries.py: the fleet-wide questions behind them. operations.py: the journal and
cleaning up after interrupted operations. planning.py: headroom and placement on the live
fleet. overview.py: `list` and `sync`; observed.py: what a fleet-wide read saw, into the store.
migration.py: `vm migrate`, `host maintenance` and `host activate` (with movable.py, what a
VM needs from its new host; targets.py, where it goes; drain.py, many moves at once).

scope.py: which hypervisors a verb runs on, and what each of them answered (shared by the
network and storage services). networks.py: libvirt networks (virsh net-*); declared_networks.py:
the fleet file's networks onto its hypervisors (apply) and the network preflight. pools.py:
storage pools (virsh pool-*), each pod's shared pool, the storage preflight (storage_check.py);
podstorage.py: a pod's shared storage as pools, and whether a pool is shared. volumes.py:
volumes in one pool (virsh vol-*) and where a VM's disks live. images.py: local disk images
through qemu-img. netcfg.py: a hypervisor's own network files.
"""
