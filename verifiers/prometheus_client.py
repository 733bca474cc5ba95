"""Prometheus's HTTP API, one client for every caller: instant queries, `up` counts, the active scrape targets,
a reachability check.

Every request goes through httpx with `trust_env=False` (a proxy from the environment must not reroute an
in-cluster Prometheus) and an explicit timeout, and every failure is one typed error, all MetricsErrors:

- PrometheusUnreachable: no connection (refused, unknown host, reset).
- PrometheusTimeout: no answer within the timeout.
- PrometheusRejected: Prometheus answered `"status": "error"`; its own `errorType` and `error` are kept.
- PrometheusMalformed: the answer is not the API's JSON (another server on that port, a proxy's HTML page,
  not HTTP at all).

Why httpx here rather than prometheus-api-client, which the team chose: releasegate used one call of it,
`custom_query`, and for that call the library hid what a release check needs. A rejected query came back
as a `PrometheusApiClientException` whose only content is the text `HTTP Status Code 400 (b'{...}')`, so
Prometheus's `errorType` and `error` could only be recovered by parsing that text (a regex, then
`ast.literal_eval` of a bytes repr); an answer that is not the API's JSON escaped as a bare KeyError or
ValueError from inside the library; its `requests` session is a second HTTP stack beside the httpx that
the rest of releasegate uses, with its own retry and proxy settings to override; and the controller
needed a direct httpx request anyway for its reachability check. The API is small and documented
(https://prometheus.io/docs/prometheus/latest/querying/api/): a GET and a JSON envelope with `status`,
`data`, `errorType` and `error`, which pydantic checks below. The library's strengths (range queries into
pandas DataFrames, metric objects) are not what a release check uses. Its dependency stays in
pyproject.toml until the team decides.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from typing_extensions import TypedDict  # pydantic validates typing.TypedDict only from Python 3.12

from releasegate.core.errors import ConfigError, ReleasegateError
from releasegate.core.redact import redact, redact_url, remember_basic_auth, split_credentials

QUERY_PATH = "/api/v1/query"
TARGETS_PATH = "/api/v1/targets"


class MetricsError(ReleasegateError):
    """Prometheus could not answer: unreachable, timed out, or it rejected the query. Nothing was measured."""


class PrometheusError(MetricsError):
    """One request to Prometheus's API failed. `reason` is the cause in a few words, for one-line messages."""

    def __init__(self, message: str, *, url: str, reason: str) -> None:
        # Redacted here, once for every kind: an httpx error or a proxy's page may quote a credential.
        super().__init__(redact(message))
        self.url = redact_url(url)
        self.reason = redact(reason)


class PrometheusUnreachable(PrometheusError):
    """No connection to Prometheus: refused, unknown host, reset."""


class PrometheusTimeout(PrometheusError):
    """Prometheus (or whatever listens there) did not answer within the timeout."""


class PrometheusRejected(PrometheusError):
    """Prometheus answered `"status": "error"`: `error_type` (bad_data, execution, timeout...) and `error`."""

    def __init__(self, message: str, *, url: str, reason: str, query: str, http_status: int, error_type: str,
                 error: str) -> None:
        super().__init__(message, url=url, reason=reason)
        self.query = query
        self.http_status = http_status
        self.error_type = error_type
        self.error = error


class PrometheusMalformed(PrometheusError):
    """The answer is not the Prometheus API's JSON: something else listens at that URL."""


class _Answer(BaseModel):
    """The envelope of every API answer. Other keys (`warnings`, `infos`) are allowed and ignored."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    status: Literal["success", "error"]
    data: Any = None
    error_type: str = Field(default="", alias="errorType")
    error: str = ""


class _QueryData(BaseModel):
    result_type: Literal["vector", "scalar", "matrix", "string"] = Field(alias="resultType")
    result: Any


class Sample(TypedDict):
    """One series of an instant vector: its labels and `(evaluation time, value as Prometheus prints it)`."""

    metric: dict[str, str]
    value: tuple[float, str]


class _Target(BaseModel):
    labels: dict[str, str]
    last_scrape: str = Field(alias="lastScrape")


class _TargetsData(BaseModel):
    active_targets: list[_Target] = Field(alias="activeTargets")


@dataclass(frozen=True)
class ScrapeTarget:
    """One target Prometheus scrapes now: its labels (as on its series) and the start of its last scrape."""

    labels: dict[str, str]
    last_scrape: float  # epoch seconds; 0.0 when it was never scraped


_VECTOR: TypeAdapter[list[Sample]] = TypeAdapter(list[Sample])
_SCALAR: TypeAdapter[tuple[float, str]] = TypeAdapter(tuple[float, str])


class PrometheusClient:
    """Instant queries against one Prometheus. Close it, or use it in a `with` block.

    `transport` replaces the network (tests, or an httpx transport with TLS settings).
    """

    def __init__(self, url: str, *, timeout_s: float, transport: httpx.BaseTransport | None = None) -> None:
        if timeout_s <= 0:
            raise ConfigError(f"Prometheus timeout must be positive, got {timeout_s}s")
        # `url` may carry `user:password@`: httpx gets the credentials apart from the URL (so its logs and
        # errors never hold them), and every message here shows `url`, the form with the password masked.
        base_url, credentials = split_credentials(url.rstrip("/"))
        self.url = redact_url(url.rstrip("/"))
        self.timeout_s = timeout_s
        auth = None
        if credentials is not None:
            remember_basic_auth(*credentials)
            auth = httpx.BasicAuth(*credentials)
        # retries=1: one immediate second connection attempt for a Prometheus that is restarting. Answers
        # are never retried: Prometheus's 503 means the query timed out, and a retry would double the wait.
        self._http = httpx.Client(base_url=base_url, auth=auth, timeout=httpx.Timeout(timeout_s), trust_env=False,
                                  transport=transport or httpx.HTTPTransport(retries=1))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PrometheusClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def query(self, promql: str, *, at: float | None = None) -> list[Sample]:
        """The instant vector of `promql` at `at` (epoch seconds; None: Prometheus's now).

        A scalar result is one series without labels. A range vector or a string is a ConfigError: a check
        needs one value per series.
        """
        # Prometheus takes both as float seconds; its own evaluation timeout matches ours.
        params = {"query": promql, "timeout": f"{self.timeout_s:g}"}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._get(QUERY_PATH, params, promql)
        try:
            answer = _QueryData.model_validate(data)
        except ValidationError as exc:
            raise self._malformed(_first_problem(exc, "data")) from None
        try:
            if answer.result_type == "scalar":
                return self._numbers([Sample(metric={}, value=_SCALAR.validate_python(answer.result))])
            if answer.result_type == "vector":
                return self._numbers(_VECTOR.validate_python(answer.result))
        except ValidationError as exc:
            raise self._malformed(_first_problem(exc, f"data.result ({answer.result_type})")) from None
        raise ConfigError(f"PromQL {promql!r} returns a {answer.result_type}, not an instant vector; a check needs "
                          "one value per series (a range vector such as x[5m] needs a function: rate(x[5m]))")

    def _numbers(self, samples: list[Sample]) -> list[Sample]:
        """`samples` once every value is a number as Prometheus prints one ("12.5", "NaN", "+Inf").

        Checked here, at the boundary: a value such as "n/a" from a server that only looks like Prometheus
        would otherwise escape later as a bare ValueError from float(), an internal error with no culprit.
        """
        for index, sample in enumerate(samples):
            try:
                float(sample["value"][1])
            except ValueError:
                raise self._malformed(f"data.result.{index}.value: {sample['value'][1]!r} is not a number") from None
        return samples

    def targets_up(self, selector: str, *, up_metric: str = "up") -> int:
        """How many scrape targets matching `selector` (PromQL label matchers) were up at their last scrape.

        `up_metric`: the series that says so, 1 or 0 per target: Prometheus's `up`, or a series of the same
        meaning such as the local cluster's `releasegate_pod_up` for pods scraped through one target.
        """
        result = self.query(f"count({up_metric}{{{selector}}} == 1)")
        return int(float(result[0]["value"][1])) if result else 0

    def active_targets(self) -> list[ScrapeTarget] | None:
        """The targets Prometheus scrapes now, from its targets API; None when the server has no such API
        (404: a query frontend or a managed Prometheus that only serves queries).

        Unlike the `up` series, this list holds only the current targets: after a Prometheus restart on the
        same storage, the `up` series of targets that no longer exist stay visible for the lookback period
        (five minutes) with their last, old timestamps, as no staleness marker was written for them.
        """
        data = self._get(TARGETS_PATH, {"state": "active"}, "(targets API)", missing_ok=True)
        if data is None:
            return None
        try:
            answer = _TargetsData.model_validate(data)
            return [ScrapeTarget(target.labels, _epoch(target.last_scrape)) for target in answer.active_targets]
        except (ValidationError, ValueError) as exc:
            detail = _first_problem(exc, "data") if isinstance(exc, ValidationError) else f"lastScrape: {exc}"
            raise self._malformed(detail) from None

    def check_reachable(self) -> None:
        """Raise a PrometheusError unless the server answers a trivial query (`1`) through the query API."""
        self.query("1")

    def _get(self, path: str, params: dict[str, str], promql: str, *, missing_ok: bool = False) -> Any:
        """The `data` of a successful answer; any failure is a PrometheusError. With `missing_ok`, None when
        the server answers 404 (it does not have this API)."""
        try:
            response = self._http.get(path, params=params)
        except httpx.TimeoutException as exc:
            phase = {httpx.ConnectTimeout: "connecting", httpx.PoolTimeout: "waiting for a connection",
                     httpx.WriteTimeout: "sending the request"}.get(type(exc), "waiting for the answer")
            reason = f"no answer within {self.timeout_s:g}s, {phase}"
            raise PrometheusTimeout(f"Prometheus at {self.url} timed out ({reason}); check that it runs and is "
                                    "not overloaded, or allow it a longer timeout",
                                    url=self.url, reason=reason) from None
        except httpx.ConnectError:
            raise self._unreachable("connection refused or host unknown") from None
        except (httpx.RemoteProtocolError, httpx.DecodingError) as exc:
            raise self._malformed(f"not an HTTP answer: {exc}") from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:  # reset, unsupported scheme, bad URL...
            raise self._unreachable(f"{type(exc).__name__}: {exc}") from None
        if missing_ok and response.status_code == 404:
            return None
        try:
            answer = _Answer.model_validate_json(response.content)
        except ValidationError:
            snippet = response.text[:80].strip()
            kind = response.headers.get("content-type", "no content type")
            raise self._malformed(f"HTTP {response.status_code}, {kind}: {snippet!r}") from None
        if answer.status == "error":
            raise self._rejected(promql, response.status_code, answer.error_type or "unknown", answer.error)
        if not response.is_success:
            raise self._malformed(f'HTTP {response.status_code} with "status": "success"')
        return answer.data

    def _unreachable(self, reason: str) -> PrometheusUnreachable:
        return PrometheusUnreachable(f"Prometheus at {self.url} is unreachable ({reason}); check that it runs and "
                                     "that the configured Prometheus URL is right", url=self.url, reason=reason)

    def _malformed(self, detail: str) -> PrometheusMalformed:
        return PrometheusMalformed(f"Prometheus at {self.url} answered something that is not the Prometheus API "
                                   f"({detail}); check the configured Prometheus URL",
                                   url=self.url, reason=f"not the Prometheus API: {detail}")

    def _rejected(self, promql: str, status: int, error_type: str, error: str) -> PrometheusRejected:
        detail = f"{error_type}: {error}"
        if error_type in ("bad_data", "execution"):  # the query itself: a syntax error, or it cannot run
            message = f"Prometheus at {self.url} rejected the query ({detail}); fix the PromQL: {promql}"
        else:
            message = (f"Prometheus at {self.url} failed the query with HTTP {status} ({detail}); check the "
                       f"server and the query: {promql}")
        return PrometheusRejected(message, url=self.url, reason=f"HTTP {status} {detail}", query=promql,
                                  http_status=status, error_type=error_type, error=error)


def _first_problem(exc: ValidationError, root: str) -> str:
    """`data.result (vector).0.metric: Field required`: where in the answer, and what is wrong there."""
    error = exc.errors(include_url=False)[0]
    where = ".".join([root, *(str(part) for part in error["loc"])])
    # pydantic would name our private model ("a valid dictionary or instance of _QueryData").
    problem = "not a JSON object" if error["type"] in ("model_type", "dict_type") else error["msg"]
    return f"{where}: {problem}"


# RFC 3339 as Prometheus writes it: nanoseconds, and `Z` or an offset.
_RFC3339 = re.compile(r"(?P<base>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(?P<fraction>\d+))?(?P<zone>Z|[+-]\d\d:\d\d)")


def _epoch(stamp: str) -> float:
    """Epoch seconds of an RFC 3339 time such as `2026-12-03T13:02:17.380123456Z`; 0.0 for Go's zero time."""
    match = _RFC3339.fullmatch(stamp)
    if match is None:
        raise ValueError(f"{stamp!r} is not an RFC 3339 time")
    if match["base"].startswith("0001-"):  # Go's zero time.Time: never scraped
        return 0.0
    zone = "+00:00" if match["zone"] == "Z" else match["zone"]
    seconds = datetime.fromisoformat(match["base"] + zone).timestamp()
    return seconds + float(f"0.{match['fraction'] or 0}")
