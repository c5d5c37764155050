"""The fleet services: one module per capability, each taking a typed request and returning
typed per-host or per-VM results. The CLI, the controller and the API call these; only they
and the layers below (provision/, virt/, inventory/, placement/) know how the work is done.

migration.py: `vm migrate`, `host maintenance` and `host activate` (with movable.py, what a
VM needs from its new host; targets.py, where it goes; drain.py, many moves at once).
"""
