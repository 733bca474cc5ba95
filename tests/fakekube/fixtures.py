"""pytest fixtures for FakeKube (register with ``pytest_plugins = ["tests.fakekube.fixtures"]``).

* ``fake_kube``: a started FakeKube (controllers in the background), stopped after the test; the test fails
  if the fake itself hit a bug (controller or handler traceback).
* ``kube_api``: a ``kubernetes.client.ApiClient`` for it (admin token, no TLS), closed after the test.
* ``kube_api_factory``: more clients, e.g. with another token.
* ``chart_kube``: a ``fake_kube`` that also knows ``CHART_RUNNER_TOKEN``, the token of the ServiceAccount the
  charts create for the Helm release ``web`` in ``shop`` (tests/charts.py runs the runner under its rendered Role).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .auth import DEFAULT_TOKENS
from .fake import FakeKube

CHART_RUNNER_TOKEN = "runner-token"
CHART_RUNNER_USER = "system:serviceaccount:shop:web-releasegate"


def _running(fake: FakeKube) -> Iterator[FakeKube]:
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
    assert not fake.errors, "fake API server bug:\n" + "\n".join(fake.errors)


@pytest.fixture
def fake_kube() -> Iterator[FakeKube]:
    yield from _running(FakeKube())


@pytest.fixture
def chart_kube() -> Iterator[FakeKube]:
    yield from _running(FakeKube(tokens={**DEFAULT_TOKENS, CHART_RUNNER_TOKEN: CHART_RUNNER_USER}))


@pytest.fixture
def kube_api_factory(fake_kube: FakeKube) -> Iterator[Callable[..., Any]]:
    from kubernetes import client

    clients: list[Any] = []

    def make(token: str = "admin-token", fake: FakeKube | None = None) -> Any:
        api_client = client.ApiClient((fake or fake_kube).client_configuration(token))
        clients.append(api_client)
        return api_client

    yield make
    for api_client in clients:
        api_client.close()


@pytest.fixture
def kube_api(kube_api_factory: Callable[..., Any]) -> Any:
    return kube_api_factory()
