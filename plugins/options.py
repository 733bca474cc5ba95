"""The command-line options and ini settings of a release, and the options a run resolves from them."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from releasegate.core.config import Config
from releasegate.core.errors import ConfigError
from releasegate.core.versions import validate_version

STRATEGIES = ("blue-green", "canary")
TARGETS = ("local", "kubernetes", "kind")


@dataclass(frozen=True)
class ReleaseOptions:
    version: str
    strategy: str
    target: str
    dry_run: bool
    run_id: str
    resume: bool = False  # --release-resume: continue an unfinished release instead of rolling it back first


def add_options(parser: pytest.Parser) -> None:
    # Every option but --release starts with --release-: generic names (--target, --dry-run) clash with
    # other plugins'.
    group = parser.getgroup("releasegate", "release verification (releasegate)")
    group.addoption("--release", metavar="VERSION", default=None,
                    help="release VERSION: provision it, verify it stage by stage, then switch or roll back")
    group.addoption("--release-strategy", dest="release_strategy", default=None, metavar="STRATEGY",
                    help="blue-green or canary (default: release.strategy in the config)")
    group.addoption("--release-target", dest="release_target", default=None, metavar="TARGET",
                    help="local, kubernetes or kind (default: release.target in the config, else local)")
    group.addoption("--release-config", dest="release_config", default=None, metavar="PATH",
                    help="config file (default: the releasegate_config ini setting, releasegate.toml)")
    group.addoption("--release-dry-run", dest="release_dry_run", action="store_true",
                    help="verify the candidate, then remove it: never touch traffic")
    group.addoption("--release-resume", dest="release_resume", action="store_true",
                    help="when a killed run left this version's release unfinished before users reached it, "
                         "continue it (default: roll the unfinished release back first)")
    parser.addini("releasegate_config", "release config file, relative to the root directory (used when "
                  "present)", default="releasegate.toml")
    parser.addini("releasegate_suites", "folder of the verification suites, one subfolder per stage, relative "
                  "to the root directory", default="suites")
    parser.addini("releasegate_reports", "folder of the release reports (one subfolder per run, and a "
                  "`latest` link), relative to the root directory", default="reports")


def project_path(config: pytest.Config, ini_name: str) -> Path:
    """An ini path setting, resolved from the root directory (the project)."""
    value = Path(str(config.getini(ini_name))).expanduser()
    return value if value.is_absolute() else config.rootpath / value


def release_options(config: pytest.Config, release_config: Config, version: str, run_id: str) -> ReleaseOptions:
    """The command line over the config file; ConfigError for a value that is not one of ours."""
    strategy = config.getoption("release_strategy") or release_config.release.strategy
    if strategy not in STRATEGIES:
        raise ConfigError(f"--release-strategy {strategy!r} is not a strategy; use one of: "
                          f"{', '.join(STRATEGIES)}")
    target = config.getoption("release_target") or release_config.release.target
    if target not in TARGETS:
        raise ConfigError(f"--release-target {target!r} is not a target; use one of: {', '.join(TARGETS)}")
    if strategy == "canary" and target == "kind":
        raise ConfigError("the canary strategy runs on the local and kubernetes targets; the kind target installs "
                          "the blue-green chart (use --release-strategy blue-green there, or install "
                          "charts/canary-app and use --release-target kubernetes)")
    return ReleaseOptions(version=validate_version(version, source="--release"), strategy=strategy,
                          target=target, dry_run=bool(config.getoption("release_dry_run")), run_id=run_id,
                          resume=bool(config.getoption("release_resume")))


def attach_config_value(early_config: pytest.Config) -> None:
    """Make `--release-config PATH` (with a space) mean what `--release-config=PATH` means.

    pytest chooses the root directory before it loads plugins from their entry points, so at that moment
    `--release-config` is an unknown option and PATH looks like a test path: a config file outside the
    project would move the root directory (and with it the ini file, the suites and the reports) to a
    common ancestor. Called from the first hook a plugin gets; the process runs again with the `=` form.
    """
    args = list(early_config.invocation_params.args)
    if "--release-config" not in args or hasattr(early_config, "workerinput"):
        return
    at = args.index("--release-config")
    if at + 1 >= len(args) or not os.path.exists(args[at + 1]):
        return  # a missing file is reported as such later, with the file's name
    rewritten = [*args[:at], f"--release-config={args[at + 1]}", *args[at + 2:]]
    original = list(sys.orig_argv)
    if args and original[-len(args):] == args:
        capture = early_config.pluginmanager.getplugin("capturemanager")
        if capture is not None:  # it holds file descriptors 1 and 2 by now: give them back first
            capture.stop_global_capturing()
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, *original[1:-len(args)], *rewritten])
    raise pytest.UsageError(f"--release-config {args[at + 1]}: pytest took the path for a test path when it "
                            f"chose the root directory; write --release-config={args[at + 1]}")
