"""The datacenter twin behind `climatik simulate`.

It imports only domain and policies (the observation builder included), never an adapter,
so it runs the controller's own decision code over simulated days on what it could measure.
"""
