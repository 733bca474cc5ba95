"""The kind target: create or reuse a kind cluster, load the app image, install the chart, then act as
the kubernetes target on it.

    kind get clusters                      reuse the cluster if it is listed, else
    kind create cluster --name N --wait 120s
    kind get kubeconfig --name N           -> <run_dir>/kubeconfig-N.yaml (mode 0600)
    docker build -f demo/Dockerfile -t <repo>:<v1> --build-arg APP_VERSION=<v1> demo
    kind load docker-image <repo>:<v1> --name N
    helm upgrade --install <app> charts/bluegreen-app --namespace <ns> --create-namespace ... --wait
    KubernetesTarget.open(config with kubernetes.kubeconfig/context kind-N/access port-forward)

A cluster has no registry, so every version a release provisions must be built and loaded into the nodes
first: `KindTarget.prepare_image(version)`. `deploy()` calls it (so a release works as is); the release
controller should also call it in preflight, before it takes the lock, so that a broken build stops the
release with nothing changed.

Settings come from the `[kind]` section of the config (core.config.KindConfig).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import releasegate
from releasegate.core.config import Config, KindConfig
from releasegate.core.errors import ConfigError, TargetError
from releasegate.core.files import write_atomically
from releasegate.core.types import Slot
from releasegate.core.versions import validate_version
from releasegate.targets.kubernetes.target import KubernetesTarget

# The chart and the demo service shipped with releasegate, used when the config names none.
# Package data: releasegate/charts and releasegate/demo, in a wheel as in the repository (via its links).
PACKAGE_ROOT = Path(releasegate.__file__).resolve().parent
DEFAULT_CHART = PACKAGE_ROOT / "charts" / "bluegreen-app"
DEFAULT_DOCKERFILE = PACKAGE_ROOT / "demo" / "Dockerfile"
DEFAULT_BUILD_CONTEXT = PACKAGE_ROOT / "demo"

# kind names its nodes' containers after the cluster, so the name must be a valid container/DNS name.
_CLUSTER_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,48}[a-z0-9])?")

INSTALL_HINTS = {
    "kind": "install kind (https://kind.sigs.k8s.io/docs/user/quick-start/#installation, or "
            "`go install sigs.k8s.io/kind@latest`)",
    "docker": "install Docker (https://docs.docker.com/engine/install/); kind runs its nodes as containers",
    "helm": "install helm (https://helm.sh/docs/intro/install/, or as charts/bluegreen-app/README.md "
            "'Testing the chart' shows)",
    "kubectl": "install kubectl (https://kubernetes.io/docs/tasks/tools/); the kind target reaches the app "
               "with `kubectl port-forward`",
}


@dataclass(frozen=True)
class Tools:
    kind: str
    docker: str
    helm: str
    kubectl: str


def _require(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ConfigError(f"the kind target needs `{name}` and it is not on PATH; {INSTALL_HINTS[name]}")
    return path


def find_tools(timeout_s: float = 30.0) -> Tools:
    """Every tool the kind target runs and a Docker engine that answers; ConfigError for the first missing."""
    kind = _require("kind")
    docker = _require("docker")
    try:
        info = subprocess.run([docker, "info", "--format", "{{.ServerVersion}}"], capture_output=True,
                              text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise ConfigError(f"`docker info` did not answer within {timeout_s:.0f}s; the Docker engine is hung "
                          "or unreachable: restart it (e.g. `sudo systemctl restart docker`)") from None
    if info.returncode != 0:
        reason = _last_line(info.stderr or info.stdout) or f"exit code {info.returncode}"
        raise ConfigError(f"the Docker engine is not running (`docker info` failed: {reason}); start it "
                          "(e.g. `sudo systemctl start docker`) or point DOCKER_HOST at a running one")
    return Tools(kind=kind, docker=docker, helm=_require("helm"), kubectl=_require("kubectl"))


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


@dataclass
class KindCluster:
    """One kind cluster and the commands run against it."""

    config: Config
    settings: KindConfig
    tools: Tools
    prepared: set[str] = field(default_factory=set)

    @property
    def name(self) -> str:
        return self.settings.cluster_name

    @property
    def context(self) -> str:
        return f"kind-{self.name}"  # the context name `kind get kubeconfig` writes

    @property
    def run_dir(self) -> Path:
        return self.config.resolve_state_dir(self.settings.run_dir)

    @property
    def kubeconfig_path(self) -> Path:
        return self.run_dir / f"kubeconfig-{self.name}.yaml"

    def _path(self, value: str, default: Path) -> Path:
        return self.config.resolve_path(value) if value else default

    def image(self, version: str) -> str:
        return f"{self.settings.image_repository}:{version}"

    def run(self, argv: list[str], *, timeout_s: float | None = None) -> str:
        """Run one command; TargetError with its last output lines when it fails. Returns stdout."""
        timeout_s = timeout_s or self.settings.command_timeout_s
        shown = " ".join([Path(argv[0]).name, *argv[1:4]]) + (" ..." if len(argv) > 4 else "")
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise TargetError(f"`{shown}` did not finish within {timeout_s:.0f}s") from None
        if result.returncode != 0:
            tail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-5:])
            raise TargetError(f"`{shown}` failed with exit code {result.returncode}: {tail}")
        return result.stdout

    # -- the steps, in order ----------------------------------------------------------------------
    def ensure_cluster(self) -> bool:
        """Create the cluster unless `kind get clusters` lists it; True when it was created."""
        existing = self.run([self.tools.kind, "get", "clusters"]).split()
        if self.name in existing:
            return False
        argv = [self.tools.kind, "create", "cluster", "--name", self.name,
                "--wait", f"{self.settings.create_wait_s:.0f}s"]
        if self.settings.node_image:
            argv += ["--image", self.settings.node_image]
        self.run(argv)
        return True

    def write_kubeconfig(self) -> Path:
        """The cluster's kubeconfig in the run directory, private (it holds the admin client key)."""
        text = self.run([self.tools.kind, "get", "kubeconfig", "--name", self.name])
        path = self.kubeconfig_path
        path.parent.mkdir(parents=True, exist_ok=True)
        # Whole and private (mode 0600): another process may be reading the previous one.
        write_atomically(path, text)
        return path

    def prepare_image(self, version: str) -> str:
        """Build (unless `build = false`) and load `<repository>:<version>` into the cluster's nodes."""
        validate_version(version)
        image = self.image(version)
        if version in self.prepared:
            return image
        if self.settings.build:
            dockerfile = self._path(self.settings.dockerfile, DEFAULT_DOCKERFILE)
            context = self._path(self.settings.build_context, DEFAULT_BUILD_CONTEXT)
            self.run([self.tools.docker, "build", "-f", str(dockerfile), "-t", image,
                      "--build-arg", f"APP_VERSION={version}", str(context)])
        # The nodes have no registry to pull from: the chart's IfNotPresent policy uses the loaded image.
        self.run([self.tools.kind, "load", "docker-image", image, "--name", self.name])
        self.prepared.add(version)
        return image

    def install_chart(self, kubeconfig: Path) -> None:
        """`helm upgrade --install`: idempotent; the chart keeps what earlier releases changed (lookup)."""
        app = self.config.app.name
        settings = self.settings
        argv = [self.tools.helm, "upgrade", "--install", settings.release_name or app,
                str(self._path(settings.chart, DEFAULT_CHART)),
                "--namespace", self.config.kubernetes.namespace, "--create-namespace",
                "--kubeconfig", str(kubeconfig), "--kube-context", self.context]
        for values_file in settings.values_files:
            argv += ["--values", str(self.config.resolve_path(values_file))]
        argv += ["--set-string", f"app={app}",
                 "--set-string", f"image.repository={settings.image_repository}",
                 "--set-string", f"version={settings.initial_version}",
                 "--set-string", f"labels.slot={self.config.kubernetes.slot_label}",
                 "--set-string", f"labels.version={self.config.kubernetes.version_label}",
                 "--set", f"replicas={settings.replicas}",
                 "--wait", "--timeout", f"{settings.helm_timeout_s:.0f}s"]
        self.run(argv, timeout_s=settings.helm_timeout_s + 60)


class KindTarget(KubernetesTarget):
    """The kubernetes target on a kind cluster, which also makes each version's image available to it."""

    name = "kind"
    cluster: KindCluster | None = None

    def describe(self) -> str:
        name = self.cluster.name if self.cluster is not None else "?"
        return f"kind cluster {name}: {super().describe()}"

    def prepare_image(self, version: str) -> None:
        """Build and load the image of `version`; call before the release provisions it (idempotent)."""
        if self.cluster is None:
            raise TargetError("this KindTarget was not opened with open_kind_target; it has no cluster")
        self.cluster.prepare_image(version)

    def deploy(self, slot: Slot, version: str) -> None:
        # Without the image in the nodes the candidate would sit in ErrImagePull until the deadline.
        self.prepare_image(version)
        super().deploy(slot, version)


def _check_settings(settings: KindConfig) -> None:
    if not _CLUSTER_NAME.fullmatch(settings.cluster_name):
        raise ConfigError(f"kind.cluster_name {settings.cluster_name!r} is not a valid kind cluster name; "
                          "use lower-case letters, digits, '-' and '.' (at most 50 characters)")


def open_kind_target(config: Config) -> KindTarget:
    """Create or reuse the kind cluster, load the initial image, install the chart, open the target on it.

    Everything that can be checked before touching anything is checked first (settings, tools, Docker
    engine): those problems are ConfigErrors and nothing has been created.
    """
    settings = config.kind
    _check_settings(settings)
    tools = find_tools()
    cluster = KindCluster(config, settings, tools)
    cluster.ensure_cluster()
    kubeconfig = cluster.write_kubeconfig()
    cluster.prepare_image(settings.initial_version)
    cluster.install_chart(kubeconfig)
    kube = config.kubernetes.model_copy(update={
        "kubeconfig": str(kubeconfig), "context": cluster.context, "access": "port-forward"})
    target = KindTarget.open(config.model_copy(update={"kubernetes": kube}))
    assert isinstance(target, KindTarget)  # open() builds `cls`; the annotation says only KubernetesTarget
    target.cluster = cluster
    return target
