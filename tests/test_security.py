"""Security (issue 11, item 6): no credential leaves the process, hostile values cannot rewrite a query or a
label selector, no shell, and the local cluster's admin API answers only the holder of its run directory's token.

The redaction test that the issue asks for is `test_a_kubernetes_release_leaks_no_token_and_no_password`:
a whole release on the fake API server, authenticated by a kubeconfig bearer token, with Prometheus behind a
basic-auth proxy whose URL carries `user:password@`, pytest's log capture at DEBUG and every captured log in
the JUnit. Afterwards neither secret (nor the base64 of the basic-auth pair) appears in any file of the
project (reports, JUnit, release report .md/.json, logs) nor in the run's stdout or stderr, while the proxy
saw every Prometheus request authenticated and the fake API server every request made as the token's user.
Its twin with an unreachable Prometheus covers the error path: the URL is shown, as `releaser:***@`.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import stat
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from releasegate.core import redact as redact_module
from releasegate.core.config import parse_config
from releasegate.core.errors import ConfigError, ExitCode
from releasegate.core.redact import MASK, redact, redact_tree, redact_url, remember_secret, split_credentials
from releasegate.core.types import MetricsScope, label_selector, promql_string
from releasegate.targets.kubernetes.connect import api_client
from releasegate.targets.local.client import LocalClusterClient, start_cluster, stop_process
from releasegate.targets.local.cluster import ADMIN_TOKEN_FILE, LocalCluster
from releasegate.targets.local.procs import free_port
from releasegate.verifiers.metrics import Metrics
from releasegate.verifiers.prometheus_client import PrometheusClient, PrometheusMalformed, PrometheusUnreachable
from tests.kube_cluster import ProcessCluster, process_cluster
from tests.local_cluster import PROJECT_ROOT, TEST_PROFILES, local_config
from tests.release_project import ReleaseProject, copy_shipped_suites
from tests.test_release_suites import FAST_VARS, QUICK_SLOS

BEARER_TOKEN = "kube-bearer-7f3a9c2e51d84b06"  # the kubeconfig's token; the fake API server maps it to a user
TOKEN_USER = "release-bot"
PROM_USER, PROM_PASSWORD = "releaser", "pr0m-s3cret-4d9e"
BASIC_PAIR = base64.b64encode(f"{PROM_USER}:{PROM_PASSWORD}".encode()).decode()
SECRETS = (BEARER_TOKEN, PROM_PASSWORD, BASIC_PAIR)
HOSTILE_VALUES = ['v2"} or vector(1)', "v2\nfoo", "blue,app!=demo", 'v2"}', "v2 ", "", "a" * 64, "v2\\"]


# -- the redaction function ----------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def nothing_remembered_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no remembered secret: a kubeconfig another test of this worker loaded (the fake
    API server's `admin-token`) would otherwise mask that word in these tests' expected text."""
    monkeypatch.setattr(redact_module, "_remembered", set())


@pytest.mark.parametrize(("text", "expected"), [
    ("Prometheus at http://user:s3cret@10.0.0.1:9090/x is down",
     "Prometheus at http://user:***@10.0.0.1:9090/x is down"),
    ("clone https://ghp_0123456789@github.com/a/b", "clone https://***@github.com/a/b"),
    ("Authorization: Bearer eyJhbGciOi.x.y", "Authorization: Bearer ***"),
    ("{'authorization': 'Basic dXNlcjpwYXNz', 'accept': 'json'}", "{'authorization': 'Basic ***', 'accept': 'json'}"),
    ('"Proxy-Authorization": "abc123"', '"Proxy-Authorization": "***"'),
    ("curl -H 'bearer abcdefgh' http://x", "curl -H 'bearer ***' http://x"),
    ("GET /login?user=a&password=hunter2&next=/", "GET /login?user=a&password=***&next=/"),
    ("users: [{user: {token: abc.def}}]", "users: [{user: {token: ***}}]"),
    ('{"client-key-data": "LS0tLS1CRUdJTi"}', '{"client-key-data": "***"}'),
    ("access_token=zzz;", "access_token=***;"),
    # What must stay as it is: URLs without userinfo, queries, durations, ordinary prose about tokens.
    ("http://127.0.0.1:9090/api/v1/query?query=up", "http://127.0.0.1:9090/api/v1/query?query=up"),
    ('sum(rate(http_requests_total{app="demo",handler=~"/api/.*"}[30s]))',
     'sum(rate(http_requests_total{app="demo",handler=~"/api/.*"}[30s]))'),
    ("the admin API needs the token in admin-token", "the admin API needs the token in admin-token"),
])
def test_redact_masks_credentials_and_keeps_the_rest(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_a_remembered_secret_is_masked_wherever_it_appears() -> None:
    remember_secret("opaque-5ecret-value")
    remember_secret("short")  # too short to mask everywhere: it would eat ordinary words
    assert redact("ApiException: token opaque-5ecret-value rejected; short") == \
        "ApiException: token *** rejected; short"
    tree = redact_tree({"a": ["x opaque-5ecret-value", ("http://u:p4ss@h",)], "n": 3})
    assert tree == {"a": ["x ***", ("http://u:***@h",)], "n": 3}


def test_split_credentials_takes_the_userinfo_out_of_the_url() -> None:
    assert split_credentials("http://us%40er:p%3Ass@[::1]:9090/prom?x=1") == ("http://[::1]:9090/prom?x=1",
                                                                             ("us@er", "p:ss"))
    assert split_credentials("https://prom.example.com") == ("https://prom.example.com", None)
    assert redact_url("http://us%40er:p%3Ass@[::1]:9090/prom") == "http://us%40er:***@[::1]:9090/prom"


def test_the_kubeconfig_token_is_masked_once_the_client_is_built(tmp_path: Path) -> None:
    token = "kubeconfig-only-token-91c2d7"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:1'}}]\n"
        f"users: [{{name: u, user: {{token: {token}}}}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n")
    config = parse_config({"kubernetes": {"kubeconfig": str(kubeconfig)}}, source="test", base_dir=tmp_path,
                          project_root=tmp_path)
    api_client(config).close()
    assert redact(f"ApiException: 401 for a request with the token {token}") == \
        "ApiException: 401 for a request with the token ***"


# -- Prometheus behind basic auth -----------------------------------------------------------------------------
class BasicAuthProxy:
    """A loopback HTTP server that answers only requests carrying the expected basic-auth pair.

    `answer(path)` gives (status, content type, body) for an authorized request; without the pair it is 401.
    """

    def __init__(self, answer: Callable[[str, str], tuple[int, str, bytes]]) -> None:
        self.authorized = 0
        self.refused = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                given = self.headers.get("Authorization", "")
                if given == f"Basic {BASIC_PAIR}":
                    proxy.authorized += 1
                    status, content_type, body = answer(self.path, given)
                else:
                    proxy.refused += 1
                    status, content_type, body = 401, "text/plain", b"unauthorized"
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # not on the test's stderr

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="basic-auth proxy", daemon=True)

    def url(self, user: str = PROM_USER, password: str = PROM_PASSWORD) -> str:
        return f"http://{user}:{password}@127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> BasicAuthProxy:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def forward_to(upstream: str) -> Callable[[str, str], tuple[int, str, bytes]]:
    def answer(path: str, _authorization: str) -> tuple[int, str, bytes]:
        response = httpx.get(upstream + path, timeout=10, trust_env=False)
        return response.status_code, response.headers.get("content-type", "application/json"), response.content

    return answer


SCALAR_ONE = b'{"status":"success","data":{"resultType":"scalar","result":[1700000000,"1"]}}'


def test_the_prometheus_client_sends_basic_auth_and_never_shows_the_password(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # httpx and httpcore log every request at INFO and DEBUG
    with BasicAuthProxy(lambda path, _: (200, "application/json", SCALAR_ONE)) as proxy, \
            PrometheusClient(proxy.url(), timeout_s=5) as prometheus:
        assert prometheus.query("1") == [{"metric": {}, "value": (1700000000.0, "1")}]
        assert prometheus.url == f"http://{PROM_USER}:{MASK}@127.0.0.1:{proxy.server.server_address[1]}"
    with BasicAuthProxy(lambda path, _: (200, "application/json", SCALAR_ONE)) as proxy, \
            PrometheusClient(proxy.url(password="wrong-password"), timeout_s=5) as prometheus, \
            pytest.raises(PrometheusMalformed) as refused:
        prometheus.query("1")
    assert proxy.refused == 1 and "HTTP 401" in str(refused.value)
    assert "wrong-password" not in str(refused.value) and f"{PROM_USER}:{MASK}@" in str(refused.value)
    assert PROM_PASSWORD not in caplog.text and BASIC_PAIR not in caplog.text
    assert "HTTP Request: GET http://127.0.0.1:" in caplog.text  # the log line is there, without userinfo


def test_a_page_that_echoes_the_credentials_is_redacted_in_the_error() -> None:
    """A proxy's error page may quote what it was sent; the message quotes the page."""
    def echo(path: str, authorization: str) -> tuple[int, str, bytes]:
        return 502, "text/html", f"<p>{authorization} = {PROM_USER}:{PROM_PASSWORD}</p>".encode()

    with BasicAuthProxy(echo) as proxy, PrometheusClient(proxy.url(), timeout_s=5) as prometheus, \
            pytest.raises(PrometheusMalformed) as caught:
        prometheus.query("1")
    message = str(caught.value)
    assert "HTTP 502" in message and all(secret not in message for secret in SECRETS)
    assert all(secret not in caught.value.reason for secret in SECRETS)


def test_an_unreachable_prometheus_is_named_without_its_password() -> None:
    url = f"http://{PROM_USER}:{PROM_PASSWORD}@127.0.0.1:{free_port()}"
    with PrometheusClient(url, timeout_s=2) as prometheus, pytest.raises(PrometheusUnreachable) as caught:
        prometheus.check_reachable()
    assert f"Prometheus at http://{PROM_USER}:{MASK}@127.0.0.1:" in str(caught.value)
    assert PROM_PASSWORD not in str(caught.value) and PROM_PASSWORD not in caught.value.url
    with Metrics(MetricsScope(url, "demo"), timeout_s=2) as metrics:  # the no-data messages name it too
        assert PROM_PASSWORD not in metrics._no_data(None, "v2", "/api/.*", "30s")


# -- hostile values in PromQL and label selectors ---------------------------------------------------------------
@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_a_hostile_version_or_slot_never_enters_a_promql_selector(value: str) -> None:
    scope = MetricsScope("http://127.0.0.1:9090", "demo")
    with pytest.raises(ConfigError, match="is not a valid label value") as caught:
        scope.selector(version=value)
    assert caught.value.exit_code == ExitCode.USAGE_ERROR
    with pytest.raises(ConfigError, match="is not a valid label value"):
        scope.selector(slot=value)
    with pytest.raises(ConfigError, match=r"app\.name"):
        MetricsScope("http://127.0.0.1:9090", value)
    with Metrics(scope, timeout_s=1) as metrics, pytest.raises(ConfigError):
        metrics.render("sum(up{ {{ selector }} })", window_s=30, version=value)


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_a_hostile_value_never_enters_a_kubernetes_label_selector(value: str) -> None:
    with pytest.raises(ConfigError, match="is not a valid label value"):
        label_selector({"app": "demo", "slot": value})
    assert label_selector({"app.kubernetes.io/name": "demo", "slot": "blue"}) == "app.kubernetes.io/name=demo,slot=blue"


@pytest.mark.parametrize("label", ['app="x"', "slot,app!=demo", "sl ot", "slot=blue", "a/b/c", ""])
def test_a_hostile_label_name_is_a_config_error(label: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"prometheus\.slot_label"):
        MetricsScope("http://127.0.0.1:9090", "demo", slot_label=label)
    with pytest.raises(ConfigError, match=r"prometheus\.version_label .* not a Prometheus label name"):
        MetricsScope("http://127.0.0.1:9090", "demo", version_label="1" + label)
    # The config loader refuses it when the file is read, before any client exists.
    with pytest.raises(ConfigError, match=r"kubernetes\.slot_label .* is not a Kubernetes label key"):
        parse_config({"kubernetes": {"slot_label": label, "kubeconfig": str(tmp_path / "none")}},
                     source="test", base_dir=tmp_path, project_root=tmp_path)
    # api_client checks again, for a Config made in code (model_copy skips the loader's validation).
    config = parse_config({"kubernetes": {"kubeconfig": str(tmp_path / "none")}}, source="test",
                          base_dir=tmp_path, project_root=tmp_path)
    unchecked = config.model_copy(update={"kubernetes": config.kubernetes.model_copy(update={"slot_label": label})})
    with pytest.raises(ConfigError, match=r"kubernetes\.slot_label .* is not a Kubernetes label key"):
        api_client(unchecked)  # before the kubeconfig is even read


def test_matcher_values_and_handler_regexes_are_escaped_as_promql_strings() -> None:
    assert promql_string('a\\b"c\nd\te') == 'a\\\\b\\"c\\nd\\te'
    with Metrics(MetricsScope("http://127.0.0.1:9090", "demo"), timeout_s=1) as metrics:
        series = metrics._series("http_requests_total", None, "v2", '/api/"x"\n|/a\\.b')
        assert series == ('http_requests_total{app="demo",version="v2",handler=~"/api/\\"x\\"\\n|/a\\\\.b"}')
        with pytest.raises(ConfigError, match=r"handler_regex '/api/\(' is not a regular expression"):
            metrics._series("http_requests_total", None, "v2", "/api/(")


# -- no shell ------------------------------------------------------------------------------------------------
def test_no_code_runs_a_shell() -> None:
    """No subprocess call with a shell, no os.system or os.popen anywhere: every command is an argv list, so
    no value is ever parsed by a shell."""
    shell_true = "shell" + "=True"  # spelled apart, so this file does not find itself
    pattern = re.compile(rf"{shell_true}|\bos\.(system|popen)\(")
    folders = ("core", "plugins", "verifiers", "targets", "demo", "bench", "scripts", "tests", "suites", "charts")
    files = [path for folder in folders for path in (PROJECT_ROOT / folder).rglob("*.py")]
    files += list(PROJECT_ROOT.glob("*.py"))
    assert len(files) > 100  # the scan saw the code
    found = [f"{path.relative_to(PROJECT_ROOT)}:{number}" for path in files
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert found == []


# -- the local cluster's admin API ---------------------------------------------------------------------------
ADMIN_CHANGES = [("POST", "/traffic", {"weights": {"green": 100}}), ("POST", "/slots/green", {"version": "v9"}),
                 ("DELETE", "/slots/green", None), ("POST", "/slots/blue/scale", {"replicas": 0}),
                 ("PUT", "/release-state", {"phase": "promoted"}),
                 ("POST", "/lease/acquire", {"holder": "x", "ttl_s": 60}), ("POST", "/lease/release", {"holder": "x"}),
                 ("POST", "/shutdown", None), ("GET", "/state", None), ("GET", "/healthz", None)]


def test_the_admin_api_refuses_every_request_without_the_token_and_changes_nothing(tmp_path: Path) -> None:
    cluster = LocalCluster(local_config(tmp_path), tmp_path, persistent=False)
    before = cluster.state()

    async def calls(headers: dict[str, str]) -> list[int]:
        transport = httpx.ASGITransport(app=cluster.admin_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://admin", headers=headers) as admin:
            return [(await admin.request(method, path, json=body)).status_code for method, path, body in ADMIN_CHANGES]

    assert asyncio.run(calls({})) == [401] * len(ADMIN_CHANGES)
    wrong = {"Authorization": f"Bearer {cluster.admin_token[:-1]}x"}
    assert asyncio.run(calls(wrong)) == [403] * len(ADMIN_CHANGES)
    assert asyncio.run(calls({"Authorization": cluster.admin_token})) == [403] * len(ADMIN_CHANGES)  # no scheme
    assert cluster.state() == before and cluster.lease is None and cluster.release_state is None
    assert not cluster._stopped.is_set()

    async def metrics() -> int:  # Prometheus scrapes it without a token; it only reads counters
        transport = httpx.ASGITransport(app=cluster.admin_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://admin") as admin:
            return (await admin.get("/metrics")).status_code

    assert asyncio.run(metrics()) == 200


def listening_addresses(port: int) -> list[str]:
    """The local addresses (hex, as the kernel prints them) of the TCP sockets listening on `port`."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table, encoding="ascii") as lines:
            for line in list(lines)[1:]:
                local, _remote, state = line.split()[1:4]
                address, hex_port = local.split(":")
                if int(hex_port, 16) == port and state == "0A":  # 0A: LISTEN
                    found.append(address)
    return found


@pytest.fixture
def empty_cluster(tmp_path: Path) -> Iterator[LocalClusterClient]:
    """A real cluster process with no pods and no Prometheus of its own: starts in about a second."""
    config = parse_config({"local": {"run_dir": str(tmp_path / "run"), "initial_version": ""},
                           "prometheus": {"url": f"http://127.0.0.1:{free_port()}"}},
                          source="test config", base_dir=tmp_path, project_root=tmp_path)
    client, process = start_cluster(config, persistent=False)
    try:
        yield client
    finally:
        client.close()
        stop_process(process.pid)


def test_the_admin_api_listens_on_loopback_behind_a_private_run_directory_token(
        empty_cluster: LocalClusterClient) -> None:
    state = empty_cluster.state()
    port = int(state["admin_url"].rsplit(":", 1)[1])
    assert state["admin_url"] == f"http://127.0.0.1:{port}"
    assert listening_addresses(port) == ["0100007F"]  # 127.0.0.1, and no other address
    token_file = empty_cluster.run_dir / ADMIN_TOKEN_FILE
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text()
    assert len(token) >= 40 and token not in (empty_cluster.run_dir / "state.json").read_text()

    with httpx.Client(base_url=state["admin_url"], timeout=5, trust_env=False) as raw:
        lease = {"holder": "intruder", "ttl_s": 600}
        assert raw.post("/lease/acquire", json=lease).status_code == 401
        assert raw.post("/lease/acquire", json=lease, headers={"Authorization": "Bearer guess"}).status_code == 403
        assert raw.post("/shutdown", headers={"Authorization": "Bearer guess"}).status_code == 403
    assert empty_cluster.state()["lease"] is None and empty_cluster.state()["status"] == "running"
    # The client reads the token from the run directory, as every process of a release does.
    assert empty_cluster.call("POST", "/lease/acquire", {"holder": "run-a", "ttl_s": 60})["holder"] == "run-a"
    assert empty_cluster.state()["lease"]["holder"] == "run-a"


# -- whole releases: the redaction test ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def secret_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ProcessCluster, BasicAuthProxy]]:
    """The shop app at v1 on the fake API server, reached with a bearer-token kubeconfig; Prometheus behind a
    basic-auth proxy."""
    workdir = tmp_path_factory.mktemp("secret-cluster")
    profiles = workdir / "profiles.toml"
    profiles.write_text(TEST_PROFILES)
    with process_cluster(workdir, profiles=profiles, namespace="shop", app="demo") as cluster, \
            BasicAuthProxy(forward_to(cluster.proxy.prometheus_url)) as proxy:
        cluster.fake.authorizer.tokens[BEARER_TOKEN] = TOKEN_USER  # no RBAC set: every user may do anything
        cluster.kubeconfig = cluster.fake.write_kubeconfig(workdir / "token-kubeconfig", namespace="shop",
                                                           token=BEARER_TOKEN)
        yield cluster, proxy


def secret_project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, cluster: ProcessCluster,
                   prometheus_url: str) -> ReleaseProject:
    project = ReleaseProject(pytester, monkeypatch)
    copy_shipped_suites(project.path / "suites")
    # Smoke, the locust load and the Prometheus SLO checks (queries, sources and windows in the JUnit); the
    # comparison and the post-switch load would add 40 s and no new kind of output.
    (project.path / "suites" / "analysis" / "test_compare.py").unlink()
    project.write_suite("post_switch/test_service.py", """
        import httpx

        def test_the_service_serves_the_candidate(service, release):
            served = httpx.get(service.url + "/version", timeout=5, trust_env=False).headers["X-App-Version"]
            assert served == release.version
    """)
    config = cluster.config_toml() + FAST_VARS.format(post_switch_s=2) + QUICK_SLOS
    config = config.replace(f'url = "{cluster.proxy.prometheus_url}"', f'url = "{prometheus_url}"')
    assert prometheus_url in config
    (project.path / "releasegate.toml").write_text(config)
    return project


def leaks(project: ReleaseProject, result: pytest.RunResult) -> list[str]:
    """Where a secret appears: every file of the project and the run's stdout and stderr, but the config and
    the private state the release's processes share (mode 0600, as the config's Prometheus URL must reach
    every xdist worker): the reports, the JUnit, the logs and the item records all count."""
    texts = {"stdout": result.stdout.str(), "stderr": result.stderr.str()}
    for path in project.path.rglob("*"):
        if not path.is_file() or path.name == "releasegate.toml":
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        private = ".releasegate" in path.parts and stat.S_IMODE(path.stat().st_mode) == 0o600
        if not (private and path.name == "context.json"):
            texts[str(path.relative_to(project.path))] = text
    return [f"{secret[:6]}... in {where}" for where, text in texts.items() for secret in SECRETS if secret in text]


RELEASE_LOGGING = ("-o", "log_level=DEBUG", "-o", "junit_logging=all")  # every client's log into the JUnit


@pytest.mark.slow
def test_a_kubernetes_release_leaks_no_token_and_no_password(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
        secret_cluster: tuple[ProcessCluster, BasicAuthProxy]) -> None:
    cluster, proxy = secret_cluster
    project = secret_project(pytester, monkeypatch, cluster, proxy.url())
    cluster.fake.clear_requests()
    proxy.authorized = proxy.refused = 0
    result = project.release("--release", "v2", *RELEASE_LOGGING)
    assert result.ret == 0, result.stdout.str()
    assert project.junit().suite_properties["release.decision"] == "promoted"
    # The secrets were used: every API request authenticated as the token's user, every Prometheus request
    # carried the basic-auth pair.
    users = {request.user for request in cluster.fake.requests}
    assert users == {TOKEN_USER}, users
    assert proxy.authorized >= 5 and proxy.refused == 0  # reachability, scrape wait, SLO and comparison queries
    files = sorted(str(p.relative_to(project.path)) for p in project.path.rglob("*") if p.is_file())
    assert any(name.endswith("junit.xml") for name in files) and any(name.endswith(".md") for name in files)
    assert "DEBUG" in (project.path / "reports" / "latest" / "junit.xml").read_text()  # logs were captured
    assert leaks(project, result) == []
    print(f"\nredaction: {len(files)} files and stdout/stderr searched for 3 secrets, 0 hits; "
          f"{len(cluster.fake.requests)} API requests as {TOKEN_USER}, {proxy.authorized} Prometheus requests "
          "with basic auth")


@pytest.mark.slow
def test_an_unreachable_prometheus_with_credentials_is_named_without_them(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
        secret_cluster: tuple[ProcessCluster, BasicAuthProxy]) -> None:
    cluster, _ = secret_cluster
    port = free_port()
    project = secret_project(pytester, monkeypatch, cluster, f"http://{PROM_USER}:{PROM_PASSWORD}@127.0.0.1:{port}")
    cluster.fake.clear_requests()
    result = project.release("--release", "v3", *RELEASE_LOGGING)  # v2 may be live already
    assert result.ret == ExitCode.USAGE_ERROR, result.stdout.str()
    shown = f"Prometheus at http://{PROM_USER}:{MASK}@127.0.0.1:{port} is unreachable"
    assert shown in result.stdout.str() + result.stderr.str()
    report = (project.path / "reports" / "latest" / "release-report.md").read_text()
    assert shown in report and shown in project.junit().suite_properties["release.reason"]
    assert not cluster.fake.write_requests()  # nothing touched
    assert leaks(project, result) == []
