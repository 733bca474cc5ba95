"""The operator commands: `releasegate status|rollback|switch|promote|abort` (also `python -m releasegate`).

For the team's scripts (deploy-green, switch-to-green, rollback-to-blue) and for a person on call: the same
target code as the plugin (plugins/targets.py, core/recovery.py), no pytest, no Prometheus, no suites.
"""
