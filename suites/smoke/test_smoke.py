"""Smoke: the candidate answers on its own, as the version we are releasing, before it sees any user."""

from __future__ import annotations

import httpx
import pytest

from releasegate.core.types import Endpoint
from releasegate.plugins.fixtures import ReleaseInfo


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/version"])
def test_candidate_answers(http: httpx.Client, path: str) -> None:
    response = http.get(path)
    assert response.status_code == 200, f"GET {path} -> {response.status_code}: {response.text[:200]}"


def test_candidate_is_the_release_version(http: httpx.Client, release: ReleaseInfo) -> None:
    served = http.get("/version").headers.get(release.version_header)
    assert served == release.version, f"the candidate serves {served}, not {release.version}"


def test_items_and_checkout_work(http: httpx.Client) -> None:
    items = http.get("/api/items")
    assert items.status_code == 200 and items.json(), items.text[:200]
    order = http.post("/api/checkout", json={"item_id": items.json()[0]["id"], "quantity": 1})
    assert order.status_code == 200, order.text[:200]


def test_users_still_reach_the_previous_version(service: Endpoint, release: ReleaseInfo) -> None:
    # Provisioning must not have moved traffic: the public service still serves the live version.
    if release.exposed_at_provision:
        pytest.skip("this target sends users the first canary step's share as soon as the candidate is deployed "
                    "(a canary Rollout); the steps' analysis measures what they get")
    with httpx.Client(base_url=service.url, timeout=5, trust_env=False) as client:
        served = {client.get("/version").headers.get(release.version_header) for _ in range(5)}
    if release.previous_version is None:  # a first deploy: users must not reach the candidate before promotion
        assert release.version not in served, f"users reach {release.version} before it was verified"
    else:
        assert served == {release.previous_version}
