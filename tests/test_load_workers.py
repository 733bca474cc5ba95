"""Load beyond one locust process, and locust's start-up paid before the load (issue 12 item 5, issue 13).

- `processes=2`: locust --processes on this machine; the master merges its workers' counts.
- `workers=2`: a master here and two workers that connect to it (local processes standing in for machines);
  the counts it reports are the sum of what the workers sent, and the service counted the same requests.
- workers that never connect, bad settings: one clear message, before or instead of a measurement.
- warm spares: a load runs in a process that imported locust beforehand, which shows the run's command line
  and never outlives the process that started it.
- a whole release with a master and 2 workers decides as a single process does (v2-errors rolled back).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from releasegate.core.errors import ConfigError
from releasegate.core.types import Role
from releasegate.plugins.release_vars import check_release_vars
from releasegate.verifiers.load import (
    SPARE_COUNT,
    SPARES,
    LoadError,
    LoadProcess,
    LoadProfile,
    LoadResult,
    WorkerRequest,
    local_worker_processes,
    master_address,
    run_load,
)
from tests.verifiers_services import PROJECT_ROOT, DemoService, demo_service, free_port, write_profiles
from tests.waiting import wait_until

SHOP_LOCUSTFILE = PROJECT_ROOT / "suites" / "load" / "locustfile.py"


# -- settings: checked before anything runs ---------------------------------------------------------------

def profile(**settings: object) -> LoadProfile:
    return LoadProfile(SHOP_LOCUSTFILE, users=4, spawn_rate=100, duration_s=2, min_requests=1, **settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(("settings", "message"), [
    ({"processes": 0}, "processes must be a whole number >= 1, got 0"),
    ({"workers": -1}, "workers must be a whole number >= 0, got -1"),
    ({"processes": 2, "workers": 2}, "processes=2 and workers=2 cannot be combined"),
    ({"master": "0.0.0.0:5557"}, "master '0.0.0.0:5557' is set but workers is 0"),
    ({"workers": 2, "master": "machine-a"}, "master 'machine-a' is not host:port"),
    ({"workers": 2, "workers_timeout_s": 0}, "workers_timeout_s must be > 0"),
])
def test_bad_spread_settings_are_one_config_error(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match="^load profile: " + message.replace("(", r"\(").replace(")", r"\)")):
        profile(**settings)


def test_a_master_that_cannot_listen_is_a_config_error_before_locust_starts() -> None:
    # 192.0.2.1 (TEST-NET-1) is no address of this machine; a port already taken cannot be bound either.
    with pytest.raises(ConfigError, match=r"cannot listen on 192\.0\.2\.1:5557 \(Cannot assign requested address\)"):
        master_address(profile(workers=2, master="192.0.2.1:5557"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port} \\(Address already in use\\); set "
                                              "master to an address of this machine and a free port"):
            master_address(profile(workers=2, master=f"127.0.0.1:{port}"))


def test_spread_settings_in_vars_are_checked_at_start() -> None:
    check_release_vars({"load_processes": 2, "load_workers": 0, "load_master": "", "load_workers_timeout_s": 5},
                       source="releasegate.toml")
    with pytest.raises(ConfigError, match=r"\[vars\] load_processes = 0 must be a number of locust processes, at "
                                          "least 1"):
        check_release_vars({"load_processes": 0}, source="releasegate.toml")
    with pytest.raises(ConfigError, match=r"\[vars\] load_master: load profile: master 'worker-box' is not host:port"):
        check_release_vars({"load_master": "worker-box"}, source="releasegate.toml")


def test_the_profile_names_its_spread_in_every_check_source() -> None:
    assert profile(processes=2).describe().endswith(", 4 users, 2 processes, spawn 100/s, 2s")
    assert ", 4 users, master with 3 workers, " in profile(workers=3).describe()
    assert "processes" not in profile().describe() and "workers" not in profile().describe()


# -- real runs against a demo service ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoService]:
    with demo_service("v1", write_profiles(tmp_path_factory.mktemp("profiles")), slot="blue") as running:
        yield running


def served(service: DemoService) -> int:
    """The /api/* requests the service answered, by its own Prometheus counter."""
    text = httpx.get(service.url + "/metrics", timeout=5, trust_env=False).text
    return int(sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
                   if sample.name == "http_requests_total" and sample.labels.get("handler", "").startswith("/api/")))


def assert_counts_merged(result: LoadResult, workers: int, service: DemoService, before: int) -> None:
    """The master's counts are the sum of what each worker sent, and what the service itself counted."""
    assert len(result.worker_requests) == workers, result.worker_requests
    assert all(count > 0 for count in result.worker_requests.values()), result.worker_requests
    assert result.requests == sum(result.worker_requests.values())
    merged = result.stats()
    assert merged.count == result.requests and sum(merged.buckets.values()) == result.requests
    assert merged.samples_complete and len(merged.samples) == result.requests  # every latency, for rank tests
    assert set(result.versions) == {"v1"} and result.failures == 0
    # The service counts a request when its answer is sent, so the last few may land a moment after the run;
    # it may also have answered requests whose users were stopped mid-flight (one per user at most).
    wait_until(lambda: served(service) - before >= result.requests, timeout_s=5, what="the service's counter")
    assert 0 <= served(service) - before - result.requests <= result.profile.users


@pytest.mark.slow
def test_a_master_and_two_worker_processes_report_the_sum_of_their_counts(service: DemoService) -> None:
    before = served(service)
    started: list[WorkerRequest] = []

    def start_workers(request: WorkerRequest) -> Callable[[], None]:
        started.append(request)
        return local_worker_processes(request)

    result = run_load(profile(workers=2), service.endpoint(Role.CANDIDATE), start_workers=start_workers)
    assert_counts_merged(result, 2, service, before)
    # What a launcher gets: where the master listens, and the worker command (the collector beside the file).
    (request,) = started
    assert (request.count, request.master_host, request.locustfile) == (2, "127.0.0.1", SHOP_LOCUSTFILE)
    assert request.command == (sys.executable, "-m", "locust", "--worker", "--master-host", "127.0.0.1",
                               "--master-port", str(request.master_port), "-f",
                               f"{PROJECT_ROOT / 'verifiers' / 'locust_collector.py'},{SHOP_LOCUSTFILE}",
                               "--loglevel", "WARNING")


@pytest.mark.slow
def test_workers_that_never_connect_end_the_run_with_one_message(service: DemoService) -> None:
    port = free_port()
    lonely = profile(workers=2, master=f"127.0.0.1:{port}", workers_timeout_s=1)
    with pytest.raises(LoadError) as caught:
        run_load(lonely, service.url)  # nobody starts workers for a named master: they come from elsewhere
    first_line = str(caught.value).splitlines()[0]
    assert first_line.startswith(f"only 0 of 2 locust workers connected to the master at 127.0.0.1:{port} within "
                                 "1s, so nothing was measured and the release does not go ahead; start each "
                                 "worker as `"), first_line
    assert f"--worker --master-host 127.0.0.1 --master-port {port} -f " in first_line


# -- warm spares ----------------------------------------------------------------------------------------

def cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    return ""


@pytest.mark.slow
def test_a_load_with_processes_2_runs_in_a_warm_spare_and_merges_both_processes_counts(service: DemoService) -> None:
    SPARES.replenish()  # this process's spares (warm already when an earlier load here left them)
    before = served(service)
    assert SPARES.wait_ready(60), "the spare did not import locust"
    spare = SPARES.idle_pids()[0]
    assert cmdline(spare).rstrip().endswith(" -m releasegate.verifiers.locust_spare (idle spare)")
    with LoadProcess(profile(processes=2), service.endpoint(Role.CANDIDATE)) as process:
        assert process.pid == spare  # the spare became this run, and shows it as `python -m locust` would
        wait_until(lambda: str(SHOP_LOCUSTFILE) in cmdline(spare), timeout_s=30, what="the run's title")
        assert f"{sys.executable} -m locust --headless -f " in cmdline(spare)
        assert " --processes 2 --master-bind-host 127.0.0.1 " in cmdline(spare)
        result = process.result()
    assert_counts_merged(result, 2, service, before)
    assert not _alive(spare) and spare not in SPARES.idle_pids()
    assert len(SPARES.idle_pids()) == SPARE_COUNT  # the next loads' spares, started as this one ended


@pytest.mark.slow
def test_spares_import_at_idle_priority_beside_a_load_which_itself_runs_at_normal_priority(
        service: DemoService) -> None:
    if not SPARES.import_beside_loads:
        pytest.skip("this user may not return a thread from SCHED_IDLE (no CAP_SYS_NICE, RLIMIT_NICE < 20)")
    SPARES.replenish()
    assert SPARES.wait_ready(60), "the spares did not import locust"
    warm = SPARES.idle_pids()
    assert all(os.sched_getscheduler(pid) == os.SCHED_IDLE for pid in warm)
    with LoadProcess(profile(), service.endpoint(Role.CANDIDATE)) as process:
        assert process.pid in warm
        # It went back to normal priority before it loaded anything; the next load's spare is already importing.
        wait_until(lambda: str(SHOP_LOCUSTFILE) in cmdline(process.pid), timeout_s=30, what="the run's title")
        assert os.sched_getscheduler(process.pid) == os.SCHED_OTHER
        assert len(SPARES.idle_pids()) == SPARE_COUNT and process.pid not in SPARES.idle_pids()
        wait_until(lambda: all(os.sched_getscheduler(pid) == os.SCHED_IDLE for pid in SPARES.idle_pids()),
                   timeout_s=30, what="the new spares to import at idle priority")
        process.result()


SPARE_OWNER = """
import sys
from releasegate.verifiers.load import SPARES
SPARES.replenish(up_to=1)
assert SPARES.wait_ready(60)
print(" ".join(map(str, SPARES.idle_pids())), flush=True)
sys.stdin.read()  # until the test kills this process
"""


@pytest.mark.slow
def test_an_idle_spare_never_outlives_the_process_that_started_it() -> None:
    owner = subprocess.Popen([sys.executable, "-c", textwrap.dedent(SPARE_OWNER)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, cwd=PROJECT_ROOT)
    try:
        assert owner.stdout is not None and owner.stdin is not None
        pids = [int(pid) for pid in owner.stdout.readline().split()]
        assert len(pids) == 1 and all(_alive(pid) for pid in pids)
        os.kill(owner.pid, signal.SIGKILL)  # no atexit, no cleanup: the spare sees its stdin close
        owner.wait(30)
        wait_until(lambda: not any(_alive(pid) for pid in pids), timeout_s=30, what="the spares to exit")
    finally:
        _reap(owner)


def _reap(owner: subprocess.Popen[str], *strays: int) -> None:
    """After a test: the owner process, and any of its locust processes left by a failure, gone."""
    if owner.poll() is None:
        owner.kill()
        owner.wait()
    for pid in strays:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pipe in (owner.stdin, owner.stdout):
        if pipe is not None:
            pipe.close()


def _alive(pid: int) -> bool:
    with contextlib.suppress(OSError, IndexError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return False


LOAD_OWNER = """
import sys
from pathlib import Path
from releasegate.verifiers.load import SPARES, LoadProcess, LoadProfile

if sys.argv[1] == "spare":
    SPARES.replenish(up_to=1)
    assert SPARES.wait_ready(60)
profile = LoadProfile(Path(sys.argv[2]), users=2, spawn_rate=100, duration_s=120, max_duration_s=120, min_requests=1,
                      processes=int(sys.argv[4]))
process = LoadProcess(profile, sys.argv[3])
print(process.pid, flush=True)
sys.stdin.read()  # until the test kills this process
"""


@pytest.mark.slow
@pytest.mark.parametrize(("start", "processes"), [("spare", 1), ("cold", 2)])
def test_a_running_load_never_outlives_the_process_that_started_it(service: DemoService, start: str,
                                                                   processes: int) -> None:
    """A CI runner SIGKILLed mid-load: its locust run (a spare that took it, or a cold start with forked
    workers) ends within seconds instead of loading the service for nobody until its 120 s are up."""
    owner = subprocess.Popen([sys.executable, "-c", textwrap.dedent(LOAD_OWNER), start, str(SHOP_LOCUSTFILE),
                              service.url, str(processes)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=PROJECT_ROOT)
    locust: list[int] = []
    try:
        assert owner.stdout is not None
        pid = int(owner.stdout.readline())
        before = served(service)
        wait_until(lambda: served(service) > before + 20, timeout_s=60, what="the load to reach the service")
        locust = [p for p in _all_pids() if _session(p) == pid]  # the run, and the workers it forked
        assert len(locust) == processes + (1 if processes > 1 else 0), [cmdline(p) for p in locust]
        os.kill(owner.pid, signal.SIGKILL)  # no atexit, no cleanup: only the pipe on locust's stdin closes
        owner.wait(30)
        wait_until(lambda: not any(_alive(p) for p in locust), timeout_s=30, what="the load to end")
    finally:
        _reap(owner, *locust)


def _all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _session(pid: int) -> int:
    with contextlib.suppress(OSError, IndexError, ValueError):
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])  # state ppid pgrp session
    return -1
