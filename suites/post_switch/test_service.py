"""Post-switch: users now reach the new version through the public service, and it holds up."""

from __future__ import annotations

import httpx

from releasegate.core.types import Endpoint, Role
from releasegate.plugins.fixtures import LoadRunner, ReleaseInfo


def test_service_serves_the_new_version(service: Endpoint, release: ReleaseInfo) -> None:
    with httpx.Client(base_url=service.url, timeout=5, trust_env=False) as client:
        served = {client.get("/version").headers.get(release.version_header) for _ in range(20)}
    assert served == {release.version}, f"the service answered as {sorted(map(str, served))}"


def test_service_holds_up_under_load(load: LoadRunner, release: ReleaseInfo) -> None:
    settings = release.vars
    promised = tuple(settings.get("slos", ("p(95) < 300ms", "error_rate < 1%")))  # as suites/load promises
    result = load.run(
        "../load/locustfile.py",
        target=Role.SERVICE,
        users=int(settings.get("post_switch_users", 10)),
        duration_s=float(settings.get("post_switch_duration_s", 10)),
        min_requests=int(settings.get("post_switch_min_requests", 100)),
        checks=promised,
        max_duration_s=float(settings.get("post_switch_max_duration_s", 60)),
    )
    result.check(*promised)
