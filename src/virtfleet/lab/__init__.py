"""The local lab: real libvirtd hypervisors in network namespaces, tiny guests, simulated fleets.

Entry point: virtfleet.lab.lab.Lab (and `virtfleet lab ...`, see docs/lab.md). Modules:
names (what a lab's name decides), netns (bridge, namespaces, veths), daemon (private config,
start, wait), nsboot (runs inside the namespaces), procs (finding and ending processes),
state (lab.json), guest/guests (the tiny guest and putting it on hosts), simulate (node files).
"""
