"""Measurements from the outside world behind small Protocols.

Prometheus (Kepler, DCGM, vLLM), carbon-intensity providers, NVML and replayed traces.
"""
