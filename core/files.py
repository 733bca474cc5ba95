"""Writing a file that other processes read: whole or not at all."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomically(path: Path, text: str, *, mode: int = 0o600) -> None:
    """Write `text` to `path` so that a reader sees the old file or the new one, never half of one.

    A uniquely named temporary file in the same folder (several writers may race: xdist workers, the
    cluster process), created private (mode 0600, as for a kubeconfig; `mode` for files meant to be shared,
    such as reports), then renamed into place. On a full disk (ENOSPC) or any other failure the temporary
    file is removed, giving its space back, the old file stays as it was, and the OSError is raised.
    """
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if mode != 0o600:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
