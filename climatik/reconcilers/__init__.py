"""One module per controller: power caps, rack placement, carbon and GPU frequency jobs.

Glue only: cache -> sources -> policy -> actuation -> status.
"""
