"""releasegate: release verification as a test run (`pytest --release VERSION`).

One import name for everything installed: `releasegate.core`, `.plugins`, `.verifiers`, `.targets`,
`.demo`, and the Helm charts as package data under `releasegate/charts`. In the repository those folders
stay at the top level (the layout the README shows); `releasegate/` holds symbolic links to them, so the
checkout and an installed wheel import the same names.
"""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("releasegate")
except metadata.PackageNotFoundError:  # a checkout that was never installed
    __version__ = "0+unknown"
