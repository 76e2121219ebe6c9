"""Fixtures shared by every tier. A test that needs a service starts it here and stops it after."""

from __future__ import annotations

import os
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws
from moto.server import ThreadedMotoServer

from local_stack.serialized_moto import serialize_requests
from local_stack.template_resources import StackResources, create_stack_resources
from tests.support.network import free_port

REGION = "us-east-1"


@pytest.fixture(autouse=True)
def aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and a region, so nothing can reach a real AWS account."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "ArgyleSyncTest")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("POWERTOOLS_DEV", "false")


@pytest.fixture
def moto_in_process(aws_environment: None) -> Iterator[None]:
    with mock_aws():
        yield


@pytest.fixture
def stack_in_process(moto_in_process: None) -> StackResources:
    """template.yaml's queues, tables and secrets, created in moto's in-process mock."""
    return create_stack_resources(boto3.Session(region_name=REGION), prefix="test")


@pytest.fixture(scope="session")
def moto_server_url() -> Iterator[str]:
    """moto's real HTTP server on loopback, for integration and end-to-end tests."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    serialize_requests(server._server)  # as the local stack does: moto's backends are not thread-safe
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def moto_server(moto_server_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Points every boto3 client at moto's server; resets its state after the test."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server_url)
    yield moto_server_url
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{moto_server_url}/moto-api/reset", method="POST"))


@pytest.fixture
def stack_on_server(moto_server: str) -> StackResources:
    """template.yaml's queues, tables and secrets, created in moto's server."""
    return create_stack_resources(boto3.Session(region_name=REGION), prefix=f"t{os.getpid()}",
                                  endpoint_url=moto_server)
