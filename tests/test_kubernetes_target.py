"""The kubernetes target against the fake API server, through the official client over real HTTP.

Pods here are simulated (tests/fakekube's kubelet); tests/test_kubernetes_release.py runs whole releases
with real pod processes.
"""

from __future__ import annotations

import re
import time
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from releasegate.core.config import Config, parse_config
from releasegate.core.errors import ConfigError, LockHeldError, LockLostError, NotReadyError
from releasegate.core.types import LockHolder, Phase, ReleaseState, Role, TrafficSplit
from releasegate.targets.kubernetes import rollout
from releasegate.targets.kubernetes.lease import parse_microtime
from releasegate.targets.kubernetes.target import ArgoCDSelfHealWarning, KubernetesTarget
from tests.fakekube import FakeKube
from tests.waiting import wait_until

NS = "shop"
APP = "web"


def make_config(tmp_path: Path, fake: FakeKube, **kubernetes: Any) -> Config:
    kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig", context="fake", namespace=NS)
    section = {"kubeconfig": str(kubeconfig), "namespace": NS, "service_url": "http://web.example",
               "preview_url": "http://web-preview.example", "ready_timeout_s": 10, "endpoints_timeout_s": 10,
               "min_ready_s": 0.2,
               **kubernetes}
    return parse_config({"app": {"name": APP}, "kubernetes": section, "prometheus": {"url": "http://prom.example"}},
                        source="test config", base_dir=tmp_path, project_root=tmp_path)


@pytest.fixture
def seeded(fake_kube: FakeKube) -> FakeKube:
    fake_kube.seed_blue_green(namespace=NS, app=APP, blue_image="shop/web:v1", replicas=2)
    fake_kube.clear_requests()
    return fake_kube


@pytest.fixture
def target(tmp_path: Path, seeded: FakeKube) -> Any:
    target = KubernetesTarget.open(make_config(tmp_path, seeded))
    yield target
    target.close()


def selector(fake: FakeKube, service: str = APP) -> dict[str, str]:
    obj = fake.get_object("services", NS, service)
    assert obj is not None
    return dict(obj["spec"]["selector"])


# -- bad input: one line, exit 4 (ConfigError), and not one write request --------------------------------

def test_no_kubeconfig(tmp_path: Path, seeded: FakeKube, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    config = parse_config({"app": {"name": APP}}, source="test config", base_dir=tmp_path, project_root=tmp_path)
    with pytest.raises(ConfigError, match=r"^no kubeconfig found \(kubernetes.kubeconfig is empty, \$KUBECONFIG is "
                                          r"unset and ~/.kube/config does not exist\); point kubernetes.kubeconfig"):
        KubernetesTarget.open(config)
    assert seeded.requests == []


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"context": "prod-eu"}, r"^kubernetes.context 'prod-eu' is not in .*kubeconfig; contexts there: fake$"),
        ({"namespace": "nope"}, r"^namespace 'nope' does not exist in this cluster; fix kubernetes.namespace"),
        ({"deployment_name": "{app}-{slot}-x"},
         r"^Deployment shop/web-blue-x \(the live slot blue\) does not exist; install the app"),
        ({"service": "shop-web"}, r"^Service shop/shop-web does not exist; install the app"),
        ({"kubeconfig": "missing.yaml"}, r"^the kubeconfig .*missing.yaml does not exist"),
    ],
    ids=["unknown-context", "missing-namespace", "missing-deployment", "missing-service", "missing-file"],
)
def test_bad_input_is_a_config_error_and_sends_no_write(tmp_path: Path, seeded: FakeKube,
                                                        override: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as error:
        KubernetesTarget.open(make_config(tmp_path, seeded, **override))
    assert "\n" not in str(error.value)
    assert seeded.write_requests() == []


# -- reading --------------------------------------------------------------------------------------------

def test_live_state_reads_the_selector_and_versions(target: KubernetesTarget) -> None:
    state = target.live_state()
    assert state.live_slot == "blue"
    assert state.versions == {"blue": "v1", "green": None}


# -- provisioning ---------------------------------------------------------------------------------------

def test_deploy_derives_the_candidate_from_the_live_deployment(target: KubernetesTarget, seeded: FakeKube) -> None:
    target.deploy("green", "v2")
    status = target.wait_ready("green", 10)
    assert (status.ready_replicas, status.replicas, status.version) == (2, 2, "v2")
    green = seeded.get_object("deployments", NS, "web-green")
    blue = seeded.get_object("deployments", NS, "web-blue")
    assert green is not None and blue is not None
    assert green["spec"]["template"]["spec"]["containers"][0]["image"] == "shop/web:v2"
    assert green["spec"]["selector"]["matchLabels"] == {"app": APP, "slot": "green"}
    assert green["spec"]["template"]["metadata"]["labels"]["version"] == "v2"
    # Everything else of the pod template is the live one's.
    blue_spec = {k: v for k, v in blue["spec"]["template"]["spec"].items() if k != "containers"}
    green_spec = {k: v for k, v in green["spec"]["template"]["spec"].items() if k != "containers"}
    assert green_spec == blue_spec
    assert selector(seeded, f"{APP}-preview") == {"app": APP, "slot": "green"}
    assert selector(seeded) == {"app": APP, "slot": "blue"}  # provisioning moves no traffic
    # Every patch named its content type: the client's default (json-patch) would be a 400 here.
    patches = [r for r in seeded.write_requests() if r.method == "PATCH"]
    assert patches and all(r.content_type in ("application/strategic-merge-patch+json",
                                              "application/merge-patch+json") for r in patches)


def test_deploy_replaces_an_existing_candidate(target: KubernetesTarget, seeded: FakeKube) -> None:
    target.deploy("green", "v2")
    target.wait_ready("green", 10)
    target.deploy("green", "v3")
    target.wait_ready("green", 10)
    assert target.live_state().versions["green"] == "v3"
    assert [r.method for r in seeded.write_requests() if "deployments" in r.path].count("PUT") == 1


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        ("crashloop", r"CrashLoopBackOff, last exit code 1 .*restart.*\(event BackOff: Back-off restarting"),
        ("imagepull", r"(ErrImagePull|ImagePullBackOff).*shop/web:v2"),
        ("never-ready", r"not ready after .*readiness probe failing \(event Unhealthy: Readiness probe failed"),
    ],
)
def test_a_bad_candidate_fails_with_the_pods_reasons(tmp_path: Path, seeded: FakeKube, behaviour: str,
                                                     expected: str) -> None:
    seeded.set_image_behaviour("shop/web:v2", behaviour)
    target = KubernetesTarget.open(make_config(tmp_path, seeded, ready_timeout_s=3))
    try:
        target.deploy("green", "v2")
        with pytest.raises(NotReadyError, match=expected) as error:
            target.wait_ready("green", 3)
        print(error.value)
    finally:
        target.close()


def test_a_deadline_inside_min_ready_s_says_the_pods_are_ready_but_not_for_long_enough(
        tmp_path: Path, seeded: FakeKube) -> None:
    target = KubernetesTarget.open(make_config(tmp_path, seeded, ready_timeout_s=60, min_ready_s=30))
    try:
        target.deploy("green", "v2")

        def green_rolled_out() -> bool:
            green = seeded.get_object("deployments", NS, "web-green")
            return green is not None and rollout.rollout_complete(green)

        wait_until(green_rolled_out, timeout_s=10, what="the green rollout to complete in the fake")
        with pytest.raises(NotReadyError) as error:
            target.wait_ready("green", 1)  # the stage's deadline falls inside min_ready_s
    finally:
        target.close()
    message = str(error.value)
    assert re.fullmatch(r"Deployment web-green \(v2\) not ready after 1s: 2/2 updated, 2/2 available; 2/2 pods "
                        r"ready but not yet for min_ready_s=30s \(ready for 1\.\d+s\)", message), message
    assert "no pod was created" not in message


@pytest.mark.parametrize("section", ["local", "kubernetes"])
@pytest.mark.parametrize(("min_ready_s", "ready_timeout_s"), [(40, 30), (30, 30)])
def test_min_ready_s_not_below_ready_timeout_s_is_a_config_error(tmp_path: Path, section: str,
                                                                 min_ready_s: float,
                                                                 ready_timeout_s: float) -> None:
    data = {section: {"min_ready_s": min_ready_s, "ready_timeout_s": ready_timeout_s}}
    with pytest.raises(ConfigError) as error:
        parse_config(data, source="releasegate.toml", base_dir=tmp_path)
    assert str(error.value) == (
        f"releasegate.toml: {section}.min_ready_s = {min_ready_s} is not below {section}.ready_timeout_s = "
        f"{ready_timeout_s}: pods must become ready and then stay ready for min_ready_s within ready_timeout_s, "
        f"so the wait can never succeed; lower {section}.min_ready_s or raise {section}.ready_timeout_s")
    assert error.value.exit_code == 4
    assert parse_config({section: {"min_ready_s": 29, "ready_timeout_s": 30}}, source="releasegate.toml",
                        base_dir=tmp_path)


# -- traffic --------------------------------------------------------------------------------------------

def test_switch_patches_the_selector_and_waits_for_the_endpoints(target: KubernetesTarget,
                                                                 seeded: FakeKube) -> None:
    target.deploy("green", "v2")
    target.wait_ready("green", 10)
    green_pods = {p["status"]["podIP"] for p in seeded.list_objects("pods", NS, "slot=green")}
    result = target.set_traffic(TrafficSplit.all_to("green"))
    print(f"selector patch to converged EndpointSlices: {result.converged_ms:.1f} ms")
    assert selector(seeded) == {"app": APP, "slot": "green"}
    assert set(seeded.endpoints_ready(NS, APP)) == green_pods  # converged when set_traffic returned
    assert result.previous.single_slot == "blue"
    target.set_traffic(TrafficSplit.all_to("blue"))
    assert selector(seeded) == {"app": APP, "slot": "blue"}
    with pytest.raises(ConfigError, match="weighted splits need the canary strategy"):
        target.set_traffic(TrafficSplit.split("blue", "green", 10))


def test_scale_down_and_remove(target: KubernetesTarget, seeded: FakeKube) -> None:
    target.deploy("green", "v2")
    target.wait_ready("green", 10)
    target.scale_down("green")
    green = seeded.get_object("deployments", NS, "web-green")
    assert green is not None and green["spec"]["replicas"] == 0
    scale = [r for r in seeded.write_requests() if r.path.endswith("/scale")]
    assert scale and scale[0].method == "PATCH"
    target.remove("green")
    wait_until(lambda: seeded.get_object("deployments", NS, "web-green") is None, timeout_s=5,
               what="web-green to be deleted")
    target.remove("green")  # idempotent


# -- first deploy: the chart's firstDeploy=true leaves the live slot empty ------------------------------------

@pytest.fixture
def empty(fake_kube: FakeKube) -> FakeKube:
    """blue selected but empty: 0 replicas, no version, `releasegate.io/replicas: "2"` (seed.make_empty)."""
    fake_kube.seed_blue_green(namespace=NS, app=APP, blue_image="shop/web:v1", replicas=2, empty=True)
    fake_kube.clear_requests()
    return fake_kube


def test_a_first_deploy_gets_the_annotated_replicas_and_its_rollback_serves_nothing(tmp_path: Path,
                                                                                   empty: FakeKube) -> None:
    target = KubernetesTarget.open(make_config(tmp_path, empty))
    try:
        state = target.live_state()  # no version serves: not an error, a first deploy
        assert (state.live_slot, state.live_version, dict(state.versions)) == ("blue", None, {"blue": None,
                                                                                            "green": None})
        assert empty.write_requests() == []  # opening and reading wrote nothing
        target.deploy("green", "v1")
        green = empty.get_object("deployments", NS, "web-green")
        assert green is not None and green["spec"]["replicas"] == 2  # the annotation's count, not blue's 0
        assert green["spec"]["template"]["spec"]["containers"][0]["image"] == "shop/web:v1"
        assert green["spec"]["template"]["metadata"]["labels"]["version"] == "v1"
        blue = empty.get_object("deployments", NS, "web-blue")
        assert blue is not None  # everything else of the pod template is the empty slot's (probes, ports, ...)
        assert {k: v for k, v in green["spec"]["template"]["spec"]["containers"][0].items() if k != "image"} == \
            {k: v for k, v in blue["spec"]["template"]["spec"]["containers"][0].items() if k != "image"}
        assert target.wait_ready("green", 10).ready_replicas == 2
        endpoints = target.endpoints("green")
        assert Role.BASELINE not in endpoints  # nothing to compare with
        assert endpoints[Role.SERVICE].version is None and endpoints[Role.CANDIDATE].version == "v1"

        promotion = target.promote("green", "v1")
        assert (promotion.live_slot, promotion.retired_slot) == ("green", None)  # nothing to scale down later
        assert len(empty.endpoints_ready(NS, APP)) == 2
        # The rollback of a first deploy: all traffic back to the empty slot, which returns once none is listed.
        target.set_traffic(TrafficSplit.all_to("blue"))
        assert selector(empty) == {"app": APP, "slot": "blue"}
        assert empty.endpoints_ready(NS, APP) == []
        target.remove("green")
        wait_until(lambda: empty.get_object("deployments", NS, "web-green") is None, timeout_s=5,
                   what="web-green to be deleted")
        assert target.live_state().live_version is None
    finally:
        target.close()


@pytest.mark.parametrize(("change", "expected"), [
    ({"replicas": 2}, r"^Deployment shop/web-blue runs 2 replica\(s\) of no known version \(no 'version' pod label, "
                      r"an image without a tag\); label its pod template version=<version>, or scale it to 0"),
    ({"annotation": None}, r"^Deployment shop/web-blue runs no version \(a first deploy\) and its annotation "
                           r"releasegate.io/replicas must say how many replicas to deploy, but it is missing; install "
                           r"with the chart's firstDeploy=true"),
    ({"annotation": "0"}, r"but it is '0'; install"),
], ids=["unknown-version-serving", "no-replica-annotation", "zero-replicas-annotated"])
def test_an_empty_slot_a_first_deploy_cannot_work_from_is_refused(tmp_path: Path, empty: FakeKube,
                                                                 change: dict[str, Any], expected: str) -> None:
    blue = empty.get_object("deployments", NS, "web-blue")
    assert blue is not None
    if "replicas" in change:
        blue["spec"]["replicas"] = change["replicas"]
    if "annotation" in change:
        blue["metadata"]["annotations"].pop("releasegate.io/replicas")
        if change["annotation"] is not None:
            blue["metadata"]["annotations"]["releasegate.io/replicas"] = change["annotation"]
    empty.apply(blue)
    empty.clear_requests()
    with pytest.raises(ConfigError, match=expected) as error:
        KubernetesTarget.open(make_config(tmp_path, empty))
    assert "\n" not in str(error.value)
    assert empty.write_requests() == []


def test_release_state_lives_in_service_annotations(target: KubernetesTarget, seeded: FakeKube) -> None:
    state = ReleaseState(run_id="run-1", version="v2", previous_version="v1", live_slot="blue", live_version="v1",
                         candidate_slot="green", phase=Phase.VERIFYING, updated_at=1_800_000_000.5)
    target.record_release_state(state)
    annotations = seeded.get_object("services", NS, APP)["metadata"]["annotations"]  # type: ignore[index]
    assert annotations["releasegate.io/phase"] == "verifying"
    assert annotations["releasegate.io/previous-version"] == "v1"
    assert target.read_release_state() == state


# -- the lock -------------------------------------------------------------------------------------------

def test_a_second_release_is_refused_naming_the_holder(target: KubernetesTarget, seeded: FakeKube) -> None:
    target.acquire_lock("run-a", ttl_s=60)
    target.acquire_lock("run-a", ttl_s=60)  # renewing one's own lock is fine
    with pytest.raises(LockHeldError, match="lease shop/web-release is held by run-a until"):
        target.acquire_lock("run-b", ttl_s=60)
    lease = seeded.get_object("leases", NS, "web-release")
    assert lease is not None and lease["spec"]["holderIdentity"] == "run-a"
    target.release_lock("run-a")
    target.acquire_lock("run-b", ttl_s=60)
    lease = seeded.get_object("leases", NS, "web-release")
    assert lease is not None and lease["spec"]["leaseTransitions"] == 1


def test_a_stale_lease_is_taken_over(target: KubernetesTarget, seeded: FakeKube) -> None:
    # Timed from before the acquire: its renewTime is taken inside the call, which a busy machine may slow.
    started = time.monotonic()
    target.acquire_lock("run-that-died", ttl_s=1)

    def take_over() -> bool:
        try:
            target.acquire_lock("run-new", ttl_s=60)
        except LockHeldError:
            return False
        return True

    wait_until(take_over, timeout_s=30, what="the stale lease to be taken over")
    # Not before its holder missed two renewals (core/recovery.py: two renew periods of ttl/3, 0.67 s of the
    # 1 s lease), which is before it expired: a holder that stopped renewing is taken to be dead.
    assert time.monotonic() - started >= 0.62  # renewTime has microseconds
    lease = seeded.get_object("leases", NS, "web-release")
    assert lease is not None and lease["spec"]["holderIdentity"] == "run-new"
    assert lease["spec"]["acquireTime"].endswith("Z") and len(lease["spec"]["acquireTime"]) == 27


class StepClock:
    """Lease time for the target: whole seconds only, so every MicroTime has zero microseconds."""

    def __init__(self, start: datetime) -> None:
        self.moment = start

    def __call__(self) -> datetime:
        return self.moment

    def advance(self, seconds: int) -> None:
        self.moment += timedelta(seconds=seconds)


def test_the_holder_is_stored_with_the_lease_and_named_when_refused(target: KubernetesTarget,
                                                                     seeded: FakeKube) -> None:
    holder = LockHolder(run_id="run-a", version="v2", host="build-7", pid=4242)
    target.acquire_lock(holder, ttl_s=60)
    lease = seeded.get_object("leases", NS, "web-release")
    assert lease is not None and lease["spec"]["holderIdentity"] == "run-a"
    assert {k: v for k, v in lease["metadata"]["annotations"].items() if "holder" in k} == {
        "releasegate.io/holder-version": "v2", "releasegate.io/holder-host": "build-7",
        "releasegate.io/holder-pid": "4242"}
    with pytest.raises(LockHeldError) as refused:
        target.acquire_lock(LockHolder("run-b", "v3", "build-8", 99), ttl_s=60)
    message = str(refused.value)
    assert "\n" not in message
    assert re.fullmatch(
        r"another release of web is in progress: lease shop/web-release is held by run-a \(version v2, host "
        r"build-7, pid 4242\) until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \((5\d|60)s left\) unless renewed; wait for "
        r"it to finish, or for the lock to expire if that release died", message), message
    expires = datetime.strptime(message.split(" until ")[1][:19], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    assert abs((expires - datetime.now(UTC)).total_seconds() - 60) < 5
    target.release_lock(holder)
    lease = seeded.get_object("leases", NS, "web-release")
    assert lease is not None and "holderIdentity" not in lease["spec"]
    assert not [k for k in (lease["metadata"].get("annotations") or {}) if "holder" in k]


def test_renewal_moves_renew_time_and_says_when_the_lock_is_lost(target: KubernetesTarget,
                                                                 seeded: FakeKube) -> None:
    clock = StepClock(datetime.now(UTC).replace(microsecond=0))
    target.lease.now = clock
    holder = LockHolder("run-a", "v2", "build-7", 4242)
    target.acquire_lock(holder, ttl_s=10)
    acquired = seeded.get_object("leases", NS, "web-release")
    assert acquired is not None
    clock.advance(3)
    target.renew_lock(holder, ttl_s=10)
    renewed = seeded.get_object("leases", NS, "web-release")
    assert renewed is not None
    assert renewed["spec"]["acquireTime"] == acquired["spec"]["acquireTime"]
    assert parse_microtime(renewed["spec"]["renewTime"]) == clock()
    assert renewed["metadata"]["annotations"]["releasegate.io/holder-pid"] == "4242"
    # A 409 (someone wrote in between) is read again and retried: still ours, so the renewal goes through.
    seeded.inject_fault(method="PUT", path_regex=r"/leases/web-release$", status=409, times=1)
    target.renew_lock(holder, ttl_s=10)
    # Expired and taken over by another release: renewing never takes it back.
    clock.advance(11)
    target.acquire_lock(LockHolder("run-b", "v3", "build-8", 99), ttl_s=10)
    with pytest.raises(LockLostError, match=r"^lease shop/web-release was taken over by run-b \(version v3, host "
                                            r"build-8, pid 99\) until .* UTC \(10s left\): run run-a no longer holds"):
        target.renew_lock(holder, ttl_s=10)
    assert (seeded.get_object("leases", NS, "web-release") or {})["spec"]["holderIdentity"] == "run-b"
    target.release_lock(LockHolder("run-b"))
    with pytest.raises(LockLostError, match=r"^lease shop/web-release was released: run run-a no longer holds"):
        target.renew_lock(holder, ttl_s=10)


def test_every_lease_write_sends_six_fractional_digits(target: KubernetesTarget, seeded: FakeKube) -> None:
    # The client would turn a datetime with zero microseconds into "...T03:00:00+00:00", which a real
    # server (and the fake) refuses with 400; every time here has zero microseconds.
    clock = StepClock(datetime(2030, 12, 2, 3, 0, 0, tzinfo=UTC))
    target.lease.now = clock
    holder = LockHolder("run-a", "v2", "build-7", 4242)
    target.acquire_lock(holder, ttl_s=10)          # create
    for _ in range(2):
        clock.advance(3)
        target.renew_lock(holder, ttl_s=10)         # update renewTime
    target.acquire_lock(holder, ttl_s=10)          # update, keeping acquireTime
    target.release_lock(holder)                    # update, holder removed
    target.acquire_lock(LockHolder("run-b"), ttl_s=10)
    clock.advance(11)
    target.acquire_lock(LockHolder("run-c"), ttl_s=10)  # take-over of an expired lease
    target.release_lock(LockHolder("run-c"))

    writes = [r for r in seeded.write_requests() if "/leases" in r.path]
    assert [r.method for r in writes] == ["POST", "PUT", "PUT", "PUT", "PUT", "PUT", "PUT", "PUT"]
    assert [r.status for r in writes] == [201, 200, 200, 200, 200, 200, 200, 200]
    for request in writes:
        spec = request.json()["spec"]
        times = [spec[key] for key in ("acquireTime", "renewTime") if key in spec]
        assert times and all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000000Z", t) for t in times), spec
    lease = seeded.get_object("leases", NS, "web-release")
    assert lease is not None and lease["spec"]["renewTime"] == "2030-12-02T03:00:17.000000Z"
    assert not [r for r in seeded.requests if r.status == 400]


# -- API faults -----------------------------------------------------------------------------------------

def test_5xx_and_429_are_retried_with_backoff(target: KubernetesTarget, seeded: FakeKube) -> None:
    seeded.inject_fault(method="PATCH", path_regex=r"/services/web$", status=503, times=2)
    seeded.inject_fault(method="PATCH", path_regex=r"/services/web$", status=429, times=1, retry_after=1)
    before = time.monotonic()
    target.record_release_state(ReleaseState("run-1", "v2", "v1", "blue", "v1", "green", Phase.STARTED, 1.0))
    assert time.monotonic() - before >= 1.0  # Retry-After was honoured
    answered = [r.status for r in seeded.requests if r.method == "PATCH"]
    assert answered == [503, 503, 429, 200]


def test_retries_are_bounded(tmp_path: Path, seeded: FakeKube) -> None:
    target = KubernetesTarget.open(make_config(tmp_path, seeded, max_retries=2))
    try:
        seeded.inject_fault(method="PATCH", path_regex=r"/services/web$", status=500, times=10)
        with pytest.raises(Exception, match="HTTP 500"):
            target.record_release_state(ReleaseState("r", "v2", "v1", "blue", "v1", "green", Phase.STARTED, 1.0))
        assert [r.status for r in seeded.requests if r.method == "PATCH"] == [500, 500, 500]
    finally:
        target.close()


def test_409_conflicts_are_re_read_and_retried(target: KubernetesTarget, seeded: FakeKube) -> None:
    target.deploy("green", "v2")
    target.wait_ready("green", 10)
    seeded.inject_fault(method="PUT", path_regex=r"/deployments/web-green$", status=409, times=2)
    target.deploy("green", "v3")
    puts = [r.status for r in seeded.requests if r.method == "PUT" and "web-green" in r.path]
    assert puts == [409, 409, 200]
    gets_between = [r for r in seeded.requests if r.method == "GET" and r.path.endswith("/deployments/web-green")]
    assert len(gets_between) >= 3  # each retry read the object again


def test_401_names_the_credentials(tmp_path: Path, seeded: FakeKube) -> None:
    kubeconfig = seeded.write_kubeconfig(tmp_path / "bad", context="fake", namespace=NS, token="expired-token")
    config = make_config(tmp_path, seeded, kubeconfig=str(kubeconfig))
    with pytest.raises(ConfigError, match=r"rejected the credentials \(401 Unauthorized\) when trying to get "
                                          r"namespaces; refresh the kubeconfig's token"):
        KubernetesTarget.open(config)


def test_403_names_the_verb_and_resource_rbac_lacks(tmp_path: Path, seeded: FakeKube) -> None:
    rules = [{"apiGroups": [""], "resources": ["namespaces", "services", "pods", "events"],
              "verbs": ["get", "list"]},
             {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}]
    seeded.set_rbac({"releasegate-norights": rules})
    kubeconfig = seeded.write_kubeconfig(tmp_path / "ro", context="fake", namespace=NS, token="norights-token")
    target = KubernetesTarget.open(make_config(tmp_path, seeded, kubeconfig=str(kubeconfig)))
    try:
        with pytest.raises(ConfigError, match=r"^RBAC forbids patch on services in namespace shop \(.*cannot patch "
                                              r"resource \"services\".*\); grant the verb 'patch' on 'services'"):
            target.record_release_state(ReleaseState("r", "v2", "v1", "blue", "v1", "green", Phase.STARTED, 1.0))
    finally:
        target.close()


def test_argocd_tracking_gives_the_ignore_differences_snippet(tmp_path: Path, seeded: FakeKube) -> None:
    service = seeded.get_object("services", NS, APP)
    assert service is not None
    from kubernetes import client

    with client.ApiClient(seeded.client_configuration()) as api:
        client.CoreV1Api(api).patch_namespaced_service(
            APP, NS, {"metadata": {"annotations": {"argocd.argoproj.io/tracking-id": "shop:/Service:shop/web"}}},
            _content_type="application/merge-patch+json")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        KubernetesTarget.open(make_config(tmp_path, seeded)).close()
    messages = [str(w.message) for w in caught if issubclass(w.category, ArgoCDSelfHealWarning)]
    assert len(messages) == 1
    assert "ignoreDifferences" in messages[0] and "/spec/selector" in messages[0]


# -- reaching the app -----------------------------------------------------------------------------------

def test_cluster_dns_urls_use_the_service_port(tmp_path: Path, seeded: FakeKube) -> None:
    target = KubernetesTarget.open(make_config(tmp_path, seeded, access="cluster-dns"))
    try:
        target.deploy("green", "v2")
        endpoints = {role.value: e.url for role, e in target.endpoints("green").items()}
    finally:
        target.close()
    assert endpoints == {"service": "http://web.shop.svc.cluster.local:80",
                         "candidate": "http://web-preview.shop.svc.cluster.local:80",
                         "baseline": "http://web.shop.svc.cluster.local:80"}


def test_url_templates_are_filled_and_checked(tmp_path: Path, seeded: FakeKube) -> None:
    config = make_config(tmp_path, seeded, service_url="https://{app}.{namespace}.example.com/",
                         preview_url="https://{preview_service}.example.com", baseline_url="https://{slot}.example.com")
    target = KubernetesTarget.open(config)
    try:
        endpoints = target.endpoints("green")
        assert endpoints[Role.SERVICE].url == "https://web.shop.example.com"
        assert endpoints[Role.CANDIDATE].url == "https://web-preview.example.com"
        assert endpoints[Role.BASELINE].url == "https://blue.example.com"
    finally:
        target.close()
    bad = KubernetesTarget.open(make_config(tmp_path, seeded, service_url="https://{host}.example.com"))
    try:
        with pytest.raises(ConfigError, match=r"kubernetes.service_url = .* uses an unknown placeholder 'host'"):
            bad.endpoints("green")
    finally:
        bad.close()


def test_port_forward_without_kubectl_says_so(tmp_path: Path, seeded: FakeKube,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no kubectl here
    target = KubernetesTarget.open(make_config(tmp_path, seeded, access="port-forward"))
    try:
        with pytest.raises(ConfigError, match=r"kubernetes\.access = 'port-forward' needs kubectl on PATH"):
            target.endpoints("green")
    finally:
        target.close()
