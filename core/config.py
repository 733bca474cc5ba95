"""The release configuration: one TOML file (default `releasegate.toml`), validated when it is loaded.

Every key has a default documented in README.md, so an absent file means "all defaults". An unknown key,
a wrong type or an impossible value is a ConfigError naming the file, the key and the fix.
"""

from __future__ import annotations

import difflib
import itertools
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from releasegate.core.errors import ConfigError
from releasegate.core.types import DEFAULT_VERSION_HEADER, check_label_key, check_promql_label_name
from releasegate.core.versions import quoted, validate_version

DEFAULT_CONFIG_NAME = "releasegate.toml"
VerificationStage = Literal["smoke", "load", "analysis", "post_switch"]
DEFAULT_REQUIRED_STAGES: tuple[VerificationStage, ...] = ("smoke", "analysis")
DEFAULT_WATCH_SLOS = ("error_rate < 1%", "p(95) < 300ms")  # the shipped analysis suite's SLOs
# Every duration is in seconds and at most 30 days: a larger one is a unit mistake (milliseconds written as
# seconds), and a wait of 1e300 s overflows the clock of the thread or socket that waits it.
MAX_SECONDS = 30 * 24 * 3600
# TOML integers are 64-bit (the spec); Python's reader takes any size, which no count of ours needs.
_TOML_INT_RANGE = range(-(2**63), 2**63)


class _Section(BaseModel):
    # Unknown keys are errors: a typo such as `replica = 3` must not be silently ignored. TOML has inf and
    # nan: no deadline, count or rate of ours means anything as either (a deadline of inf never fails).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class AppConfig(_Section):
    name: str = "demo"

    @field_validator("name")
    @classmethod
    def _name_is_label(cls, value: str) -> str:
        return validate_version(value, source="app.name")


class ReleaseConfig(_Section):
    strategy: Literal["blue-green", "canary"] = "blue-green"
    target: Literal["local", "kubernetes", "kind"] = "local"
    keep_warm_s: float = Field(default=30.0, ge=0, le=MAX_SECONDS)
    lock_ttl_s: float = Field(default=900.0, gt=0, le=MAX_SECONDS)
    # After a switch the target's view (Service selector, endpoints) can run ahead of what users reach
    # (kube-proxy sync, ingress target groups): the switch waits until the public service answers as the
    # new version this many times in a row, read from this response header on this path. Empty = no check.
    version_header: str = DEFAULT_VERSION_HEADER
    version_path: str = "/healthz"
    confirm_responses: int = Field(default=10, ge=1)
    # A release with no test in one of these stages is not promoted (and nothing is provisioned).
    required_stages: list[VerificationStage] = Field(default_factory=lambda: list(DEFAULT_REQUIRED_STAGES))
    # Watch after the switch: during keep-warm, finalize watches the new version's SLOs in Prometheus and
    # switches back at the first decisive breach (verifiers/watch.py). The SLOs are parsed in preflight,
    # before anything changes (core cannot import the threshold parser of verifiers/).
    bake_s: float | None = Field(default=None, ge=0, le=MAX_SECONDS,
                                 description="how long finalize watches; empty: keep_warm_s, "
                                                                "0: no watch")
    watch_slos: list[str] = Field(default_factory=lambda: list(DEFAULT_WATCH_SLOS))
    watch_interval_s: float | None = Field(default=None, gt=0, le=MAX_SECONDS,
                                           description="seconds between two looks; empty: "
                                           "local.scrape_interval_s on the local target, else 5")
    watch_alpha: float = Field(default=0.01, gt=0, lt=1, description="chance that the watch switches a healthy "
                                                                    "version back, all SLOs together")

    @model_validator(mode="after")
    def _bake_within_keep_warm(self) -> ReleaseConfig:
        # Switching back is instant only while the old slot is warm: a watch longer than keep-warm would find
        # nothing to switch back to. An error, not a silent longer keep-warm: keep_warm_s is what the old
        # slot costs, and one key should not quietly change what another one says.
        if self.bake_s is not None and self.bake_s > self.keep_warm_s:
            raise ConfigError(
                f"release.bake_s = {self.bake_s:g} is longer than release.keep_warm_s = {self.keep_warm_s:g}: the "
                "watch after the switch can only switch back while the old version is still warm; raise "
                f"release.keep_warm_s to at least {self.bake_s:g} or lower release.bake_s")
        return self

    @property
    def watch_s(self) -> float:
        """How long finalize watches the new version after the switch (bake_s, else the whole keep-warm)."""
        return self.keep_warm_s if self.bake_s is None else self.bake_s


class StageDeadlines(_Section):
    """Seconds each stage may take before it fails (a stage that overruns fails)."""

    preflight: float = Field(default=60.0, gt=0, le=MAX_SECONDS)
    provision: float = Field(default=300.0, gt=0, le=MAX_SECONDS)
    smoke: float = Field(default=120.0, gt=0, le=MAX_SECONDS)
    load: float = Field(default=600.0, gt=0, le=MAX_SECONDS)
    analysis: float = Field(default=600.0, gt=0, le=MAX_SECONDS)
    switch: float = Field(default=120.0, gt=0, le=MAX_SECONDS)
    shift: float = Field(default=120.0, gt=0, le=MAX_SECONDS, description="canary: moving traffic to one step's weight")
    promote: float = Field(default=600.0, gt=0, le=MAX_SECONDS, description="canary: all traffic to the new version")
    post_switch: float = Field(default=600.0, gt=0, le=MAX_SECONDS)
    finalize: float = Field(default=600.0, gt=0, le=MAX_SECONDS)
    rollback: float = Field(default=120.0, gt=0, le=MAX_SECONDS)


def _check_min_ready_below_timeout(section: str, min_ready_s: float, ready_timeout_s: float) -> None:
    """A pod must become ready and then stay ready for min_ready_s before ready_timeout_s runs out."""
    if min_ready_s >= ready_timeout_s:
        # A ConfigError, not a ValueError: parse_config prefixes it with the file, as one line.
        raise ConfigError(
            f"{section}.min_ready_s = {min_ready_s:g} is not below {section}.ready_timeout_s = {ready_timeout_s:g}: "
            "pods must become ready and then stay ready for min_ready_s within ready_timeout_s, so the wait can "
            f"never succeed; lower {section}.min_ready_s or raise {section}.ready_timeout_s")


def split_host_port(text: str) -> tuple[str, int] | None:
    """`host:port` (`[fd00::1]:5557` for IPv6) as (host, port); None when `text` is not one."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


def _check_load_worker_settings(image: str, master_address: str) -> None:
    """Worker pods need an image without blanks and an address of this machine they can dial (host:port)."""
    if image and (image != image.strip() or any(char.isspace() for char in image)):
        raise ConfigError(f"kubernetes.load_worker_image = {quoted(image)} is not an image reference; give one such "
                          "as registry.example/releasegate-locust:1.4 (locust and releasegate installed)")
    if image and not master_address:
        raise ConfigError(
            "kubernetes.load_worker_image is set but kubernetes.load_master_address is empty: the worker pods must "
            "dial this machine's locust master; set load_master_address to the host:port they reach it at (e.g. "
            "\"10.0.0.5:5557\"), or empty load_worker_image to run the workers as local processes")
    if master_address and split_host_port(master_address) is None:
        raise ConfigError(f"kubernetes.load_master_address = {quoted(master_address)} is not host:port; give the "
                          "address the worker pods dial to reach this machine's locust master, e.g. "
                          "\"10.0.0.5:5557\" or \"ci-runner.internal:5557\"")


class CanaryConfig(_Section):
    """The canary strategy: traffic moves to the candidate in steps, with analysis at each step."""

    steps: list[int] = Field(default_factory=lambda: [10, 50, 100],
                             description="percent of traffic on the candidate, step by step")
    # A step passes only after its whole window: a short step cannot see a slow leak or a rare error.
    step_window_s: float = Field(default=300.0, gt=0, le=MAX_SECONDS)

    @field_validator("steps")
    @classmethod
    def _steps_increase_to_at_most_100(cls, steps: list[int]) -> list[int]:
        if not steps:
            raise ValueError("give at least one step, such as [10, 50, 100]")
        if any(not 0 < weight <= 100 for weight in steps):
            raise ValueError(f"every step is a percent in 1..100, got {steps}")
        if any(later <= earlier for earlier, later in itertools.pairwise(steps)):
            raise ValueError(f"steps must increase, got {steps}; write them in order such as [10, 50, 100]")
        return steps


class LocalConfig(_Section):
    """The embedded local target: pods are processes on loopback, a router is the Service."""

    replicas: int = Field(default=2, ge=1, le=16)
    initial_version: str = Field(default="v1", description="the version the cluster starts with; empty: "
                                                       "nothing (the first release is a first deploy)")
    command: list[str] = Field(
        default_factory=list,
        description="pod command with {port} {version} {slot} {pod} placeholders; empty = the demo service",
    )
    profiles: str = Field(default="", description="behaviour profile file for the demo service")
    service_port: int = Field(default=0, ge=0, le=65535, description="0 = pick a free port")
    run_dir: str = ".releasegate/local"
    ready_timeout_s: float = Field(default=30.0, gt=0, le=MAX_SECONDS)
    min_ready_s: float = Field(default=1.0, ge=0, le=MAX_SECONDS, description="like minReadySeconds")
    readiness_path: str = "/readyz"
    prometheus_binary: str = "prometheus"
    scrape_interval_s: float = Field(default=0.5, gt=0, le=MAX_SECONDS)
    drain_timeout_s: float = Field(default=10.0, ge=0, le=MAX_SECONDS)
    upstream_timeout_s: float = Field(default=30.0, gt=0, le=MAX_SECONDS,
                                      description="the router's wait for a pod's answer")

    @field_validator("initial_version")
    @classmethod
    def _version_is_label(cls, value: str) -> str:
        return value if value == "" else validate_version(value, source="local.initial_version")

    @model_validator(mode="after")
    def _min_ready_fits_the_timeout(self) -> LocalConfig:
        _check_min_ready_below_timeout("local", self.min_ready_s, self.ready_timeout_s)
        return self


_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_SERVICE_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def _check_kubernetes_name(value: str, key: str, pattern: re.Pattern[str], limit: int, what: str) -> str:
    """`value` unchanged when empty (the default applies) or a valid name; else a ConfigError naming `key`."""
    if value and (len(value) > limit or not pattern.fullmatch(value)):
        separators = "'-' and '.'" if "." in pattern.pattern else "'-'"
        raise ConfigError(f"{key} = {quoted(value)} is not {what}: use at most {limit} lowercase letters, digits "
                          f"and {separators}, starting and ending with a letter or digit (e.g. shop)")
    return value


class KubernetesConfig(_Section):
    """The kubernetes target: two Deployments (<app>-blue, <app>-green), a Service and a preview Service."""

    kubeconfig: str = Field(default="", description="empty: $KUBECONFIG, else ~/.kube/config, else in-cluster")
    context: str = Field(default="", description="empty: the kubeconfig's current context")
    namespace: str = "default"
    service: str = Field(default="", description="empty: the app name")
    preview_service: str = Field(default="", description="empty: <app>-preview")
    deployment_name: str = Field(default="{app}-{slot}", description="template with {app} and {slot}")
    container: str = Field(default="", description="the container whose image tag is the version; empty: first")
    slot_label: str = "slot"
    version_label: str = "version"
    lease_name: str = Field(default="", description="empty: <app>-release")
    annotation_prefix: str = "releasegate.io/"
    ready_timeout_s: float = Field(default=600.0, gt=0, le=MAX_SECONDS, description="like progressDeadlineSeconds")
    min_ready_s: float = Field(default=5.0, ge=0, le=MAX_SECONDS,
                               description="a finished rollout must stay ready this long")
    endpoints_timeout_s: float = Field(default=60.0, gt=0, le=MAX_SECONDS)
    request_timeout_s: float = Field(default=15.0, gt=0, le=MAX_SECONDS)
    max_retries: int = Field(default=5, ge=0)
    access: Literal["url", "cluster-dns", "port-forward"] = "url"
    service_url: str = Field(default="", description="template; e.g. https://{app}.example.com")
    preview_url: str = Field(default="", description="template; e.g. https://{app}-preview.example.com")
    baseline_url: str = Field(default="", description="template; empty: the service URL before the switch")
    cluster_domain: str = "cluster.local"
    # The canary strategy (charts/canary-app): Deployments <app>-stable and <app>-canary behind <app>.
    traffic: Literal["replicas", "alb"] = Field(
        default="replicas", description="canary weights from pod counts, or exact weights on an AWS ALB")
    ingress: str = Field(default="", description="traffic=alb: the Ingress whose action annotation holds "
                                                "the weights; empty: the app name")
    workload: Literal["deployment", "rollout"] = Field(
        default="deployment", description="rollout: the app is an Argo Rollouts Rollout that releasegate drives")
    rollout_name: str = Field(default="", description="workload=rollout: the Rollout; empty: the app name")
    # Load beyond one machine: the locust workers of a load with workers=N run as a Job in the namespace.
    load_worker_image: str = Field(default="", description="image of the locust worker pods (locust and releasegate "
                                                           "installed); empty: workers are local processes")
    load_master_address: str = Field(default="", description="host:port the worker pods dial to reach this "
                                                             "machine's locust master")

    # Names end up in API paths and label selectors: a bad one is reported here, with the key to fix, instead
    # of as a 404 or 422 from the API server in preflight.
    @field_validator("namespace", "container")
    @classmethod
    def _is_dns_label(cls, value: str, info: ValidationInfo) -> str:
        return _check_kubernetes_name(value, f"kubernetes.{info.field_name}", _DNS_LABEL, 63, "a DNS label")

    @field_validator("service", "preview_service")
    @classmethod
    def _is_service_name(cls, value: str, info: ValidationInfo) -> str:
        return _check_kubernetes_name(value, f"kubernetes.{info.field_name}", _SERVICE_NAME, 63,
                                      "a Service name (a DNS label starting with a letter)")

    @field_validator("lease_name", "ingress", "rollout_name")
    @classmethod
    def _is_object_name(cls, value: str, info: ValidationInfo) -> str:
        return _check_kubernetes_name(value, f"kubernetes.{info.field_name}", _DNS_SUBDOMAIN, 253,
                                      "an object name (a DNS subdomain)")

    @field_validator("slot_label", "version_label")
    @classmethod
    def _is_label_key(cls, value: str, info: ValidationInfo) -> str:
        return check_label_key(value, source=f"kubernetes.{info.field_name}")

    @model_validator(mode="after")
    def _min_ready_fits_the_timeout(self) -> KubernetesConfig:
        _check_min_ready_below_timeout("kubernetes", self.min_ready_s, self.ready_timeout_s)
        return self

    @model_validator(mode="after")
    def _load_workers_can_reach_the_master(self) -> KubernetesConfig:
        _check_load_worker_settings(self.load_worker_image, self.load_master_address)
        return self


class KindConfig(_Section):
    """The kind target: a local kind cluster with the chart installed, then the kubernetes target."""

    cluster_name: str = Field(default="releasegate", description="created or reused; context kind-<name>")
    node_image: str = Field(default="", description="kind create cluster --image; empty: kind's default")
    create_wait_s: float = Field(default=120.0, gt=0, le=MAX_SECONDS)
    image_repository: str = Field(default="releasegate-demo", description="image without tag; tag = version")
    build: bool = Field(default=True, description="false: the image exists locally, only `kind load` it")
    dockerfile: str = Field(default="", description="empty: demo/Dockerfile")
    build_context: str = Field(default="", description="empty: demo/")
    chart: str = Field(default="", description="empty: charts/bluegreen-app")
    release_name: str = Field(default="", description="helm release; empty: the app name")
    initial_version: str = "v1"
    replicas: int = Field(default=2, ge=1)
    values_files: list[str] = Field(default_factory=list, description="extra helm --values files")
    helm_timeout_s: float = Field(default=300.0, gt=0, le=MAX_SECONDS)
    command_timeout_s: float = Field(default=900.0, gt=0, le=MAX_SECONDS)
    run_dir: str = ".releasegate/kind"

    @field_validator("initial_version")
    @classmethod
    def _version_is_label(cls, value: str) -> str:
        return validate_version(value, source="kind.initial_version")


class PrometheusConfig(_Section):
    url: str = Field(default="", description="an existing Prometheus; empty = the local target starts one")
    timeout_s: float = Field(default=10.0, gt=0, le=MAX_SECONDS)
    discovery_timeout_s: float = Field(default=60.0, gt=0, le=MAX_SECONDS,
                                       description="for Prometheus to scrape new pods")
    app_label: str = "app"
    slot_label: str = "slot"
    version_label: str = "version"

    @field_validator("app_label", "slot_label", "version_label")
    @classmethod
    def _is_label_name(cls, value: str, info: ValidationInfo) -> str:
        return check_promql_label_name(value, source=f"prometheus.{info.field_name}")


class Config(_Section):
    app: AppConfig = Field(default_factory=AppConfig)
    # Free-form settings for suites (durations, users, thresholds), read as `release.vars` in a test.
    vars: dict[str, str | int | float | bool | list[str] | list[float]] = Field(default_factory=dict)
    release: ReleaseConfig = Field(default_factory=ReleaseConfig)
    stages: StageDeadlines = Field(default_factory=StageDeadlines)
    canary: CanaryConfig = Field(default_factory=CanaryConfig)
    local: LocalConfig = Field(default_factory=LocalConfig)
    prometheus: PrometheusConfig = Field(default_factory=PrometheusConfig)
    kubernetes: KubernetesConfig = Field(default_factory=KubernetesConfig)
    kind: KindConfig = Field(default_factory=KindConfig)
    # Where the file was read from: relative paths to input files (profiles, charts, values files) are
    # relative to its folder, as in most tools' config files.
    base_dir: Path = Field(default_factory=Path.cwd, exclude=True)
    # The project the run belongs to (pytest's rootdir, or the working directory of a command): state
    # directories (local.run_dir, kind.run_dir) live here, whichever folder the config file was read from,
    # so every command and release of one project finds the same local cluster.
    project_root: Path = Field(default_factory=Path.cwd, exclude=True)

    def resolve_path(self, value: str) -> Path:
        """An input file named in the config: relative to the config file's folder."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    def resolve_state_dir(self, value: str) -> Path:
        """A state directory named in the config: relative to the project root."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.project_root / path


def _describe_error(source: str, error: dict[str, Any], model: type[BaseModel], data: dict[str, Any]) -> str:
    loc = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        known = _known_keys(model, error["loc"][:-1])
        close = difflib.get_close_matches(str(error["loc"][-1]), known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"{source}: unknown key {quoted(loc)}; {hint}known keys here: {', '.join(sorted(known))}"
    given = error.get("input")
    if error["loc"][0] == "vars" and len(error["loc"]) > 1 and isinstance(data.get("vars"), dict):
        # pydantic reports each member of the union it tried (vars.x.str, vars.x.int, ...): say what fits.
        name = error["loc"][1]
        return (f"{source}: vars.{quoted(str(name))[1:-1]} = {quoted(data['vars'].get(name))} is invalid: a [vars] "
                "value is a string, a finite number, true or false, or an array of strings or of numbers")
    # One line: pydantic's message may quote the input again, over several lines for a nested value.
    msg = " ".join(str(error["msg"]).removeprefix("Value error, ").split())
    return f"{source}: {quoted(loc)[1:-1]} = {quoted(given)} is invalid: {msg}"


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return [name for name in model.model_fields if name not in ("base_dir", "project_root")]


# Set by the loader from where the file is, never by the file: written there, they would be silently replaced.
_LOADER_FIELDS = ("base_dir", "project_root")


def _integer_out_of_range(value: Any, where: str) -> str | None:
    """The key (dotted) of the first integer in `value` that TOML's 64 bits cannot hold, if any."""
    if isinstance(value, int) and not isinstance(value, bool):
        return None if value in _TOML_INT_RANGE else where
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _integer_out_of_range(item, f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None


def parse_config(data: dict[str, Any], *, source: str, base_dir: Path, project_root: Path | None = None) -> Config:
    written = [key for key in _LOADER_FIELDS if key in data]
    if written:
        known = ", ".join(sorted(_known_keys(Config, ())))
        raise ConfigError(f"{source}: unknown key {written[0]!r}; known keys here: {known}")
    too_large = _integer_out_of_range(data, "")
    if too_large is not None:
        raise ConfigError(f"{source}: {quoted(too_large)[1:-1]} is an integer beyond 64 bits, which TOML does not "
                          "allow; write a smaller number")
    try:
        # Strict: a TOML value carries its type, so `replicas = true` or `load = "5"` is a mistake to report,
        # not a value to coerce (an integer is still a fine number of seconds).
        return Config.model_validate({**data, "base_dir": base_dir, "project_root": project_root or Path.cwd()},
                                     strict=True)
    except ValidationError as exc:
        errors = exc.errors()
        first = _describe_error(source, dict(errors[0]), Config, data)
        # One problem per key: a [vars] value that fits no member of the union gets an error per member.
        problems = {error["loc"][:2] if error["loc"][0] == "vars" else error["loc"] for error in errors}
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise ConfigError(first + more) from None
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_config(path: str | Path | None = None, *, search_dir: Path | None = None,
                default_name: str = DEFAULT_CONFIG_NAME) -> Config:
    """Load and validate the config. No path: `default_name` in `search_dir` if present, else defaults.

    `search_dir` (default: the working directory) is also the project root that state directories
    resolve from; relative input paths resolve from the config file's folder.
    """
    explicit = path is not None
    project_root = (search_dir or Path.cwd()).resolve()
    config_path = Path(path) if path is not None else project_root / default_name
    if not config_path.exists():
        if explicit:
            raise ConfigError(f"config file {config_path} does not exist; pass an existing file or omit it")
        return Config(base_dir=project_root, project_root=project_root)
    try:
        data = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{config_path}: not valid TOML ({exc}); fix the syntax at that line") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{config_path}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{config_path}: cannot be read ({exc.strerror})") from None
    return parse_config(data, source=str(config_path), base_dir=config_path.resolve().parent,
                        project_root=project_root)
