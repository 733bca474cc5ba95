"""Leases: create-as-acquire, renew, stale update, MicroTime validation (``07-leases.json``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiException

from tests.fakekube import FakeKube

pytest_plugins = ["tests.fakekube.fixtures"]

NS = "shop"


def lease_body(holder: str, when: datetime) -> client.V1Lease:
    return client.V1Lease(
        metadata=client.V1ObjectMeta(name="releasegate-web", labels={"app.kubernetes.io/managed-by": "releasegate"}),
        spec=client.V1LeaseSpec(
            holder_identity=holder,
            lease_duration_seconds=15,
            acquire_time=when,
            renew_time=when,
            lease_transitions=0,
        ),
    )


def test_lease_create_renew_conflict_takeover(fake_kube: FakeKube, kube_api: Any) -> None:
    fake_kube.seed_namespace(NS)
    leases = client.CoordinationV1Api(kube_api)
    when = datetime(2026, 11, 27, 16, 8, 34, 773488, tzinfo=UTC)
    created = leases.create_namespaced_lease(NS, lease_body("controller-1", when))
    assert created.spec.lease_transitions == 0
    raw = fake_kube.get_object("leases", NS, "releasegate-web")
    assert raw is not None and raw["spec"]["renewTime"] == "2026-11-27T16:08:34.773488Z"
    with pytest.raises(ApiException) as exists:
        leases.create_namespaced_lease(NS, lease_body("controller-2", when))
    assert exists.value.status == 409 and json.loads(exists.value.body)["reason"] == "AlreadyExists"

    stale = leases.read_namespaced_lease("releasegate-web", NS)
    renewed = leases.read_namespaced_lease("releasegate-web", NS)
    renewed.spec.renew_time = datetime(2026, 11, 27, 16, 8, 35, 780455, tzinfo=UTC)
    renewed = leases.replace_namespaced_lease("releasegate-web", NS, renewed)
    assert renewed.metadata.resource_version != stale.metadata.resource_version
    stale.spec.holder_identity = "controller-2"
    with pytest.raises(ApiException) as conflict:
        leases.replace_namespaced_lease("releasegate-web", NS, stale)
    assert conflict.value.status == 409
    assert json.loads(conflict.value.body)["details"] == {
        "name": "releasegate-web",
        "group": "coordination.k8s.io",
        "kind": "leases",
    }

    renewed.spec.holder_identity = "controller-2"
    renewed.spec.lease_transitions = 1
    taken = leases.replace_namespaced_lease("releasegate-web", NS, renewed)
    assert (taken.spec.holder_identity, taken.spec.lease_transitions) == ("controller-2", 1)
    deleted = leases.delete_namespaced_lease("releasegate-web", NS)
    assert (deleted["status"] if isinstance(deleted, dict) else deleted.status) == "Success"


def test_microtime_needs_six_fractional_digits(fake_kube: FakeKube, kube_api: Any) -> None:
    fake_kube.seed_namespace(NS)
    leases = client.CoordinationV1Api(kube_api)
    # A datetime with microsecond 0 serialises without a fraction: a real server rejects it.
    with pytest.raises(ApiException) as err:
        leases.create_namespaced_lease(NS, lease_body("x", datetime(2026, 1, 1, tzinfo=UTC)))
    assert err.value.status == 400
    assert json.loads(err.value.body)["message"] == (
        'Lease in version "v1" cannot be handled as a Lease: parsing time "2026-01-01T00:00:00+00:00" as '
        '"2006-01-02T15:04:05.000000Z07:00": cannot parse "+00:00" as ".000000"'
    )
    with pytest.raises(ApiException) as invalid:
        leases.create_namespaced_lease(
            NS, {"metadata": {"name": "zero"}, "spec": {"holderIdentity": "x", "leaseDurationSeconds": 0}}
        )
    assert invalid.value.status == 422
    assert json.loads(invalid.value.body)["details"]["causes"][0]["field"] == "spec.leaseDurationSeconds"


def test_a_renewal_whose_microtime_lost_its_fraction_is_refused(fake_kube: FakeKube, kube_api: Any) -> None:
    # What a real v1.32 server answers to the client's own serialisation of a datetime with microsecond 0:
    # the decoder refuses the body (400 BadRequest, no details), so the stored Lease is unchanged.
    fake_kube.seed_namespace(NS)
    leases = client.CoordinationV1Api(kube_api)
    leases.create_namespaced_lease(NS, lease_body("controller-1", datetime(2026, 12, 2, 2, 59, 59, 5, tzinfo=UTC)))
    for field in ("renew_time", "acquire_time"):
        lease = leases.read_namespaced_lease("releasegate-web", NS)
        setattr(lease.spec, field, datetime(2026, 12, 2, 3, 0, 0, tzinfo=UTC))
        with pytest.raises(ApiException) as err:
            leases.replace_namespaced_lease("releasegate-web", NS, lease)
        assert err.value.status == 400
        assert json.loads(err.value.body) == {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": 'Lease in version "v1" cannot be handled as a Lease: parsing time "2026-12-02T03:00:00+00:00" '
                       'as "2006-01-02T15:04:05.000000Z07:00": cannot parse "+00:00" as ".000000"',
            "reason": "BadRequest", "code": 400}
    stored = fake_kube.get_object("leases", NS, "releasegate-web")
    assert stored is not None and stored["spec"]["renewTime"] == "2026-12-02T02:59:59.000005Z"
