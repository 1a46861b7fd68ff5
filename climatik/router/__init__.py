"""Tokens-per-watt routing (design §10.1.1), beside the controller (`climatik.runtime`):
`climatik router`, an OpenAI-compatible reverse proxy that sends each request to the replica
making the most tokens per joule, and its Envoy Endpoint Picker (`extproc`)."""
