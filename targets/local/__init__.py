"""The embedded local target: pods are processes on loopback, a router is the Service, Prometheus is real."""
