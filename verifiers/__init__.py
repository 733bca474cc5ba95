"""Reusable checks for verification suites: HTTP smoke, locust load + thresholds, Prometheus SLOs, comparison.

Import the module you need (`from verifiers.load import run_load`). This package imports nothing on
purpose: the locust subprocess imports `verifiers.stats` and `verifiers.thresholds`, and must not pull in
httpx, requests or scipy on the way. Layer rule: `verifiers` imports only `core` and third-party
libraries, never pytest or `targets`, and never locust in the calling process (see `load.py`).
"""
