"""The releasegate pytest plugin: `pytest --release VERSION` turns a test run into a release.

`plugins.release` is loaded by the root conftest.py; it only adds options until `--release` is given.
"""
