"""Root conftest. The releasegate plugin itself is loaded by pytest from its `pytest11` entry point (see
pyproject.toml), here as in any repository that installs releasegate, and stays inert without `--release`."""
