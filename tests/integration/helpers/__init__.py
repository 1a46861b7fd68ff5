"""What the integration tests share: local servers playing Prometheus and the carbon APIs, the
workloads they create, polling, service accounts, the k3s path and the probe controller."""
