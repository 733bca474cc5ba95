"""The embedded local target with real processes, real HTTP and a real Prometheus server."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from releasegate.core.errors import NotReadyError, TargetError
from releasegate.core.types import Role, TrafficSplit
from releasegate.targets.local.cluster import LocalCluster
from releasegate.targets.local.target import LocalTarget
from releasegate.verifiers.metrics import Metrics
from tests.local_cluster import alive, cluster_pids, local_config, write_test_profiles
from tests.waiting import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def profiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_test_profiles(tmp_path_factory.mktemp("profiles"))


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory, profiles: Path) -> Iterator[LocalTarget]:
    """One ephemeral cluster for the module: v1 live on blue, v2 ready on green."""
    config = local_config(tmp_path_factory.mktemp("run"), profiles=profiles)
    target = LocalTarget.open(config)
    try:
        target.deploy("green", "v2")
        target.wait_ready("green", 20)
        yield target
    finally:
        target.close()


@pytest.fixture(autouse=True)
def all_traffic_on_blue(target: LocalTarget) -> None:
    target.set_traffic(TrafficSplit.all_to("blue"))


def test_starts_with_the_initial_version_live_on_blue(target: LocalTarget) -> None:
    state = target.live_state()
    assert state.live_slot == "blue"
    assert state.live_version == "v1"
    assert state.versions["green"] == "v2"
    service = target.endpoints("green")[Role.SERVICE].url
    response = httpx.get(f"{service}/version", timeout=5)
    assert response.headers["X-App-Version"] == "v1"


def test_previews_reach_one_slot_each(target: LocalTarget) -> None:
    endpoints = target.endpoints("green")
    with httpx.Client(timeout=5) as client:
        candidate = {client.get(f"{endpoints[Role.CANDIDATE].url}/version").headers["X-App-Version"]
                     for _ in range(10)}
        baseline = {client.get(f"{endpoints[Role.BASELINE].url}/version").headers["X-App-Version"]
                    for _ in range(10)}
    assert candidate == {"v2"}
    assert baseline == {"v1"}


def test_switching_under_continuous_load_fails_no_request(target: LocalTarget) -> None:
    service = target.endpoints("green")[Role.SERVICE].url
    outcomes: Counter[str] = Counter()
    failures: list[str] = []
    stop = threading.Event()

    def client_loop() -> None:
        with httpx.Client(timeout=5) as client:
            while not stop.is_set():
                try:
                    response = client.get(f"{service}/api/items")
                    if response.status_code == 200:
                        outcomes[response.headers["X-App-Version"]] += 1
                    else:
                        failures.append(f"HTTP {response.status_code}: {response.text[:100]}")
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

    threads = [threading.Thread(target=client_loop) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        switches = 0
        for index in range(40):
            slot = "green" if index % 2 == 0 else "blue"
            before = sum(outcomes.values())
            target.set_traffic(TrafficSplit.all_to(slot))
            switches += 1
            # Let requests flow on the new routing before the next switch.
            wait_until(lambda before=before: sum(outcomes.values()) >= before + 15, timeout_s=30,
                       what="requests to flow after a switch")
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert switches >= 30
    assert failures == []
    assert outcomes["v1"] > 100 and outcomes["v2"] > 100, outcomes


def test_a_90_10_split_is_exact_over_2000_requests(target: LocalTarget) -> None:
    target.set_traffic(TrafficSplit.split("blue", "green", 10))
    service = target.endpoints("green")[Role.SERVICE].url
    seen: Counter[str] = Counter()
    with httpx.Client(timeout=5) as client:
        for _ in range(2000):
            seen[client.get(f"{service}/version").headers["X-App-Version"]] += 1
    green_share = seen["v2"] / 2000 * 100
    assert abs(green_share - 10) <= 2, seen


def test_prometheus_has_the_candidate_rate_by_version(tmp_path: Path, profiles: Path) -> None:
    # A cluster of its own, so the candidate has never had a request before the clock starts.
    target = LocalTarget.open(local_config(tmp_path, profiles=profiles, replicas=1))
    try:
        target.deploy("green", "v2")
        target.wait_ready("green", 20)
        # As the release controller does after provisioning: wait until Prometheus scrapes the new pod.
        with Metrics(target.metrics_scope(), timeout_s=5) as metrics:
            wait_until(lambda: metrics.targets_up(version="v2") >= 1, timeout_s=30,
                       what="Prometheus to scrape the candidate pod", interval_s=0.2)
        _candidate_rate_by_version(target)
    finally:
        target.close()


def _candidate_rate_by_version(target: LocalTarget) -> None:
    scope = target.metrics_scope()
    candidate = target.endpoints("green")[Role.CANDIDATE].url
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(timeout=5) as client:
            while not stop.is_set():
                client.get(f"{candidate}/api/items")

    query = (f'sum by ({scope.version_label}) (rate(http_requests_total{{'
             f'{scope.selector(slot="green")},handler="/api/items"}}[10s]))')

    def rate_by_version() -> dict[str, float]:
        answer = httpx.get(f"{scope.prometheus_url}/api/v1/query", params={"query": query}, timeout=5).json()
        return {r["metric"].get("version", ""): float(r["value"][1]) for r in answer["data"]["result"]
                if float(r["value"][1]) > 0}

    thread = threading.Thread(target=traffic)
    started = time.monotonic()
    thread.start()
    try:
        # Two scrapes 1 s apart make a rate: about 2 s. How long it took is printed, a figure for a person
        # (speed is bench/'s business); the deadline only stops a hang on a busy machine.
        rates = wait_until(rate_by_version, timeout_s=60, what=f"a non-zero rate from {query}",
                           interval_s=0.2)
    finally:
        stop.set()
        thread.join(10)
    print(f"candidate rate visible after {time.monotonic() - started:.2f}s: {rates}")
    assert set(rates) == {"v2"}


@pytest.mark.parametrize(
    ("version", "expected"),
    [("v2-crashloop", r"exited with code 1 .*simulated crash"),
     ("v2-never-ready", r"readiness still failing after .*GET /readyz -> 503")],
)
def test_a_bad_version_fails_the_readiness_wait_with_the_reason(
        tmp_path: Path, profiles: Path, version: str, expected: str) -> None:
    target = LocalTarget.open(local_config(tmp_path, profiles=profiles, replicas=1))
    try:
        target.deploy("green", version)

        def failed_once() -> bool:
            # What the reason is made of: an exit (crash loop) or a 503 answer (never ready). A slow start on
            # a busy machine must not leave the 6 s below with only "cannot connect" to report.
            pod = target.client.state()["slots"]["green"]["pods"][0]
            return bool(pod["restarts"]) or "-> 503" in (pod["message"] or "")

        wait_until(failed_once, timeout_s=60, what=f"the {version} pod to fail once")
        with pytest.raises(NotReadyError, match=expected) as failure:
            # A crash loop is given up on at its third exit, never at the deadline (which could fall inside a
            # restart's brief ready moment); a never-ready pod is reported at the deadline.
            target.wait_ready("green", 60 if version == "v2-crashloop" else 6)
        print(failure.value)
        assert target.live_state().live_version == "v1"  # the live slot was never touched
        with pytest.raises(TargetError, match="no pod is ready"):
            target.set_traffic(TrafficSplit.all_to("green"))
    finally:
        target.close()


def test_a_deadline_inside_min_ready_s_says_the_pods_are_ready_but_not_for_long_enough(
        tmp_path: Path, profiles: Path) -> None:
    target = LocalTarget.open(local_config(tmp_path, profiles=profiles, min_ready_s=5))
    try:
        target.deploy("green", "v2")

        def green_ready() -> bool:
            pods = target.client.state()["slots"]["green"]["pods"]
            return len(pods) == 2 and all(pod["ready"] for pod in pods)

        wait_until(green_ready, timeout_s=20, what="both green pods ready")
        with pytest.raises(NotReadyError) as failure:
            target.wait_ready("green", 0.5)  # the caller's deadline falls inside min_ready_s
    finally:
        target.close()
    message = str(failure.value)
    assert re.fullmatch(r"slot green \(v2\) not ready after \d+\.\ds: 2/2 pods ready but not yet for "
                        r"min_ready_s=5s \(ready for \d\.\ds\)", message), message
    assert "no pod was created" not in message


def test_release_state_and_lock_are_shared_through_the_cluster(target: LocalTarget) -> None:
    from releasegate.core.errors import LockHeldError
    from releasegate.core.types import Phase, ReleaseState

    target.acquire_lock("run-a", ttl_s=60)
    try:
        with pytest.raises(LockHeldError, match="run-a"):
            target.acquire_lock("run-b", ttl_s=60)
        state = ReleaseState(run_id="run-a", version="v2", previous_version="v1", live_slot="blue",
                             live_version="v1", candidate_slot="green", phase=Phase.VERIFYING,
                             updated_at=time.time())
        target.record_release_state(state)
        attached = LocalTarget.open(target.config, start_if_missing=False)
        assert attached.read_release_state() == state
        assert not attached.ephemeral
        attached.close()  # attaching and closing leaves the cluster running
        assert target.live_state().live_version == "v1"
    finally:
        target.release_lock("run-a")
    # A holder that died stops renewing; once its lock expires, the next release takes it over.
    asked = time.monotonic()
    target.acquire_lock("run-b", ttl_s=1)
    try:
        target.acquire_lock("run-c", ttl_s=60)
    except LockHeldError:
        pass  # refused while run-b's lock was valid
    else:  # free already: only a machine too busy to ask twice within the TTL may see that
        assert time.monotonic() - asked >= 1, "run-c took the lock that run-b held"

    def take_over() -> bool:
        try:
            target.acquire_lock("run-c", ttl_s=60)
        except LockHeldError:
            return False
        return True

    wait_until(take_over, timeout_s=30, what="the expired lock to be taken over")
    assert target.client.state()["lease"]["holder"] == "run-c"
    target.release_lock("run-c")


def test_the_lock_names_its_holder_and_renewal_never_takes_it(target: LocalTarget) -> None:
    from releasegate.core.errors import LockHeldError, LockLostError
    from releasegate.core.types import LockHolder

    holder = LockHolder(run_id="run-a", version="v2", host="build-7", pid=4242)
    target.acquire_lock(holder, ttl_s=60)
    try:
        lease = target.client.state()["lease"]
        assert (lease["holder"], lease["version"], lease["host"], lease["pid"]) == ("run-a", "v2", "build-7", 4242)
        with pytest.raises(LockHeldError) as refused:
            target.acquire_lock(LockHolder("run-b", "v3", "build-8", 99), ttl_s=60)
        message = str(refused.value)
        assert re.fullmatch(
            r"another release of demo is in progress: lock held by run-a \(version v2, host build-7, pid 4242\) "
            r"until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \((5\d|60)s left\) unless renewed; wait for it to finish, or "
            r"for the lock to expire if that release died", message), message
        until = datetime.strptime(message.split(" until ")[1][:19], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        assert abs(until.timestamp() - lease["expires_at"]) < 1
        # Renewal moves the expiry from now, with the TTL given.
        target.renew_lock(holder, ttl_s=30)
        renewed = target.client.state()["lease"]
        assert renewed["ttl_s"] == 30 and renewed["renewed_at"] >= lease["renewed_at"]
        assert renewed["acquired_at"] == lease["acquired_at"] and renewed["pid"] == 4242
    finally:
        target.release_lock(holder)
    with pytest.raises(LockLostError, match=r"^the release lock of demo was released: run run-a no longer holds it"):
        target.renew_lock(holder, ttl_s=30)
    assert target.client.state()["lease"] is None  # renewing never takes a lock
    # Expired and taken over by another release: the old holder's renewal says by whom.
    target.acquire_lock(holder, ttl_s=0.3)

    def take_over() -> bool:
        try:
            target.acquire_lock(LockHolder("run-b", "v3", "build-8", 99), ttl_s=60)
        except LockHeldError:
            return False
        return True

    wait_until(take_over, timeout_s=5, what="the expired lock to be taken over")
    with pytest.raises(LockLostError, match=r"^the release lock of demo was taken over by run-b \(version v3, host "
                                            r"build-8, pid 99\) until .* UTC \((5\d|60)s left\): run run-a no longer"):
        target.renew_lock(holder, ttl_s=30)
    assert target.client.state()["lease"]["holder"] == "run-b"
    target.release_lock("run-b")


def test_the_admin_api_answers_json_with_sorted_keys_for_every_outcome(tmp_path: Path) -> None:
    """The wire format client.py reads, straight from the ASGI app (no pods, no Prometheus)."""
    cluster = LocalCluster(local_config(tmp_path), tmp_path, persistent=False)

    async def calls() -> list[tuple[int, str]]:
        transport = httpx.ASGITransport(app=cluster.admin_app())
        token = {"Authorization": f"Bearer {cluster.admin_token}"}  # tests/test_security.py: refused without
        async with httpx.AsyncClient(transport=transport, base_url="http://admin", headers=token) as admin:
            answers = [
                await admin.get("/healthz"),
                await admin.post("/lease/acquire", json={"holder": "run-a", "ttl_s": 60, "pid": 7}),
                await admin.post("/lease/acquire", json={"holder": "run-b", "ttl_s": 60}),
                await admin.post("/lease/renew", json={"holder": "run-b", "ttl_s": 60}),
                await admin.post("/lease/renew", json={"holder": "run-a", "ttl_s": 30}),
                await admin.post("/lease/release", json={"holder": "run-a"}),
                await admin.post("/lease/acquire", content=b"{not json"),
                await admin.post("/lease/acquire", json={"ttl_s": 60}),
                await admin.post("/traffic", json={"weights": {"green": 100}}),
                await admin.post("/slots/purple", json={"version": "v2"}),
                await admin.get("/traffic"),
                await admin.get("/nowhere"),
            ]
            metrics = await admin.get("/metrics")
        assert metrics.status_code == 200
        assert "releasegate_router_traffic_switches_total" in metrics.text
        assert metrics.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        for answer in answers:
            assert answer.headers["Content-Type"] == "application/json"
            assert answer.text == json.dumps(answer.json(), sort_keys=True)
        return [(answer.status_code, answer.json()) for answer in answers]

    (healthz, acquired, refused, not_renewed, renewed, released, bad_json, no_holder, no_pods, unknown_slot,
     wrong_method, no_route) = asyncio.run(calls())
    assert healthz == (200, {"status": "starting"})
    assert acquired == (200, {"holder": "run-a", "taken_over_from": None})
    assert refused[0] == 409 and refused[1]["error"] == "the lock is held by run-a"
    assert refused[1]["lease"]["pid"] == 7 and 59 < refused[1]["expires_in_s"] <= 60
    assert not_renewed[0] == 409 and not_renewed[1]["error"] == "the lock is not held by run-b"
    assert not_renewed[1]["lost"] is True and not_renewed[1]["lease"]["holder"] == "run-a"
    assert renewed[0] == 200 and renewed[1]["ttl_s"] == 30 and renewed[1]["holder"] == "run-a"
    assert released == (200, {"released": "run-a"})
    assert cluster.lease is None
    assert bad_json[0] == 400 and "Expecting property name" in bad_json[1]["error"]
    assert no_holder == (400, {"error": "'holder'"})
    assert no_pods == (409, {"error": "refusing to send 100% of traffic to slot green: no pod is ready"})
    assert unknown_slot == (404, {"error": "unknown slot 'purple'; slots are blue, green"})
    assert wrong_method == (404, {"error": "no admin route GET /traffic"})
    assert no_route == (404, {"error": "no admin route GET /nowhere"})


def test_closing_an_ephemeral_cluster_leaves_no_process(tmp_path: Path, profiles: Path) -> None:
    target = LocalTarget.open(local_config(tmp_path, profiles=profiles, replicas=1))
    pids = cluster_pids(target.client.state())
    assert len(pids) == 3 and alive(pids) == pids
    target.close()
    assert alive(pids) == []


def test_all_traffic_goes_to_an_empty_slot_only_when_asked_to_serve_nothing(tmp_path: Path) -> None:
    """The rollback of a first deploy: the service serves nothing again. Nothing else reaches an empty slot."""
    cluster = LocalCluster(local_config(tmp_path), tmp_path, persistent=False)
    with pytest.raises(ValueError, match="no pod is ready"):
        cluster.set_traffic({"green": 100})
    with pytest.raises(ValueError, match="no pod is ready"):
        cluster.set_traffic({"green": 50, "blue": 50}, serve_nothing=True)
    cluster.set_traffic({"green": 100}, serve_nothing=True)
    assert cluster.traffic == {"green": 100}
