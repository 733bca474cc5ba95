"""One release run as every hook object sees it: its config, options, ledger, stages and paths."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from releasegate.core.config import Config, load_config
from releasegate.plugins.ledger import Ledger, ReleaseContext
from releasegate.plugins.options import ReleaseOptions, project_path, release_options
from releasegate.plugins.release_vars import check_release_vars
from releasegate.plugins.stages import Stage, stages_for
from releasegate.targets.local.demo_profiles import check_demo_profiles

RUNS_DIR = ".releasegate/runs"
JUNIT_NAME = "junit.xml"
REPORT_NAME = "release-report.md"
# What the xdist controller tells its workers, so that they join its run instead of starting one.
RUN_ID_INPUT = "releasegate_run_id"
LEDGER_INPUT = "releasegate_ledger"


@dataclass(frozen=True)
class ReleaseRun:
    config: pytest.Config
    release_config: Config
    options: ReleaseOptions
    ledger: Ledger
    stages: tuple[Stage, ...]
    suites_root: Path
    report_dir: Path  # this run's own folder: concurrent runs never overwrite each other
    is_worker: bool

    @property
    def writes_reports(self) -> bool:
        """The reporting process (the only pytest process, or the xdist controller), unless it only
        collects (--collect-only runs no release and writes no report)."""
        return not self.is_worker and not self.config.option.collectonly

    @classmethod
    def from_config(cls, config: pytest.Config, version: str) -> ReleaseRun:
        """Read the config and the options; ConfigError (nothing started, no report) on bad input."""
        workerinput = getattr(config, "workerinput", None)
        release_config = load_config(config.getoption("release_config"), search_dir=config.rootpath,
                                     default_name=str(config.getini("releasegate_config")))
        # A typo in an SLO fails now (exit 4), not at the load stage with a candidate provisioned.
        check_release_vars(release_config.vars, source=str(config.getoption("release_config")
                                                           or config.getini("releasegate_config")))
        if workerinput is not None and RUN_ID_INPUT in workerinput:
            run_id, root = workerinput[RUN_ID_INPUT], Path(workerinput[LEDGER_INPUT])
        else:
            run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
            root = config.rootpath / RUNS_DIR / run_id
        options = release_options(config, release_config, version, run_id)
        if options.target == "local" and not release_config.local.command:
            # A bad demo profile file is bad input like a bad config: one line and exit 4, not a failed preflight.
            check_demo_profiles(release_config)
        ledger = Ledger(root)
        if workerinput is None:
            ledger.start(ReleaseContext(run_id=run_id, version=options.version, strategy=options.strategy,
                                        target=options.target, dry_run=options.dry_run))
        return cls(config=config, release_config=release_config, options=options, ledger=ledger,
                   stages=tuple(stages_for(options.strategy, release_config.canary.steps)),
                   suites_root=project_path(config, "releasegate_suites"),
                   report_dir=project_path(config, "releasegate_reports") / run_id,
                   is_worker=workerinput is not None)

    def total_deadline_s(self) -> float:
        deadlines = self.release_config.stages
        return float(sum(getattr(deadlines, s.name) for s in self.stages)) + 60.0
