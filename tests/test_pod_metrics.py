"""The local cluster's pods scraped through one stable target: every pod's /metrics merged into one
exposition (targets/local/pod_metrics.py), and a real cluster's real Prometheus reading it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from releasegate.core.config import PrometheusConfig
from releasegate.core.errors import ConfigError
from releasegate.core.types import MetricsScope, Role
from releasegate.plugins.prometheus_gate import LivePrometheusGate
from releasegate.targets.local.pod_metrics import POD_UP_METRIC, PodScrape, merge_expositions
from releasegate.targets.local.target import LocalTarget
from releasegate.verifiers.metrics import Metrics
from tests.local_cluster import TEST_PROFILES, local_config
from tests.waiting import wait_until

# As the demo writes it (prometheus_client's text format): a counter with its separate `_created` gauge,
# a histogram, an info gauge that carries pod and version itself, and a gauge without labels.
DEMO_LIKE = """\
# HELP http_requests_total Total number of requests by method, status and handler.
# TYPE http_requests_total counter
http_requests_total{handler="/api/items",method="GET",status="2xx"} {requests}
http_requests_total{handler="/readyz",method="GET",status="2xx"} 1.0
# HELP http_requests_created Total number of requests by method, status and handler.
# TYPE http_requests_created gauge
http_requests_created{handler="/api/items",method="GET",status="2xx"} 1.7964007071e+09
# HELP http_request_duration_seconds Latency of the requests.
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{handler="/api/items",le="0.1"} 3.0
http_request_duration_seconds_bucket{handler="/api/items",le="+Inf"} 4.0
http_request_duration_seconds_count{handler="/api/items"} 4.0
http_request_duration_seconds_sum{handler="/api/items"} 0.25
# HELP demo_app_info Version, pod and behaviour profile of this instance.
# TYPE demo_app_info gauge
demo_app_info{pod="{pod}",profile="defaults",version="v2"} 1.0
# HELP process_open_fds Number of open file descriptors.
# TYPE process_open_fds gauge
process_open_fds 11.0
"""


def pod_labels(pod: str, version: str = "v2") -> dict[str, str]:
    return {"app": "demo", "slot": "green", "version": version, "pod": pod}


def demo_like(pod: str, requests: int) -> str:
    return DEMO_LIKE.replace("{pod}", pod).replace("{requests}", f"{requests}.0")


def parsed(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], tuple[float, float | None]]:
    """The exposition as prometheus_client reads it: (name, labels) -> (value, timestamp); each family once."""
    families = list(text_string_to_metric_families(text))
    names = [family.name for family in families]
    assert len(names) == len(set(names)), f"a family split in two places: {names}"
    samples = [sample for family in families for sample in family.samples]
    keys = [(sample.name, frozenset(sample.labels.items())) for sample in samples]
    assert len(keys) == len(set(keys)), "a series twice"
    return {key: (float(s.value), None if s.timestamp is None else float(s.timestamp))
            for key, s in zip(keys, samples, strict=True)}


def series(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def assert_prometheus_parses(text: str) -> None:
    """Prometheus's own parser (promtool, beside the `prometheus` binary) finds no error in `text`.

    promtool also lints names and help texts; those remarks are not errors of the format.
    """
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (installed with Prometheus) is not on PATH")
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert "parsing error" not in checked.stdout + checked.stderr, checked.stdout + checked.stderr


def type_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("# TYPE ")]


# -- merging ------------------------------------------------------------------------------------------------

def test_each_family_comes_once_with_the_samples_of_every_pod_labelled_as_its_target() -> None:
    merged = merge_expositions([PodScrape(pod_labels("demo-green-1-0"), demo_like("demo-green-1-0", 7)),
                                PodScrape(pod_labels("demo-green-1-1"), demo_like("demo-green-1-1", 5))])
    assert_prometheus_parses(merged)
    types = type_lines(merged)
    assert len(types) == len(set(types)) == 6  # pod up, and the five families of the pods
    samples = parsed(merged)
    for pod, requests in (("demo-green-1-0", 7.0), ("demo-green-1-1", 5.0)):
        target = pod_labels(pod)
        assert samples[series("http_requests_total", handler="/api/items", method="GET", status="2xx",
                              **target)] == (requests, None)
        assert samples[series("http_request_duration_seconds_bucket", handler="/api/items", le="+Inf",
                              **target)] == (4.0, None)
        assert samples[series("process_open_fds", **target)] == (11.0, None)  # a sample without labels
        assert samples[series(POD_UP_METRIC, **target)] == (1.0, None)
    assert len(samples) == 2 * (9 + 1)  # nine samples and a pod up of each pod


def test_a_label_the_sample_has_already_is_not_added_twice() -> None:
    pod = "demo-green-1-0"
    merged = merge_expositions([PodScrape(pod_labels(pod), demo_like(pod, 1))])
    info = [line for line in merged.splitlines() if line.startswith("demo_app_info")]
    assert len(info) == 1 and info[0].count("pod=") == 1 and info[0].count("version=") == 1, info
    assert series("demo_app_info", profile="defaults", **pod_labels(pod)) in parsed(merged)


def test_a_label_that_disagrees_with_the_target_is_kept_as_exported_like_prometheus_does() -> None:
    # The cluster deployed the pod as v2; the app says v1 (as Prometheus renames a clashing scraped label).
    merged = merge_expositions([PodScrape(pod_labels("p"), 'build_info{version="v1"} 1\n')])
    assert series("build_info", exported_version="v1", **pod_labels("p")) in parsed(merged)


def test_label_values_with_braces_commas_and_escaped_quotes_and_timestamps_are_kept() -> None:
    text = ('# HELP odd_total Odd label values.\n# TYPE odd_total counter\n'
            'odd_total{path="/a}b,c=d",quote="say \\"hi\\", \\\\ \\n",} 3 1700000000000\n'
            'plain_seconds 0.5 -1000\n')
    merged = merge_expositions([PodScrape(pod_labels("p"), text)])
    assert_prometheus_parses(merged)
    samples = parsed(merged)
    assert samples[series("odd_total", path="/a}b,c=d", quote='say "hi", \\ \n', **pod_labels("p"))] == \
        (3.0, 1700000000.0)
    assert samples[series("plain_seconds", **pod_labels("p"))] == (0.5, -1.0)


def test_the_targets_label_values_are_escaped() -> None:
    odd = {"app": "demo", "slot": "green", "version": 'v"2\\', "pod": "p\n0"}
    merged = merge_expositions([PodScrape(odd, "plain 1\n")])
    assert_prometheus_parses(merged)
    assert set(parsed(merged)) == {series("plain", **odd), series(POD_UP_METRIC, **odd)}


def test_a_pod_that_did_not_answer_has_only_its_pod_up_at_zero() -> None:
    merged = merge_expositions([PodScrape(pod_labels("starting"), None),
                                PodScrape(pod_labels("serving"), demo_like("serving", 3))])
    assert_prometheus_parses(merged)
    samples = parsed(merged)
    starting = {key: value for key, value in samples.items() if ("pod", "starting") in key[1]}
    assert starting == {series(POD_UP_METRIC, **pod_labels("starting")): (0.0, None)}
    assert samples[series(POD_UP_METRIC, **pod_labels("serving"))] == (1.0, None)
    assert len(samples) == 2 + 9


@pytest.mark.parametrize("garbled", [
    "<html>not metrics</html>",
    'x{a="unterminated} 1',
    'x{a="1" 2',
    "x{a=1} 2",
    'x{a="1",a="2"} 3',
    "x{a=\"1\"}",
    "x 1 2 3",
    "x one",
    "x-y 1",
    "x 1 1.5",
    "# TYPE x counter\n# TYPE x counter\nx_total 1",
    "# TYPE x counting\nx 1",
])
def test_a_pod_that_answers_no_exposition_is_down_and_spoils_no_other_pod(garbled: str) -> None:
    merged = merge_expositions([PodScrape(pod_labels("garbled"), garbled),
                                PodScrape(pod_labels("serving"), demo_like("serving", 3))])
    assert_prometheus_parses(merged)
    samples = parsed(merged)
    assert samples[series(POD_UP_METRIC, **pod_labels("garbled"))] == (0.0, None)
    assert [key for key in samples if ("pod", "garbled") in key[1]] == [series(POD_UP_METRIC, **pod_labels("garbled"))]
    assert samples[series(POD_UP_METRIC, **pod_labels("serving"))] == (1.0, None)


def test_pods_that_disagree_on_a_familys_type_keep_the_first_and_one_type_line() -> None:
    merged = merge_expositions([PodScrape(pod_labels("a"), "# TYPE jobs gauge\njobs 1\n"),
                                PodScrape(pod_labels("b"), "# TYPE jobs counter\njobs 2\n"),
                                PodScrape(pod_labels("c"), "jobs 3\n")])  # no TYPE: fits any
    assert_prometheus_parses(merged)
    assert [line for line in type_lines(merged) if " jobs " in line] == ["# TYPE jobs gauge"]
    assert {key: value for key, value in parsed(merged).items() if key[0] == "jobs"} == {
        series("jobs", **pod_labels("a")): (1.0, None), series("jobs", **pod_labels("c")): (3.0, None)}


def test_samples_of_a_family_are_grouped_by_the_type_line_before_them() -> None:
    # `_created` after a counter's samples is a family of its own here only when a TYPE line says so.
    text = "# TYPE jobs counter\njobs_total 4\njobs_created 1.7e9\nunrelated 2\n"
    merged = merge_expositions([PodScrape(pod_labels("a"), text), PodScrape(pod_labels("b"), text)])
    assert_prometheus_parses(merged)
    lines = merged.splitlines()
    start = lines.index("# TYPE jobs counter")
    assert [line.split("{")[0] for line in lines[start + 1:start + 5]] == ["jobs_total", "jobs_created"] * 2
    assert [line.split("{")[0] for line in lines[start + 5:]] == ["unrelated", "unrelated"]


def test_a_pods_own_series_of_the_pod_up_name_is_left_out() -> None:
    merged = merge_expositions([PodScrape(pod_labels("a"), f"# TYPE {POD_UP_METRIC} gauge\n{POD_UP_METRIC} 0\n")])
    assert {key: value for key, value in parsed(merged).items()} == {
        series(POD_UP_METRIC, **pod_labels("a")): (1.0, None)}


def test_the_pod_up_metric_of_a_scope_must_be_a_metric_name() -> None:
    assert MetricsScope("http://127.0.0.1:9090", "demo").pod_up_metric == "up"
    with pytest.raises(ConfigError, match="is not a Prometheus metric name"):
        MetricsScope("http://127.0.0.1:9090", "demo", pod_up_metric="up} or vector(1) or up{")


# -- a real cluster and its real Prometheus -----------------------------------------------------------------

def prometheus_vector(url: str, promql: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5, trust_env=False).json()
    assert answer["status"] == "success", answer
    return list(answer["data"]["result"])


@pytest.mark.slow
def test_prometheus_scrapes_a_new_candidates_pods_through_the_clusters_stable_target(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles.toml"
    profiles.write_text(TEST_PROFILES)
    run_dir = tmp_path / "run"
    target = LocalTarget.open(local_config(run_dir, profiles=profiles, replicas=2))
    try:
        scope = target.metrics_scope()
        assert scope.pod_up_metric == POD_UP_METRIC
        # A cluster started by an older releasegate (file discovery, one target per pod) says nothing: `up`.
        state = target.client.state()
        with mock.patch.object(target.client, "state", return_value={k: v for k, v in state.items()
                                                                        if k != "pod_up_metric"}):
            assert target.metrics_scope().pod_up_metric == "up"
        url = scope.prometheus_url
        target.deploy("green", "v2")
        status = target.wait_ready("green", 20)
        pods = {pod["name"] for pod in target.client.state()["slots"]["green"]["pods"]}
        assert status.ready_replicas == len(pods) == 2
        # What provision waits for: every candidate pod scraped (no discovery on the way, no pods.json).
        LivePrometheusGate(PrometheusConfig(timeout_s=5, discovery_timeout_s=30)).wait_until_scraped(
            scope, "v2", status.ready_replicas)
        up = 'count(releasegate_pod_up{app="demo",version="v2"} == 1)'  # what the gate asked
        wait_until(lambda: [float(r["value"][1]) for r in prometheus_vector(url, up)] == [2.0], timeout_s=30,
                   what=f"{up} to be 2", interval_s=0.2)
        assert not (run_dir / "prometheus" / "pods.json").exists()
        targets = httpx.get(f"{url}/api/v1/targets", params={"state": "active"}, timeout=5, trust_env=False).json()
        scraped = [(t["health"], t["lastError"]) for t in targets["data"]["activeTargets"]
                   if t["labels"]["job"] == "pods"]
        assert scraped == [("up", "")]  # one target for all pods, whose answer Prometheus parsed

        requests = prometheus_vector(url, 'http_requests_total{app="demo",slot="green",version="v2"}')
        assert {str(r["metric"]["pod"]) for r in requests} == pods

        # The window counting of a canary step on that target: whole requests, none before `since`.
        candidate = target.endpoints("green")[Role.CANDIDATE].url
        with Metrics(scope, timeout_s=5) as metrics, httpx.Client(timeout=5, trust_env=False) as client:
            since = metrics.wait_scraped_after(time.time(), timeout_s=30)
            for _ in range(20):
                assert client.get(f"{candidate}/api/items").status_code == 200
            until = metrics.wait_scraped_after(time.time(), timeout_s=30)
            assert metrics.requests_between(version="v2", since=since, until=until).samples == 20

            # A stopped pod answers nothing: it is down (0) at the next scrapes, the other one stays up.
            stopped = target.client.state()["slots"]["green"]["pods"][0]
            os.kill(int(stopped["pid"]), signal.SIGSTOP)
            try:
                pod_up = f'releasegate_pod_up{{app="demo",pod="{stopped["name"]}"}}'
                wait_until(lambda: [float(r["value"][1]) for r in prometheus_vector(url, pod_up)] == [0.0],
                           timeout_s=30, what=f"{pod_up} to be 0", interval_s=0.2)
                # Polled: on a busy machine the other pod may miss one scrape's deadline too.
                wait_until(lambda: metrics.targets_up(version="v2") == 1, timeout_s=30,
                           what="one v2 pod up", interval_s=0.2)
            finally:
                os.kill(int(stopped["pid"]), signal.SIGCONT)
            # Removed pods leave the exposition, and Prometheus marks their series stale at once.
            target.remove("green")
            wait_until(lambda: prometheus_vector(url, 'releasegate_pod_up{app="demo",version="v2"}') == [],
                       timeout_s=30, what="the removed pods' releasegate_pod_up to go", interval_s=0.2)
            assert metrics.targets_up(version="v2") == 0
    finally:
        target.close()
