"""High availability: fencing hypervisors through their BMCs (and, later, failure detection,
restart of HA VMs and reconciliation; see issue 17 and docs/ha.md).

Modules: credentials (a BMC's password, read from the file or variable the fleet file names),
fence (power status/off/on through ClusterLabs' fence agents, typed results), ipmitool_env
(the `virtfleet-ipmitool` shim that keeps the password off ipmitool's command line).
"""
