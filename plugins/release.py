"""`pytest --release VERSION`: the plugin's entry point (pytest11), inert without `--release`.

Without `--release` this module adds its options and the `stage` marker and does nothing else, so
`pytest tests/` is plain pytest. With it, the release's hook objects are registered, each with one job:
collection (plugins/collection.py), running items and actions (plugins/runtime.py), the end of the run
(plugins/finish.py), the suites' fixtures (plugins/fixtures.py) and xdist scheduling (plugins/scheduler.py).
"""

from __future__ import annotations

import pytest

from releasegate.core.errors import ConfigError
from releasegate.plugins.options import add_options, attach_config_value

# The entry point registers this module as "releasegate"; the hook objects get names of their own.
PLUGIN_NAME = "releasegate-release"


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    attach_config_value(early_config)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from releasegate.plugins import hookspecs

    pluginmanager.add_hookspecs(hookspecs.ReleasegateHookspecs)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "stage(name): run this test in a release stage (smoke, load, analysis, "
                                       "post_switch)")
    config.addinivalue_line("markers", "load_may_overlap: this test's loads may run beside other loads marked "
                                       "the same (by default each load of a release runs alone on the machine)")
    version = config.getoption("release")
    if version is None:
        return
    from releasegate.plugins.collection import ReleaseCollection
    from releasegate.plugins.finish import ReleaseFinish
    from releasegate.plugins.fixtures import SuiteFixtures
    from releasegate.plugins.frozen_heap import FrozenHeap
    from releasegate.plugins.idle_plugins import IdlePlugins
    from releasegate.plugins.progress import PLUGIN_NAME as PROGRESS_PLUGIN_NAME
    from releasegate.plugins.progress import ReleaseProgress
    from releasegate.plugins.run import JUNIT_NAME, ReleaseRun
    from releasegate.plugins.runtime import ReleaseRuntime

    try:
        run = ReleaseRun.from_config(config, version)
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    runtime = ReleaseRuntime(run)
    register = config.pluginmanager.register
    register(FrozenHeap(), f"{PLUGIN_NAME}-frozen-heap")
    register(runtime, f"{PLUGIN_NAME}-runtime")
    register(ReleaseCollection(run, runtime), f"{PLUGIN_NAME}-collection")
    register(ReleaseFinish(run, runtime), f"{PLUGIN_NAME}-finish")
    register(SuiteFixtures(run.ledger, run.release_config), f"{PLUGIN_NAME}-fixtures")
    register(IdlePlugins(), f"{PLUGIN_NAME}-idle-plugins")
    register(ReleaseProgress(run), PROGRESS_PLUGIN_NAME)
    if config.pluginmanager.hasplugin("xdist") and not run.is_worker:
        from releasegate.plugins.scheduler import XdistControllerHooks

        register(XdistControllerHooks(run.options.run_id, run.ledger), f"{PLUGIN_NAME}-xdist")
    if run.is_worker:
        from releasegate.plugins.scheduler import XdistWorkerHooks

        register(XdistWorkerHooks(config.workerinput), f"{PLUGIN_NAME}-xdist-worker")  # type: ignore[attr-defined]
    if config.args_source is not pytest.Config.ArgsSource.ARGS:
        # No paths given: a release runs the suites, never the project's own tests (testpaths).
        config.args[:] = [str(run.suites_root)]
    if run.writes_reports and not getattr(config.option, "xmlpath", None):
        config.option.xmlpath = str(run.report_dir / JUNIT_NAME)
