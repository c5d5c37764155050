"""How virtfleet reaches hypervisors over qemu+ssh and qemu+tls, and what it trusts there.

paths.py      the transport directory: known_hosts, ssh config, client key, TLS PKI
sshconfig.py  the ssh client configuration virtfleet gives ssh (and only it)
connect.py    the libvirt URI actually opened: transport parameters virtfleet adds itself
hostkeys.py   known_hosts entries, ssh-keyscan, fingerprints
pinning.py    the service `host add`, `apply` and `hostkey pin` call: show and pin host keys
diagnose.py   libvirt's long, vague transport failures as one clear line

Nothing here imports libvirt; virt/host.py calls connect.py and diagnose.py.
"""
