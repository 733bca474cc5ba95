"""Shared types of releasegate: endpoints, workloads, traffic, release state, config, errors.

`core` imports nothing from the other layers; `plugins`, `verifiers` and `targets` all speak its types.
"""
