"""Frozen value types shared by every layer: units, topology, observations, plans, decisions.

Nothing here performs I/O or reads a clock; every other package may import it.
"""
