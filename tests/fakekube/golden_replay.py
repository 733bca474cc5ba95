"""Replay of the recorded v1.32 exchanges (``tests/k8s_golden/*.json``) against a FakeKube, with comparison.

The recording was one session against one cluster, file after file, so the replay uses one fake for all
files, in file order and recorded order, starting from the same state (base namespaces only, ``shop`` is
created by the first exchange of ``02``). Controllers run in manual mode and are settled before each
exchange, except where the recording caught an intermediate state on purpose (see ``STEPS``).

What differs legitimately between two servers (uids, resourceVersion values, timestamps, IPs, generated
name suffixes, build info) is compared by shape; everything else is compared exactly, including which keys
are absent. resourceVersions and uids in *requests* are translated: each golden value seen in a response
is mapped to the fake's value at the same point, so a "stale resourceVersion" stays stale and a uid
precondition names the right object.
"""

from __future__ import annotations

import http.client
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from .fake import FakeKube
from .seed import deployment

JsonObj = dict[str, Any]

TOKENS = {"admin-token": "admin", "norights-token": "releasegate-norights"}
USER_AGENT = "releasegate-golden/1.0"


GOLDEN_DIR = Path(__file__).resolve().parents[1] / "k8s_golden"


def golden_dir() -> Path:
    """The recordings from a real v1.32 API server, kept in the repository (tests/k8s_golden)."""
    return GOLDEN_DIR


@dataclass(frozen=True)
class Exchange:
    index: int
    file: str
    title: str
    request: JsonObj
    response: JsonObj
    note: str

    @property
    def id(self) -> str:
        slug = re.sub(r"[^A-Za-z0-9]+", "-", self.title).strip("-")[:70]
        return f"{self.file[:2]}-{self.index:03d}-{slug}"


def load_exchanges(directory: Path) -> list[Exchange]:
    out: list[Exchange] = []
    for path in sorted(directory.glob("*.json")):
        for item in json.loads(path.read_text()):
            out.append(
                Exchange(
                    len(out),
                    path.name,
                    item["title"],
                    item["request"],
                    item["response"],
                    item.get("note", ""),
                )
            )
    return out


# ------------------------------------------------------------------------------------------------------------
# normalisation: what may legitimately differ becomes a placeholder, everything else stays
# ------------------------------------------------------------------------------------------------------------

HASH = "[bcdfghjklmnpqrstvwxz2456789]"
UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
MICROTIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
SERVER_TIME_KEYS = {
    "creationTimestamp",
    "deletionTimestamp",
    "lastUpdateTime",
    "lastTransitionTime",
    "lastProbeTime",
    "startTime",
    "startedAt",
    "finishedAt",
    "firstTimestamp",
    "lastTimestamp",
}
SERVER_MICROTIME_KEYS = {"eventTime"}


def norm_text(text: str) -> str:
    text = re.sub(rf"\b(web-(?:blue|green|canary))-{HASH}{{6,10}}-[a-z0-9]{{5}}\b", r"\1-<hash>-<pod>", text)
    text = re.sub(rf"\b(web-(?:blue|green|canary))-{HASH}{{6,10}}\b", r"\1-<hash>", text)
    text = re.sub(r"kube-api-access-[a-z0-9]{5}", "kube-api-access-<gen>", text)
    text = re.sub(UUID_RE, "<uid>", text)
    text = re.sub(r"\b10\.244\.\d+\.\d+\b", "<pod-ip>", text)
    text = re.sub(r"\b10\.0\.0\.\d+\b", "<cluster-ip>", text)
    text = re.sub(r"^127\.0\.0\.1:\d+$", "<server-address>", text)
    text = re.sub(r"^too old resource version: (\d+) \(\d+\)$", r"too old resource version: \1 (<oldest>)", text)
    return re.sub(r"^default-scheduler-.+$", "default-scheduler-<host>", text)


def _norm_time(value: Any, pattern: re.Pattern[str], label: str) -> Any:
    if value is None:
        return None
    return label if isinstance(value, str) and pattern.match(value) else f"<bad {label}: {value!r}>"


def normalize(value: Any, key: str = "", parent: JsonObj | None = None) -> Any:
    if isinstance(value, dict):
        out: JsonObj = {}
        for k, v in value.items():
            out[k] = normalize(v, k, value)
        if isinstance(out.get("name"), str) and isinstance(value.get("generateName"), str):
            gen = normalize(value["generateName"])
            if isinstance(gen, str) and out["name"].startswith(gen.rstrip("<pod>")) and gen.endswith("-"):
                out["name"] = gen + "<gen>" if not out["name"].endswith("<pod>") else out["name"]
        return out
    if isinstance(value, list):
        return [normalize(v, key, parent) for v in value]
    if key in SERVER_TIME_KEYS:
        return _norm_time(value, TIME_RE, "<time>")
    if key in SERVER_MICROTIME_KEYS:
        return _norm_time(value, MICROTIME_RE, "<microtime>")
    if key == "endpoints.kubernetes.io/last-change-trigger-time":
        return _norm_time(value, TIME_RE, "<time>")
    if key == "resourceVersion":
        return "<rv>" if isinstance(value, str) and value.isdigit() else f"<bad rv: {value!r}>"
    if key == "pod-template-hash":
        return "<hash>" if isinstance(value, str) and re.fullmatch(f"{HASH}{{6,10}}", value) else value
    if key == "name" and isinstance(value, str) and re.fullmatch(r".+\.[0-9a-f]{12,16}", value):
        return norm_text(value.rsplit(".", 1)[0]) + ".<event-suffix>"
    if isinstance(value, str):
        return norm_text(value)
    return value


# ------------------------------------------------------------------------------------------------------------
# comparison
# ------------------------------------------------------------------------------------------------------------


class Mismatch(AssertionError):
    pass


def _sort_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def assert_same(golden: Any, actual: Any, path: str = "$") -> None:
    if isinstance(golden, dict):
        if not isinstance(actual, dict):
            raise Mismatch(f"{path}: expected an object, got {json.dumps(actual)[:300]}")
        missing = [k for k in golden if k not in actual]
        extra = [k for k in actual if k not in golden]
        if missing or extra:
            raise Mismatch(
                f"{path}: keys differ; missing {missing}, unexpected {extra}; actual={json.dumps(actual)[:600]}"
            )
        for k in golden:
            assert_same(golden[k], actual[k], f"{path}.{k}")
        return
    if isinstance(golden, list):
        if not isinstance(actual, list) or len(golden) != len(actual):
            raise Mismatch(
                f"{path}: expected a list of {len(golden)}, got "
                f"{len(actual) if isinstance(actual, list) else type(actual).__name__}: "
                f"{json.dumps(actual)[:600]}"
            )
        for i, (g, a) in enumerate(zip(golden, actual, strict=True)):
            assert_same(g, a, f"{path}[{i}]")
        return
    if golden != actual or type(golden) is not type(actual):
        raise Mismatch(f"{path}: expected {golden!r}, got {actual!r}")


def assert_same_unordered(golden: list[Any], actual: list[Any], path: str) -> None:
    assert_same(sorted(golden, key=_sort_key), sorted(actual, key=_sort_key), path + "(unordered)")


def assert_subsequence(golden: list[Any], actual: list[Any], path: str, key: str) -> None:
    """Trimmed golden lists: each kept item appears in the actual list, in the same order."""
    position = 0
    for item in golden:
        while position < len(actual) and actual[position].get(key) != item.get(key):
            position += 1
        if position == len(actual):
            raise Mismatch(f"{path}: {item.get(key)!r} missing or out of order in {[a.get(key) for a in actual]}")
        assert_same(item, actual[position], f"{path}[{key}={item.get(key)}]")
        position += 1


def assert_contains_each(golden: list[Any], actual: list[Any], path: str) -> None:
    """Trimmed golden lists without order: every kept item has an identical actual item."""
    remaining = [_sort_key(a) for a in actual]
    for item in golden:
        wanted = _sort_key(item)
        if wanted not in remaining:
            raise Mismatch(f"{path}: no item like {wanted[:500]}; have {[r[:200] for r in remaining][:8]}")
        remaining.remove(wanted)


# ------------------------------------------------------------------------------------------------------------
# the replayer
# ------------------------------------------------------------------------------------------------------------

# How many controller rounds to run before an exchange (default: settle = run until nothing changes).
STEPS: dict[str, int] = {
    # Caught 4 ms after the POST: the controllers have not acted yet.
    "GET web-blue poll #1 (first poll after create)": 0,
    # One round = the deployment controller's first sync (revision annotation, NewReplicaSetCreated, then
    # observedGeneration/unavailableReplicas/Available=False), before any pod is ready.
    "GET web-blue mid-rollout": 1,
    # Foreground deletion caught while the garbage collector is still working.
    "GET web-green while foreground deletion is pending": 0,
}

# Watches end at timeoutSeconds; shorter ones keep the replay fast. The 8 s one needs more than 2 s so the
# server still sends its pre-timeout BOOKMARK (2 s before the deadline), as recorded.
WATCH_TIMEOUTS = {"2": "1", "3": "1", "8": "3"}


@dataclass
class Outcome:
    exchange: Exchange
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    error: Exception | None = None


class Replayer:
    def __init__(self, exchanges: list[Exchange]) -> None:
        self.exchanges = exchanges
        self.fake = FakeKube(controllers="manual", tokens=TOKENS, seed=1127)
        self.fake.start()
        # The RBAC entries of 05 were recorded last (16:10:55, after 10-delete, on the restarted server):
        # replay them last too, so they see the state they saw.
        rbac = [e for e in exchanges if e.title.startswith("RBAC:")]
        self.order = [e for e in exchanges if not e.title.startswith("RBAC:")] + rbac
        self.outcomes: dict[int, Outcome] = {}
        self.rv_map: dict[str, str] = {}
        self.uid_map: dict[str, str] = {}
        self.name_map: dict[str, str] = {}
        self._rbac_on = False

    def close(self) -> None:
        self.fake.stop()

    def outcome(self, index: int) -> Outcome:
        """Replay in recorded order up to exchange ``index``; returns its checked outcome."""
        while index not in self.outcomes:
            ex = self.order[len(self.outcomes)]
            result = Outcome(ex)
            try:
                self._run(ex, result)
                check_exchange(ex, result)
            except Exception as err:
                result.error = err
            self.outcomes[ex.index] = result
        return self.outcomes[index]

    # -- setup the recording did not capture -----------------------------------------------------------------

    def _before(self, ex: Exchange) -> None:
        rbac = ex.title.startswith("RBAC:")
        if rbac != self._rbac_on:
            # 05-errors.json: the same server restarted with --authorization-mode=RBAC, no bindings at all.
            self.fake.set_rbac({} if rbac else None)
            self._rbac_on = rbac
        if ex.title == "PUT Deployment with a stale resourceVersion (409 Conflict)":
            # "then modified by another write (now 587)": the recorder annotated web-blue. The annotation
            # is visible in 06 (releasegate.io/touched), and as an annotation change it bumped the
            # Deployment's generation to 2 (generation 3 after the first scale in 06).
            self.fake.registry.patch(
                self.fake.registry_res("Deployment"),
                "shop",
                "web-blue",
                "merge",
                {"metadata": {"annotations": {"releasegate.io/touched": "1"}}},
                self.fake.write_options("recorder"),
            )
        if ex.title == "DELETE web-canary propagationPolicy=Background (body)":
            # web-canary was created off the record between 09 and 10; rebuild it the same way.
            self.fake.create(deployment("shop", "web", "canary", "shop/web:v2", replicas=1))
        steps = STEPS.get(ex.title)
        if steps is None:
            self.fake.settle()
        else:
            self.fake.step(steps)

    # -- request translation ---------------------------------------------------------------------------------

    def _headers(self, ex: Exchange) -> dict[str, str]:
        out = {"User-Agent": USER_AGENT}
        for key, value in ex.request["headers"].items():
            if key == "Authorization":
                if "norights" in value:
                    value = "Bearer norights-token"
                elif "<redacted" in value:
                    value = "Bearer admin-token"
            out[key] = value
        return out

    def _path(self, ex: Exchange) -> str:
        path, _, query = ex.request["path"].partition("?")
        # Generated names (pods, ReplicaSets) differ per server: use the fake's object seen in the same place.
        path = "/".join(self.name_map.get(seg, seg) for seg in path.split("/"))
        if not query:
            return path
        pairs = []
        for key, value in parse_qsl(query, keep_blank_values=True):
            if key == "resourceVersion":
                value = self.rv_map.get(value, value)
            if key == "timeoutSeconds":
                value = WATCH_TIMEOUTS.get(value, value)
            pairs.append((key, value))
        return f"{path}?{urlencode(pairs)}"

    def _translate(self, value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: self._translate(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [self._translate(v) for v in value]
        if key == "resourceVersion" and isinstance(value, str):
            return self.rv_map.get(value, value)
        if key == "uid" and isinstance(value, str):
            return self.uid_map.get(value, value)
        return value

    def _learn(self, golden: Any, actual: Any) -> None:
        """Pair golden and fake resourceVersions/uids found at the same place in both responses."""
        if isinstance(golden, dict) and isinstance(actual, dict):
            for key, value in golden.items():
                if key not in actual:
                    continue
                if key == "resourceVersion" and isinstance(value, str) and isinstance(actual[key], str):
                    self.rv_map[value] = actual[key]
                elif key == "uid" and isinstance(value, str) and isinstance(actual[key], str):
                    self.uid_map.setdefault(value, actual[key])
                else:
                    self._learn(value, actual[key])
        elif isinstance(golden, list) and isinstance(actual, list):
            if all(isinstance(i, dict) and "metadata" in i for i in [*golden, *actual]):
                # Items are interchangeable when their names normalise alike: pair them in that order.
                def order(item: JsonObj) -> tuple[str, str]:
                    name = str(item["metadata"].get("name", ""))
                    return (norm_text(name), name)

                golden, actual = sorted(golden, key=order), sorted(actual, key=order)
                for g, a in zip(golden, actual, strict=False):
                    g_name, a_name = g["metadata"].get("name"), a["metadata"].get("name")
                    if g_name and a_name and g_name != a_name and norm_text(g_name) == norm_text(a_name):
                        self.name_map.setdefault(g_name, a_name)
            for g, a in zip(golden, actual, strict=False):
                self._learn(g, a)

    # -- run -------------------------------------------------------------------------------------------------

    def _run(self, ex: Exchange, out: Outcome) -> None:
        self._before(ex)
        req = ex.request
        body = req.get("body")
        payload: bytes | None
        if body is None:
            payload = None
        elif isinstance(body, str):
            payload = body.encode()
        else:
            payload = json.dumps(self._translate(body)).encode()
        host = self.fake.url.removeprefix("http://")
        conn = http.client.HTTPConnection(host, timeout=30)
        try:
            conn.request(req["method"], self._path(ex), body=payload, headers=self._headers(ex))
            resp = conn.getresponse()
            raw = resp.read()
            out.status = resp.status
            out.headers = {k: v for k, v in resp.getheaders()}
            out.headers["Warning"] = ", ".join(resp.headers.get_all("Warning") or [])
        finally:
            conn.close()
        content_type = out.headers.get("Content-Type", "")
        if content_type.startswith("application/json"):
            if "watch=true" in req["path"]:
                out.body = [line for line in raw.decode().split("\n") if line]
                for golden_line, line in zip(ex.response["body"], out.body, strict=False):
                    self._learn(json.loads(golden_line), json.loads(line))
            else:
                out.body = json.loads(raw)
                self._learn(ex.response["body"], out.body)
        else:
            out.body = raw.decode()


# ------------------------------------------------------------------------------------------------------------
# per-exchange checks
# ------------------------------------------------------------------------------------------------------------

VERSION_SHAPE = {
    "gitCommit": r"[0-9a-f]{40}",
    "buildDate": r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z",
    "goVersion": r"go\S+",
}


def check_exchange(ex: Exchange, out: Outcome) -> None:
    golden = ex.response
    if out.status != golden["status"]:
        raise Mismatch(f"status {out.status} != recorded {golden['status']}; body={json.dumps(out.body)[:800]}")
    gh = golden["headers"]
    if out.headers.get("Content-Type") != gh.get("Content-Type"):
        raise Mismatch(f"Content-Type {out.headers.get('Content-Type')!r} != {gh.get('Content-Type')!r}")
    if (out.headers.get("Warning") or None) != gh.get("Warning"):
        raise Mismatch(f"Warning header {out.headers.get('Warning')!r} != {gh.get('Warning')!r}")
    for header in ("X-Content-Type-Options", "X-Kubernetes-Pf-Flowschema-Uid", "Cache-Control"):
        if (header in gh) != (header in out.headers):
            raise Mismatch(f"header {header} presence differs (recorded: {header in gh})")
    body = golden["body"]
    if isinstance(body, str):
        if out.body != body:
            raise Mismatch(f"body {out.body!r} != {body!r}")
        return
    if "watch=true" in ex.request["path"]:
        check_watch(ex, out)
        return
    check_body(ex, body, out.body)


def check_body(ex: Exchange, golden: Any, actual: Any) -> None:
    if ex.title == "GET /version":
        for key, pattern in VERSION_SHAPE.items():
            if not re.fullmatch(pattern, str(actual.get(key, ""))):
                raise Mismatch(f"/version {key}={actual.get(key)!r} has the wrong shape")
        golden = {**golden, **{k: actual.get(k) for k in VERSION_SHAPE}}
        assert_same(golden, actual)
        return
    g = normalize(golden)
    a = normalize(actual)
    kind = g.get("kind") if isinstance(g, dict) else None
    if kind in ("APIGroupList",):
        assert_same({k: v for k, v in g.items() if k != "groups"}, {k: v for k, v in a.items() if k != "groups"})
        assert_subsequence(g["groups"], a["groups"], "$.groups", "name")
        return
    if kind == "APIResourceList" and "trimmed" in ex.title:
        assert_same({k: v for k, v in g.items() if k != "resources"}, {k: v for k, v in a.items() if k != "resources"})
        assert_subsequence(g["resources"], a["resources"], "$.resources", "name")
        return
    if isinstance(kind, str) and kind.endswith("List") and isinstance(g.get("items"), list):
        assert_same({k: v for k, v in g.items() if k != "items"}, {k: v for k, v in a.items() if k != "items"})
        for item in a["items"]:
            if "kind" in item or "apiVersion" in item:
                raise Mismatch("list items must not carry kind/apiVersion")
        if kind == "EventList":
            # Trimmed recordings: every kept event has an identical counterpart (the fake may have more).
            assert_contains_each(g["items"], a["items"], "$.items")
        elif kind == "EndpointSliceList":
            assert_same(len(g["items"]), len(a["items"]), "$.items(count)")
            for i, (gi, ai) in enumerate(zip(g["items"], a["items"], strict=True)):
                check_slice(gi, ai, f"$.items[{i}]")
        else:
            # Item order depends on generated names; compare as a multiset.
            assert_same_unordered(g["items"], a["items"], "$.items")
        return
    if kind == "Endpoints":
        check_endpoints_sorted(actual)
    if kind == "EndpointSlice":
        check_slice(g, a, "$")
        return
    assert_same(g, a)


def check_slice(golden: JsonObj, actual: JsonObj, path: str) -> None:
    """EndpointSlice endpoint order is unspecified (the recording's order is the informer's)."""
    g_eps, a_eps = golden.get("endpoints"), actual.get("endpoints")
    assert_same(
        {k: v for k, v in golden.items() if k != "endpoints"},
        {k: v for k, v in actual.items() if k != "endpoints"},
        path,
    )
    if g_eps is None or a_eps is None:
        assert_same(g_eps, a_eps, f"{path}.endpoints")
    else:
        assert_same_unordered(g_eps, a_eps, f"{path}.endpoints")


def check_endpoints_sorted(actual: JsonObj) -> None:
    for subset in actual.get("subsets") or []:
        ips = [a["ip"] for a in subset.get("addresses") or []]
        if ips != sorted(ips):
            raise Mismatch(f"Endpoints addresses not sorted by IP: {ips}")


def check_watch(ex: Exchange, out: Outcome) -> None:
    golden_events = [json.loads(line) for line in ex.response["body"]]
    actual_events = [json.loads(line) for line in out.body]
    g_types = [e["type"] for e in golden_events]
    a_types = [e["type"] for e in actual_events]
    if g_types != a_types:
        summary = [(e["type"], (e["object"].get("metadata") or {}).get("name")) for e in actual_events]
        raise Mismatch(f"watch event types {a_types} != recorded {g_types}; got {summary}")
    for i, (g, a) in enumerate(zip(golden_events, actual_events, strict=True)):
        assert_same(normalize(g), normalize(a), f"$.events[{i}]")
