"""Root conftest: loads the releasegate plugin (inert unless `--release` is given)."""

pytest_plugins = ["plugins.release"]
