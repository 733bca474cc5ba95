"""HTTP clients and the smoke check, against a real demo process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from releasegate.core.checks import CheckFailed, CheckOutcome, Verdict
from releasegate.core.types import Endpoint, Role
from releasegate.verifiers.http import Probe, client_for, smoke
from tests.verifiers_services import DemoService, demo_service, free_port, write_profiles


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoService]:
    with demo_service("v1", write_profiles(tmp_path_factory.mktemp("profiles")), slot="blue") as running:
        yield running


def test_client_has_base_url_timeouts_and_ignores_proxy_variables(service: DemoService,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy where nothing listens: a client that honoured it could not reach the loopback service.
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("ALL_PROXY", f"http://127.0.0.1:{free_port()}")
    with client_for(service.endpoint(), timeout_s=2.5) as client:
        assert str(client.base_url) == service.url
        assert client.timeout.connect == client.timeout.read == 2.5
        assert client.trust_env is False
        assert client.get("/version").json()["version"] == "v1"


def test_smoke_passes_the_default_probes_and_records_each(service: DemoService) -> None:
    recorded: list[CheckOutcome] = []
    outcomes = smoke(service.endpoint(), record=recorded.append)
    assert [o.check for o in outcomes] == ["GET /healthz -> 200", "GET /readyz -> 200", "GET /version -> 200",
                                           "GET /api/items -> 200"]
    assert all(o.verdict is Verdict.PASS for o in outcomes)
    assert recorded == outcomes
    assert outcomes[0].threshold == "200, X-App-Version v1"
    assert outcomes[0].message.startswith(f"GET /healthz on candidate v1 at {service.url}: 200 from v1 in ")


def test_smoke_with_tuples_and_a_json_body(service: DemoService) -> None:
    outcomes = smoke(service.endpoint(), [("GET", "/healthz", 200), Probe("POST", "/api/checkout", 200,
                                                                        json={"item_id": 1, "quantity": 2}),
                                          Probe("POST", "/api/checkout", 422, json={"item_id": "x"})])
    assert [o.verdict for o in outcomes] == [Verdict.PASS] * 3


def test_an_answer_from_another_version_fails_naming_both(service: DemoService) -> None:
    expected_v3 = Endpoint(role=Role.CANDIDATE, url=service.url, slot="green", version="v3")
    with pytest.raises(CheckFailed) as caught:
        smoke(expected_v3, [("GET", "/version", 200)])
    assert str(caught.value) == (f"GET /version on candidate v3 at {service.url}: answered by version v1, "
                                 "expected version v3")


def test_an_unknown_version_checks_status_only(service: DemoService) -> None:
    during_split = Endpoint(role=Role.SERVICE, url=service.url, slot=None, version=None)
    assert smoke(during_split, [("GET", "/healthz", 200)])[0].passed


def test_a_wrong_status_and_an_unreachable_endpoint_fail(service: DemoService) -> None:
    recorded: list[CheckOutcome] = []
    with pytest.raises(CheckFailed) as caught:
        smoke(service.endpoint(), [("GET", "/nope", 200), ("GET", "/healthz", 200)], record=recorded.append)
    assert str(caught.value) == f"GET /nope on candidate v1 at {service.url}: answered 404, expected 200"
    assert [o.verdict for o in recorded] == [Verdict.FAIL, Verdict.PASS]

    nowhere = Endpoint(role=Role.CANDIDATE, url=f"http://127.0.0.1:{free_port()}", slot="green", version="v1")
    with pytest.raises(CheckFailed, match=r"GET /healthz on candidate v1 at .*: no answer \(ConnectError"):
        smoke(nowhere, [("GET", "/healthz", 200)], timeout_s=1)
