"""The names of the files a local cluster keeps in its run directory.

A module of their own, so that a process which only talks to a running cluster (the release's pytest process,
the operator commands) finds them without importing the cluster's server side (uvicorn, Starlette, the
router), which costs a few tenths of a second at every start.
"""

from __future__ import annotations

STATE_FILE = "state.json"  # written by the cluster process only; everyone else reads it
ADMIN_TOKEN_FILE = "admin-token"  # the admin API's bearer token, mode 0600
CONFIG_FILE = "cluster-config.json"  # the validated config the starter hands to the cluster process
