"""Fixtures of the framework's own tests."""

pytest_plugins = ["pytester", "tests.fakekube.fixtures"]
