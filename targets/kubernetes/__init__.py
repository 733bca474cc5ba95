"""The kubernetes target: blue-green on a cluster through the official `kubernetes` Python client."""
