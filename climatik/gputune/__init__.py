"""The GPU clock-tuning Job (`climatik gpu-tune`): sweep, choose, apply or recommend, restore.

It runs on one node, in the controller's image, started by the GPU-frequency reconciler.
"""
