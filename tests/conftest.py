"""Fixtures of the framework's own tests."""

import os
import signal
from collections.abc import Iterator

# httpx imports httpcore lazily, and pytester's in-process runs drop the modules they imported from
# sys.modules: an httpx error in this process after such a run would escape as a raw httpcore exception.
import httpcore  # noqa: F401
import pytest

from tests.local_cluster import DEMO_SEED
from tests.release_project import ReleaseProject

pytest_plugins = ["pytester", "tests.fakekube.fixtures"]

# Seeds every demo pod the tests start, however it is started (local target, kube_cluster, the CLI, a
# pytester run): the pods inherit the environment. See DEMO_SEED for what the tests rely on.
os.environ["RELEASEGATE_DEMO_SEED"] = str(DEMO_SEED)

# A command started in the background by a shell without job control (`cmd &` in a script, some CI
# runners) ignores SIGINT, and every process it starts inherits that: the tests that press Ctrl-C on a
# release would wait for an interrupt that never comes. The tests need the normal disposition; a handler
# (unlike SIG_IGN) is reset to the default in the processes they start.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Iterator[ReleaseProject]:
    """A release project in pytester's folder; a background local cluster it started is stopped at the end.
    Test files with a project of another kind (kubernetes, argo) define their own."""
    project = ReleaseProject(pytester, monkeypatch)
    try:
        yield project
    finally:
        project.stop_background_cluster()
