"""Placement and capacity planning: where each VM goes, and how much estate a workload needs.

Pure code: no libvirt, no database. Callers feed it host facts (from the store, a live fan-out,
or a plan) and get placements, explanations and capacity figures back.
"""
