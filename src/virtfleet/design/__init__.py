"""Policy: what a VM request becomes (sizes, devices, defaults), kept apart from the XML models."""
