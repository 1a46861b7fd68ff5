"""Pure decision functions: `(observation, spec, now) -> plan`.

The live controller and the twin call exactly these functions, so what `climatik simulate`
shows is what the controller does. No I/O, no clock, no logging.
"""
