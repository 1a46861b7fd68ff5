"""`climatik demo`: the whole loop on the dev cluster, in one command.

The dev cluster with KEDA, the world playing the datacenter, a Prometheus scraping it, one
Deployment and ScaledObject per scenario service, a PowerCappingConfig, and the controller; it
prints progress while the scenario runs compressed in time, then takes everything down. The
world and the controller run as their own processes (`climatik world`, `climatik run`), as they
would beside a real cluster, so this package imports neither.
"""
