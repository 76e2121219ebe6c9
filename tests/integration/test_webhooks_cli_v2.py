"""`argyle-webhooks subscribe-stack` on API v2: the stack is subscribed to the gigs.* events (its
version from the stack's ArgyleApiVersion output), against a v2 sandbox over HTTP."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import boto3
import pytest

from argyle_ops.webhooks_cli import EXIT_OK, EXIT_USAGE, main
from argyle_pipeline.argyle.api_versions import V1, V2
from argyle_pipeline.argyle.webhook_events import sync_events
from argyle_sandbox.server import SandboxServer
from tests.support.sandbox_fixtures import SANDBOX_KEY_ID, SANDBOX_KEY_SECRET


@pytest.fixture
def sandbox_v2(monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxServer]:
    with SandboxServer(seed=5, api_key_id=SANDBOX_KEY_ID, api_key_secret=SANDBOX_KEY_SECRET, api="v2",
                       delivery_backoff=0.01, delivery_timeout=2.0) as server:
        monkeypatch.setenv("ARGYLE_API_KEY_ID", SANDBOX_KEY_ID)
        monkeypatch.setenv("ARGYLE_API_KEY_SECRET", SANDBOX_KEY_SECRET)
        monkeypatch.delenv("ARGYLE_API_VERSION", raising=False)
        yield server


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_subscribe_stack_subscribes_a_v2_stack_to_the_gig_events(sandbox_v2: SandboxServer, moto_server: str) -> None:
    # Given a deployed v2 stack (in moto) whose outputs name its URL, its secret and its API version
    secret_arn = boto3.client("secretsmanager").create_secret(
        Name="wh-v2", SecretString=json.dumps({"current": "deploy-time", "previous": ""}))["ARN"]
    outputs = {"WebhookUrl": "https://abc.execute-api.us-east-1.amazonaws.com/dev/webhooks/argyle",
               "WebhookSecretArn": secret_arn, "ArgyleApiVersion": "v2"}
    template = {"Resources": {"Handle": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
                "Outputs": {k: {"Value": v} for k, v in outputs.items()}}
    with pytest.warns(UserWarning):  # moto does not model the placeholder resource
        boto3.client("cloudformation").create_stack(StackName="argyle-v2", TemplateBody=json.dumps(template))

    # When it is subscribed with the sandbox's v2 URL
    code, _, err = cli("--api-url", sandbox_v2.base_url, "subscribe-stack", "--stack-name", "argyle-v2")

    # Then the main subscription is the gig events (and the user and account ones), none of v1's
    assert code == EXIT_OK, err
    sub, status = sandbox_v2.state.subscriptions.values()
    assert sub.events == list(sync_events(V2)) and not set(sub.events) & set(V1.data_events)
    assert "gigs.removed" in sub.events and status.events == ["accounts.updated"]


def test_a_version_that_contradicts_the_api_url_is_a_usage_error(sandbox_v2: SandboxServer) -> None:
    code, _, err = cli("--api-url", sandbox_v2.base_url, "--api-version", "v1", "list")

    assert code == EXIT_USAGE and "is a v2 URL, but the API version is v1" in err
    assert not sandbox_v2.state.subscriptions
