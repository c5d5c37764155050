"""A hypervisor's own network configuration, generated from its NIC layout.

The model is virtfleet.inventory.niclayout (it is part of the fleet file). One module per
output: ifcfg (RHEL/CentOS network-scripts, what EL6 and EL7 hosts read), keyfile
(NetworkManager .nmconnection files) and nmstate (YAML for nmstatectl). ifcfg and keyfile
also parse back into the model, so what was written can be checked against what was meant.
`render` puts them together per host.
"""
