"""The fleet services: one module per capability, each taking a typed request and returning
typed per-host or per-VM results. The CLI, the controller and the API call these; only they
and the layers below (provision/, virt/, inventory/, placement/) know how the work is done.
"""
