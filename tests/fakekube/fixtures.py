"""pytest fixtures for FakeKube (register with ``pytest_plugins = ["tests.fakekube.fixtures"]``).

* ``fake_kube``: a started FakeKube (controllers in the background), stopped after the test; the test fails
  if the fake itself hit a bug (controller or handler traceback).
* ``kube_api``: a ``kubernetes.client.ApiClient`` for it (admin token, no TLS), closed after the test.
* ``kube_api_factory``: more clients, e.g. with another token.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .fake import FakeKube


@pytest.fixture
def fake_kube() -> Iterator[FakeKube]:
    fake = FakeKube().start()
    try:
        yield fake
    finally:
        fake.stop()
    assert not fake.errors, "fake API server bug:\n" + "\n".join(fake.errors)


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
