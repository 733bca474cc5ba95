"""Fixtures of the framework's own tests."""

import os

from tests.local_cluster import DEMO_SEED

pytest_plugins = ["pytester", "tests.fakekube.fixtures"]

# Seeds every demo pod the tests start, however it is started (local target, kube_cluster, the CLI, a
# pytester run): the pods inherit the environment. See DEMO_SEED for what the tests rely on.
os.environ["RELEASEGATE_DEMO_SEED"] = str(DEMO_SEED)
