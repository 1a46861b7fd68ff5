"""`climatik router`: an OpenAI-compatible reverse proxy that sends each request to the replica
making the most tokens per joule (design §10.1.1), beside the controller (`climatik.runtime`)."""
