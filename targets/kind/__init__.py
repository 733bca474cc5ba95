"""The kind target: a kind cluster with the app image and the bluegreen-app chart, then `kubernetes`."""
