"""Tokens-per-watt routing (design §10.1.1): the router and its Envoy Endpoint Picker."""
