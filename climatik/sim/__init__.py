"""The datacenter twin behind `climatik simulate`.

It imports only domain, policies and replayed sources, so it runs the controller's own
decision code over simulated days.
"""
