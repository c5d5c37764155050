"""Bare-metal provisioning: everything a hypervisor needs to network-boot and install.

One module per output kind (dhcpd, kea, pxelinux, ipxe, grub, kickstart, haproxy), each a pure
function of the validated fleet file; `render` puts them together into a tree on disk. A
provisioning server can call the per-host generators directly (`scopes.boot_hosts`, then e.g.
`ipxe.host_script` or `kickstart.hypervisor_kickstart`).
"""
