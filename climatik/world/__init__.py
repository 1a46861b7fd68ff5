"""The world: a process that plays the datacenter for the pods that really exist.

It serves the metrics a real site would have (Kepler, DCGM, vLLM, IPMI inlet temperatures) from
one HTTP scrape target, either as values set through its control endpoints (tests) or, driven,
computed with the twin's physics from the cluster's actual pods. Only the command line imports it.
"""
