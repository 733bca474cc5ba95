"""Real locust runs against real demo services: counts, thresholds, NO DATA, early abort, broken runs."""

from __future__ import annotations

import contextlib
import math
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from releasegate.core.checks import CheckFailed, CheckOutcome, Verdict
from releasegate.core.errors import ConfigError
from releasegate.core.types import Role
from releasegate.verifiers.load import LoadError, LoadProfile, publication_times, run_load
from tests.verifiers_services import PROJECT_ROOT, DemoService, demo_service, write_profiles

SHOP_LOCUSTFILE = PROJECT_ROOT / "suites" / "load" / "locustfile.py"

CHECKOUT_ONLY = """
from locust import FastHttpUser, constant, task

class Checkout(FastHttpUser):
    wait_time = constant(0)

    @task
    def checkout(self):
        self.client.post("/api/checkout", json={"item_id": 1, "quantity": 1}, name="/api/checkout")
"""

# Half the requests go to a second service named by an environment variable (absolute URL): one run
# sees two serving versions, as through a router during a canary.
TWO_SERVICES = """
import os
from locust import FastHttpUser, constant, task

class Split(FastHttpUser):
    wait_time = constant(0.01)

    @task
    def items(self):
        self.client.get("/api/items", name="/api/items")
        self.client.get(os.environ["VERIFIERS_TEST_SECOND_URL"] + "/api/items", name="/api/items")
"""

BROKEN = """
from locust import HttpUser, task
class Shopper(HttpUser:
    pass
"""

RAISES_BEFORE_ANY_REQUEST = """
from locust import FastHttpUser, constant, task

class Confused(FastHttpUser):
    wait_time = constant(0.1)

    @task
    def nothing(self):
        raise RuntimeError("no catalogue configured")
"""


def locustfile(directory: Path, text: str, name: str = "locustfile.py") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def profiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_profiles(tmp_path_factory.mktemp("profiles"))


@pytest.fixture(scope="module")
def services(profiles: Path) -> Iterator[dict[str, DemoService]]:
    with demo_service("v1", profiles, slot="blue") as healthy, \
            demo_service("v2-slow", profiles, slot="green") as slow:
        yield {"v1": healthy, "v2-slow": slow}


@pytest.fixture
def errors(profiles: Path) -> Iterator[DemoService]:
    """v2-errors, fresh for each test: its seeded draws start at the first request of the test's load, so the
    error rate a load measures is certain to lie within 2-9% (tests/local_cluster.py, DEMO_SEED)."""
    with demo_service("v2-errors", profiles, slot="green") as service:
        yield service


def shop_checkouts_are_a_quarter(items: int, checkouts: int) -> bool:
    """The shop locustfile picks each task at random, 3:1: checkouts ~ Binomial(n, 1/4). Within 6 standard
    deviations (a miss once in 10^9 runs) whatever the request count the machine managed."""
    total = items + checkouts
    return abs(checkouts - total / 4) <= 6 * math.sqrt(total * 3 / 16) + 1


def test_counts_per_endpoint_and_version_and_a_passing_check(services: dict[str, DemoService]) -> None:
    recorded: list[CheckOutcome] = []
    profile = LoadProfile(SHOP_LOCUSTFILE, users=5, spawn_rate=5, duration_s=3, min_requests=50)
    result = run_load(profile, services["v1"].endpoint(Role.CANDIDATE), record=recorded.append)

    assert result.endpoints == ("/api/checkout", "/api/items")
    assert result.versions == {"v1": result.requests}
    items, checkouts = result.stats("/api/items").count, result.stats("/api/checkout").count
    # Several hundred requests on an idle machine; the checks below need the profile's 50.
    assert items + checkouts == result.requests >= 50
    assert shop_checkouts_are_a_quarter(items, checkouts), (items, checkouts)  # the 3:1 task weights
    assert (result.failures, result.error_rate, result.aborted_early) == (0, 0.0, False)
    # Stopped by the collector at 3 s (a missed stop would run into the 33 s timeout); the upper bound
    # leaves a loaded machine time to stop the users.
    assert 2.9 < result.duration_s < 10
    assert result.rps == pytest.approx(result.requests / result.duration_s)

    # rps > 5, not the suites' 20: a throughput check that passes on a busy CI machine too. p(95) < 300ms
    # with no request near 300ms is shown by 120 requests already (its bound); the totals only, here.
    outcomes = result.check("p(95) < 300ms", "rps > 5", per_endpoint=False)
    assert [o.verdict for o in outcomes] == [Verdict.PASS] * 2
    assert recorded == list(outcomes)
    assert outcomes[0].subject == "all endpoints (candidate v1)"
    assert outcomes[0].source.endswith("suites/load/locustfile.py, 5 users, spawn 5/s, 3s")
    assert outcomes[0].window == f"{result.duration_s:.1f}s"
    assert outcomes[0].samples == result.requests

    # Per endpoint, one expression is judged three times: each judgement gets its own JUnit property names.
    recorded.clear()
    with contextlib.suppress(CheckFailed):  # a few hundred requests may leave an endpoint undecided
        result.check("p(95) < 300ms")
    assert sorted(o.key for o in recorded) == [
        "p(95) < 300ms", "p(95) < 300ms [/api/checkout]", "p(95) < 300ms [/api/items]"]
    names = [name for o in recorded for name, _ in o.properties()]
    assert len(names) == len(set(names))


def test_a_slow_checkout_fails_its_p95_with_one_readable_line(services: dict[str, DemoService],
                                                              tmp_path: Path) -> None:
    profile = LoadProfile(locustfile(tmp_path, CHECKOUT_ONLY), users=10, spawn_rate=10, duration_s=3,
                          min_requests=30)
    result = run_load(profile, services["v2-slow"].endpoint(Role.CANDIDATE))
    p95 = result.stats("/api/checkout").quantile(0.95)
    # At least the injected 400 ms; the upper bound only catches a wrong unit or quantile, not a slow machine.
    assert p95 is not None and 0.39 < p95 < 4.0

    with pytest.raises(CheckFailed) as caught:
        result.check("p(95) < 300ms", endpoint="/api/checkout")
    message = str(caught.value)
    count = result.stats("/api/checkout").count
    assert re.fullmatch(rf"p\(95\) ([3-9]\d\dms|\d+(\.\d+)?s) > 300ms over {count:,} requests on /api/checkout "
                        r"\(candidate v2-slow\): p95 > 300 ms: at least \d.*%", message), message


def test_a_run_stopped_on_a_decisive_failure_before_its_minimum_sample_says_so_first(
        services: dict[str, DemoService], tmp_path: Path) -> None:
    # v2-slow's checkouts take 400 ms: "p(95) < 300ms" fails decisively at the first look, long before the
    # 10,000 requests a verdict at the end needs. The reason the release stops is that failure, not NO DATA.
    profile = LoadProfile(locustfile(tmp_path, CHECKOUT_ONLY), users=10, spawn_rate=10, duration_s=30,
                          min_requests=10_000, checks=("p(95) < 300ms",), per_endpoint=False)
    result = run_load(profile, services["v2-slow"].endpoint(Role.CANDIDATE))
    assert result.aborted_early and result.abort_reason is not None
    with pytest.raises(CheckFailed) as caught:
        result.check("p(95) < 300ms", per_endpoint=False)
    assert [o.verdict for o in caught.value.outcomes] == [Verdict.FAIL, Verdict.NO_DATA]
    assert str(caught.value).splitlines()[0] == result.abort_reason
    assert "decisive failure of p(95) < 300ms on all endpoints at look " in result.abort_reason


def test_a_five_percent_error_version_fails_error_rate_with_the_measured_rate(errors: DemoService) -> None:
    recorded: list[CheckOutcome] = []
    profile = LoadProfile(SHOP_LOCUSTFILE, users=5, spawn_rate=5, duration_s=3, min_requests=50)
    result = run_load(profile, errors.endpoint(Role.CANDIDATE), record=recorded.append)
    assert result.error_rate is not None and 0.02 < result.error_rate < 0.09  # certain with DEMO_SEED

    with pytest.raises(CheckFailed) as caught:
        result.check("error_rate < 1%", "p(95) < 300ms", per_endpoint=False)
    assert str(caught.value).startswith(f"error_rate {recorded[0].display_value} > 1% over {result.requests:,} "
                                        "requests on all endpoints (candidate v2-errors): lower bound ")
    assert recorded[0].value == pytest.approx(result.error_rate)
    assert [o.verdict for o in recorded] == [Verdict.FAIL, Verdict.PASS]  # every outcome, not only failures


def test_fewer_requests_than_the_minimum_is_no_data_never_a_pass(services: dict[str, DemoService]) -> None:
    profile = LoadProfile(SHOP_LOCUSTFILE, users=1, spawn_rate=1, duration_s=1.5, min_requests=100_000)
    result = run_load(profile, services["v1"].endpoint(Role.CANDIDATE))
    with pytest.raises(CheckFailed) as caught:
        result.check("p(95) < 300ms", per_endpoint=False)
    assert caught.value.outcomes[0].verdict is Verdict.NO_DATA
    assert str(caught.value) == (f"NO DATA: p(95) < 300ms: only {result.requests:,} requests on all "
                                 "endpoints (candidate v1), fewer than the minimum 100,000")
    # An endpoint that was never hit is no data as well.
    with pytest.raises(CheckFailed, match="NO DATA: error_rate < 1%: no requests on /api/orders"):
        result.check("error_rate < 1%", endpoint="/api/orders", min_samples=1)


def test_per_version_results_of_a_run_that_reached_two_versions(services: dict[str, DemoService],
                                                                 errors: DemoService, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VERIFIERS_TEST_SECOND_URL", errors.url)
    profile = LoadProfile(locustfile(tmp_path, TWO_SERVICES), users=4, spawn_rate=4, duration_s=3,
                          min_requests=50)
    result = run_load(profile, services["v1"].url)
    assert set(result.versions) == {"v1", "v2-errors"}
    assert abs(result.versions["v1"] - result.versions["v2-errors"]) <= 4
    assert result.stats(version="v1").failures == 0
    assert result.stats(version="v2-errors").failures > 0
    assert result.check("p(95) < 300ms", version="v1", per_endpoint=False)[0].subject == (
        f"all endpoints (version v1 at {services['v1'].url})")
    # Failing or still undecided over a few hundred requests: either way, never a pass.
    with pytest.raises(CheckFailed, match=r"^(INCONCLUSIVE: )?error_rate \d.*% > 1% over .* on all endpoints "
                                          r"\(version v2-err"):
        result.check("error_rate < 1%", version="v2-errors", per_endpoint=False)


def test_early_abort_stops_a_run_well_before_its_duration(errors: DemoService) -> None:
    profile = LoadProfile(SHOP_LOCUSTFILE, users=5, spawn_rate=5, duration_s=30, min_requests=100,
                          stop_on_breach=("error_rate < 1%",))
    started = time.monotonic()
    result = run_load(profile, errors.endpoint(Role.CANDIDATE))
    # The error rate is judged every second; its lower bound passes 1% within a few hundred requests at 5%
    # (DEMO_SEED), a few seconds in on an idle machine; the bounds only say "well before the 30 s".
    assert time.monotonic() - started < 30
    assert result.aborted_early and result.duration_s < 20
    assert result.abort_reason is not None
    assert re.match(r"stopped early after \d+\.\ds of 30s: decisive failure of error_rate < 1% on "
                    r"(all endpoints|/api/items|/api/checkout) at look \d+: lower bound \d.*% >= 1%$",
                    result.abort_reason), result.abort_reason
    assert result.window.endswith("of 30s (stopped early)")
    assert result.looks >= 1
    # An aborted run never passes, even on a check that would.
    with pytest.raises(CheckFailed) as caught:
        result.check("p(95) < 300ms", per_endpoint=False)
    assert [o.verdict for o in caught.value.outcomes] == [Verdict.PASS, Verdict.FAIL]
    assert str(caught.value) == result.abort_reason


def test_a_healthy_run_with_stop_on_breach_runs_to_the_end(services: dict[str, DemoService]) -> None:
    profile = LoadProfile(SHOP_LOCUSTFILE, users=3, spawn_rate=3, duration_s=2.5, min_requests=50,
                          stop_on_breach=("error_rate < 1%", "p(95) < 300ms"))
    result = run_load(profile, services["v1"].endpoint(Role.CANDIDATE))
    assert not result.aborted_early and result.duration_s >= 2.4


def test_a_healthy_run_extends_until_its_checks_decide_then_stops(services: dict[str, DemoService]) -> None:
    recorded: list[CheckOutcome] = []
    # 2 s is too short for "error_rate < 1%" to be shown on 3 users' requests (0 errors in 700 or so are
    # needed); the run goes on until its bound is under 1%, judged every second, and stops there.
    profile = LoadProfile(SHOP_LOCUSTFILE, users=3, spawn_rate=3, duration_s=2, max_duration_s=60,
                          min_requests=50, checks=("error_rate < 1%", "p(95) < 300ms"), per_endpoint=False)
    result = run_load(profile, services["v1"].endpoint(Role.CANDIDATE), record=recorded.append)
    assert result.stop_note is not None and result.stop_note.startswith("every check decided to pass after ")
    assert not result.aborted_early and 2 <= result.duration_s < 60
    assert result.window.endswith("of up to 60s (decided)")
    outcomes = result.check("error_rate < 1%", "p(95) < 300ms", per_endpoint=False)
    assert [o.verdict for o in outcomes] == [Verdict.PASS, Verdict.PASS]
    errors = outcomes[0]
    assert errors.looks is not None and errors.looks >= 2 and errors.decided_after_s is not None
    assert errors.message.endswith(f"(decided after {errors.decided_after_s:.1f}s, look {errors.looks})")
    assert "upper bound " in errors.message and errors.bound.startswith("0/")
    properties = dict(errors.properties())
    assert properties["check.error_rate < 1%.looks"] == str(errors.looks)
    assert float(properties["check.error_rate < 1%.decided_after_s"]) == errors.decided_after_s


def test_live_counts_are_published_every_second_and_once_exactly_at_the_minimum() -> None:
    def first(count: int, minimum: float) -> list[float]:
        return [round(t, 6) for t, _ in zip(publication_times(minimum, 1.0), range(count), strict=False)]

    assert first(6, 2.3) == [1.0, 2.0, 2.3, 3.3, 4.3, 5.3]
    assert first(4, 2.0) == [1.0, 2.0, 3.0, 4.0]
    assert first(3, 0.4) == [0.4, 1.4, 2.4]
    assert first(3, 0.0) == [1.0, 2.0, 3.0]  # no minimum (a fixed window): the plain grid


def test_a_run_whose_checks_are_decided_early_stops_at_its_minimum_not_a_second_later(
        services: dict[str, DemoService]) -> None:
    # "error_rate < 50%" on a healthy version is shown by a few dozen requests, long before the 2.3 s
    # minimum: the look on the publication made at 2.3 s decides. On a whole-second grid it was 3 s (or 3.0x
    # after the sleeps' drift), and the stop came with the next publication, another second on.
    profile = LoadProfile(SHOP_LOCUSTFILE, users=3, spawn_rate=3, duration_s=2.3, max_duration_s=30,
                          min_requests=20, checks=("error_rate < 50%",), per_endpoint=False)
    result = run_load(profile, services["v1"].endpoint(Role.CANDIDATE))
    assert result.stop_note is not None
    decided_at = re.fullmatch(r"every check decided to pass after ([\d.]+)s \(look \d+\)", result.stop_note)
    assert decided_at is not None and 2.3 <= float(decided_at.group(1)) < 3.0
    # The stop request is seen within 20 ms, not at the next publication (3.3 s): a second of slack for a busy
    # machine, and still short of where the stop came before.
    assert not result.aborted_early and 2.3 <= result.duration_s < 3.3


def test_a_window_that_runs_out_undecided_is_inconclusive(services: dict[str, DemoService]) -> None:
    # A fixed 1.5 s window of one user: far too few requests to show an error rate under 0.1%.
    profile = LoadProfile(SHOP_LOCUSTFILE, users=1, spawn_rate=1, duration_s=1.5, min_requests=1,
                          checks=("error_rate < 0.1%",))
    result = run_load(profile, services["v1"].endpoint(Role.CANDIDATE))
    assert result.stop_note is None and not result.aborted_early
    with pytest.raises(CheckFailed) as caught:
        result.check("error_rate < 0.1%", per_endpoint=False)
    assert caught.value.inconclusive_only
    assert [o.verdict for o in caught.value.outcomes] == [Verdict.INCONCLUSIVE]
    assert str(caught.value).startswith("INCONCLUSIVE: error_rate 0% < 0.1% over ")


def test_max_duration_shorter_than_duration_is_a_usage_error() -> None:
    with pytest.raises(ConfigError, match="max_duration_s 5 is shorter than duration_s 10"):
        LoadProfile(SHOP_LOCUSTFILE, users=1, spawn_rate=1, duration_s=10, max_duration_s=5)


def test_a_broken_locustfile_is_a_load_error_with_locusts_message(services: dict[str, DemoService],
                                                                  tmp_path: Path) -> None:
    profile = LoadProfile(locustfile(tmp_path, BROKEN), users=1, spawn_rate=1, duration_s=2)
    with pytest.raises(LoadError) as caught:
        run_load(profile, services["v1"].url)
    message = str(caught.value)
    assert message.startswith("locust exited with code 1 (locust ")
    assert "SyntaxError" in message and "class Shopper(HttpUser:" in message


def test_zero_requests_is_a_load_error_not_a_pass(services: dict[str, DemoService], tmp_path: Path) -> None:
    profile = LoadProfile(locustfile(tmp_path, RAISES_BEFORE_ANY_REQUEST), users=1, spawn_rate=1,
                          duration_s=1)
    with pytest.raises(LoadError) as caught:
        run_load(profile, services["v1"].url)
    assert str(caught.value).startswith(f"locust made no requests to {services['v1'].url}")
    assert "RuntimeError" in str(caught.value) and "no catalogue configured" in str(caught.value)


def test_a_run_over_its_timeout_is_killed_with_its_process_group(services: dict[str, DemoService],
                                                                tmp_path: Path) -> None:
    path = locustfile(tmp_path, CHECKOUT_ONLY, name="timeout_locustfile.py")
    profile = LoadProfile(path, users=2, spawn_rate=2, duration_s=60)
    started = time.monotonic()
    with pytest.raises(LoadError, match=r"^locust did not finish within 2s \(locust .*\); its process group "
                                        "was killed"):
        run_load(profile, services["v1"].url, timeout_s=2)
    assert time.monotonic() - started < 30  # 2 s, then SIGTERM and at most 5 s before SIGKILL: not the 60 s
    assert not processes_mentioning(str(path))


def processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(cmdline)
    return found


def test_profiles_and_locustfiles_are_checked_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="users must be >= 1"):
        LoadProfile(SHOP_LOCUSTFILE, users=0, spawn_rate=1, duration_s=1)
    with pytest.raises(ConfigError, match="invalid threshold 'p95 < 1s'"):
        LoadProfile(SHOP_LOCUSTFILE, users=1, spawn_rate=1, duration_s=1, stop_on_breach=("p95 < 1s",))
    with pytest.raises(ConfigError, match=r"is not a \.py file"):
        run_load(LoadProfile(tmp_path / "missing.py", users=1, spawn_rate=1, duration_s=1), "http://127.0.0.1:9")


def test_the_calling_process_never_imports_locust_gevent_pytest_or_targets() -> None:
    code = ("import sys, releasegate.verifiers.load, releasegate.verifiers.compare, releasegate.verifiers.metrics,"
            " releasegate.verifiers.http;"
            "print(sorted(m for m in ('locust', 'gevent', 'pytest', 'releasegate.targets') if m in sys.modules))")
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=60, check=True, cwd=PROJECT_ROOT)
    assert imported.stdout.strip() == "[]"
