"""Fixtures for suite writers: what is being released, where to reach it, and how to measure it.

None of them changes the target: the release controller provisions once, in its own action items, and
writes the endpoints to the ledger; these fixtures only read them. Registered with the release plugin,
so they exist only under `--release`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from releasegate.core.checks import CheckOutcome, RecordCheck
from releasegate.core.config import Config
from releasegate.core.progress import ProgressCallback
from releasegate.core.types import Endpoint, Role
from releasegate.plugins.items import STAGE_KEY
from releasegate.plugins.ledger import Ledger, ReleaseContext
from releasegate.plugins.load_slot import LoadSlot, held, load_slot_for
from releasegate.plugins.progress import progress_callback
from releasegate.plugins.prometheus_gate import UNGATED_STAGES, LivePrometheusGate, await_first_scrape

if TYPE_CHECKING:
    from releasegate.targets.kubernetes.load_workers import LoadWorkerJob, WorkerJobs

FIRST_DEPLOY_NO_BASELINE = ("first deploy: no version served before this release, so there is no baseline to "
                            "compare with; the absolute checks decide")


@dataclass(frozen=True)
class ReleaseInfo:
    """What a suite may want to know about the release it verifies."""

    version: str
    previous_version: str | None
    strategy: str
    run_id: str
    target: str
    dry_run: bool
    candidate_slot: str | None
    live_slot: str | None
    switched: bool
    exposed_at_provision: bool  # users reach the candidate from provision on (a canary Rollout's first step)
    version_header: str  # the response header that names the serving version (release.version_header)
    vars: dict[str, Any]
    step_started_at: float | None = None  # canary: when this step's split took effect (epoch s); else None


@dataclass(frozen=True)
class CanaryStep:
    """The canary step an analysis test runs in: the effective weight and the step's window so far.

    `started_at` (epoch seconds) is when the target said the split is in effect; a Prometheus check over
    the step reads the window [started_at, now], e.g. `metrics.share_of_requests(..., since=step.started_at)`.
    """

    weight: int  # the candidate's percent of the service's traffic, as the target gives it
    started_at: float
    window_s: float  # seconds from started_at to when the fixture was set up


def recorder_for(node: pytest.Item) -> RecordCheck:
    """Every check outcome becomes `check.<expression>.<field>` properties of the test's JUnit testcase."""

    def record(outcome: CheckOutcome) -> None:
        node.user_properties.extend(outcome.properties())

    return record


class LoadRunner:
    """`load.run(...)`: a locust run against the candidate (or another endpoint), recorded in JUnit."""

    def __init__(self, endpoints: dict[Role, Endpoint], record: RecordCheck, base_dir: Path, *,
                 first_deploy: bool = False, slot: LoadSlot | None = None,
                 on_progress: ProgressCallback | None = None, worker_jobs: WorkerJobs | None = None) -> None:
        self._on_progress = on_progress  # the live line (plugins/progress.py)
        # kubernetes with load_worker_image: a load's `workers` run as a Job (targets/kubernetes/load_workers.py)
        self._worker_jobs = worker_jobs
        self._endpoints = endpoints
        self._slot = slot  # each load takes the run's load slot (plugins/load_slot.py)
        self._record = record
        self._base_dir = base_dir
        self._first_deploy = first_deploy

    @property
    def record(self) -> RecordCheck:
        """Where this test's check outcomes go (its JUnit testcase), for checks on a load's result."""
        return self._record

    def run(self, locustfile: str | Path, *, users: int = 10, spawn_rate: float = 10.0, duration_s: float = 10.0,
            target: Role | str = Role.CANDIDATE, min_requests: int = 100, stop_on_breach: Sequence[str] = (),
            extra_args: Sequence[str] = (), checks: Sequence[str] = (), max_duration_s: float | None = None,
            check_versions: Sequence[str] = (), per_endpoint: bool = True, processes: int = 1, workers: int = 0,
            master: str = "", workers_timeout_s: float = 30.0) -> Any:
        """Run a load; `checks` are judged every second and end it once decided after `duration_s`,
        extending up to `max_duration_s` (verifiers.load). `processes` or `workers` spread it (README)."""
        from releasegate.plugins.load_histograms import keep_histograms
        from releasegate.verifiers.load import run_load

        role = Role(target)
        if workers and self._worker_jobs is not None:  # the pods dial the master: it listens on every interface
            master = master or self._worker_jobs.listen_address
        profile = self._profile(locustfile, users=users, spawn_rate=spawn_rate, duration_s=duration_s,
                                min_requests=min_requests, stop_on_breach=tuple(stop_on_breach),
                                extra_args=tuple(extra_args), checks=tuple(checks), max_duration_s=max_duration_s,
                                check_versions=tuple(check_versions), per_endpoint=per_endpoint,
                                processes=processes, workers=workers, master=master,
                                workers_timeout_s=workers_timeout_s)
        endpoint = self._endpoint(role)
        with held(self._slot), self._worker_job(profile) as job:
            result = run_load(profile, endpoint, record=self._record if job is None else job.noting_job(self._record),
                              on_progress=self._on_progress, start_workers=job)
        keep_histograms(self._slot, result)  # for the HTML report's charts
        return result

    def _worker_job(self, profile: Any) -> contextlib.AbstractContextManager[LoadWorkerJob | None]:
        """The Job launcher of this load's workers (opened now, closed after the load), or None: local ones."""
        from releasegate.verifiers.load import STARTUP_GRACE_S

        if not profile.workers or self._worker_jobs is None:
            return contextlib.nullcontext()
        # The pods may live as long as the master waits for them and runs, with its start-up slack.
        return self._worker_jobs.open(deadline_s=profile.longest_s + profile.workers_timeout_s + STARTUP_GRACE_S)

    def _profile(self, locustfile: str | Path, **settings: Any) -> Any:
        from releasegate.verifiers.load import LoadProfile

        path = Path(locustfile)
        return LoadProfile(locustfile=path if path.is_absolute() else self._base_dir / path, **settings)

    def _endpoint(self, role: Role) -> Endpoint:
        if role not in self._endpoints:
            raise RuntimeError(f"no {role.value} endpoint at this stage of the release; the target gives: "
                               + ", ".join(r.value for r in self._endpoints))
        return self._endpoints[role]

    def side_by_side(self, locustfile: str | Path, *, users: int = 10, spawn_rate: float = 10.0,
                     duration_s: float = 10.0, min_requests: int = 100, max_duration_s: float | None = None,
                     tolerances: Any = None) -> tuple[Any, Any]:
        """The same load on the candidate and on the baseline at the same time: one window for both, judged
        every second by the sequential comparisons (verifiers.compare.run_side_by_side), which end it once
        decided after `duration_s`, extending up to `max_duration_s`.

        Returns (candidate result, baseline result), ready for `verifiers.compare.compare_loads`.
        """
        from releasegate.plugins.load_histograms import keep_histograms
        from releasegate.verifiers.compare import PairedJudges, Tolerances, run_side_by_side

        if Role.BASELINE not in self._endpoints and self._first_deploy:
            pytest.skip(FIRST_DEPLOY_NO_BASELINE)
        profile = self._profile(locustfile, users=users, spawn_rate=spawn_rate, duration_s=duration_s,
                                min_requests=min_requests, max_duration_s=max_duration_s)
        candidate, baseline = self._endpoint(Role.CANDIDATE), self._endpoint(Role.BASELINE)
        judges = PairedJudges(tolerances or Tolerances(), min_samples=min_requests)
        with held(self._slot):  # the pair is one load: one slot
            pair = run_side_by_side(profile, candidate, baseline, judges=judges, record=self._record,
                                    on_progress=self._on_progress)
        keep_histograms(self._slot, *pair)  # for the HTML report's charts
        return pair


class SuiteFixtures:
    def __init__(self, ledger: Ledger, config: Config) -> None:
        self.ledger = ledger
        self.config = config
        self.prometheus_timeout_s = config.prometheus.timeout_s

    def _context(self) -> ReleaseContext:
        return self.ledger.read_context()

    def _endpoints(self) -> dict[Role, Endpoint]:
        """The endpoints the target gives now, with the configured version header."""
        return {role: replace(endpoint, version_header=self.config.release.version_header)
                for role, endpoint in self._context().endpoints.items()}

    def _endpoint(self, role: Role) -> Endpoint:
        endpoint = self._endpoints().get(role)
        if endpoint is None:
            raise RuntimeError(f"no {role.value} endpoint: the release was not provisioned (see release::provision)")
        return endpoint

    @pytest.fixture
    def release(self) -> ReleaseInfo:
        context = self._context()
        return ReleaseInfo(
            version=context.version, previous_version=context.previous_version,
            strategy=context.strategy, run_id=context.run_id, target=context.target,
            dry_run=context.dry_run, candidate_slot=context.candidate_slot,
            live_slot=context.live_slot, switched=context.switched,
            exposed_at_provision=context.exposed_at_provision,
            version_header=self.config.release.version_header,
            vars=dict(self.config.vars), step_started_at=context.step_started_at)

    @pytest.fixture
    def canary_weight(self) -> int | None:
        """The candidate's percent of the service's traffic in this canary step, as the target gives it (pod
        counts round: 1 canary pod of 4 is 25% for a 10% step); None outside a canary
        (a canary's analysis tests are parametrized with it, one run per step: `test_x[10%]`)."""
        return self._context().canary_weight

    @pytest.fixture
    def canary_step(self) -> CanaryStep | None:
        """This canary step: effective weight, when its split took effect, and its window so far; None
        outside a canary step (a blue-green release, a dry run or a first deploy, where nothing is split)."""
        context = self._context()
        if context.canary_weight is None or context.step_started_at is None:
            return None
        return CanaryStep(weight=context.canary_weight, started_at=context.step_started_at,
                          window_s=max(0.0, time.time() - context.step_started_at))

    @pytest.fixture
    def candidate(self) -> Endpoint:
        """The new version alone (the preview of its slot)."""
        return self._endpoint(Role.CANDIDATE)

    @pytest.fixture
    def baseline(self) -> Endpoint:
        """The version that served users when the release started, alone. A first deploy has none: a
        test that asks for it is skipped with that reason (its absolute checks must still pass elsewhere)."""
        context = self._context()
        if context.previous_version is None and Role.BASELINE not in context.endpoints:
            pytest.skip(FIRST_DEPLOY_NO_BASELINE)
        return self._endpoint(Role.BASELINE)

    @pytest.fixture
    def service(self) -> Endpoint:
        """The public service: what users reach, whichever version serves them now."""
        return self._endpoint(Role.SERVICE)

    @pytest.fixture
    def record_check(self, request: pytest.FixtureRequest) -> RecordCheck:
        """Record a CheckOutcome of your own into this test's JUnit testcase."""
        return recorder_for(request.node)

    @pytest.fixture
    def http(self, candidate: Endpoint) -> Iterator[httpx.Client]:
        """An httpx client bound to the candidate, with timeouts set."""
        from releasegate.verifiers.http import client_for

        with client_for(candidate) as client:
            yield client

    @pytest.fixture
    def load(self, request: pytest.FixtureRequest) -> LoadRunner:
        # Only the roles the target gives now: after a switch on kubernetes there may be no baseline.
        return LoadRunner(self._endpoints(), recorder_for(request.node), Path(request.node.path).parent,
                          first_deploy=self._context().previous_version is None,
                          slot=load_slot_for(request.node, self.ledger, self.config),
                          on_progress=progress_callback(request.node), worker_jobs=self._worker_jobs())

    def _worker_jobs(self) -> WorkerJobs | None:
        """On the kubernetes target with kubernetes.load_worker_image: the launcher of loads' workers as Jobs."""
        context = self._context()
        if context.target != "kubernetes" or not self.config.kubernetes.load_worker_image:
            return None
        from releasegate.targets.kubernetes.load_workers import WorkerJobs
        from releasegate.verifiers.load import COLLECTOR

        return WorkerJobs(self.config, run_id=context.run_id, slot=context.candidate_slot or context.live_slot,
                          collector=COLLECTOR)

    @pytest.fixture
    def metrics(self, request: pytest.FixtureRequest) -> Iterator[Any]:
        """Prometheus queries scoped by the target's labels; every check is recorded in JUnit."""
        from releasegate.verifiers.metrics import Metrics

        scope = self._context().metrics_scope
        if scope is None:
            raise RuntimeError("no Prometheus scope: preflight did not run (see release::preflight)")
        endpoints = self._endpoints()
        if Role.CANDIDATE not in endpoints:
            raise RuntimeError("no candidate endpoint: the release was not provisioned (see release::provision)")
        stage = request.node.stash.get(STAGE_KEY, None)
        if stage is not None and stage.name in UNGATED_STAGES:  # a smoke test that reads Prometheus
            await_first_scrape(self.ledger, LivePrometheusGate(self.config.prometheus))
        with Metrics(scope, timeout_s=self.prometheus_timeout_s, record=recorder_for(request.node),
                     candidate=endpoints[Role.CANDIDATE], baseline=endpoints.get(Role.BASELINE)) as metrics:
            yield metrics
