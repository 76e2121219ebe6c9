"""argyle-webhooks against the Argyle sandbox (and moto's server for subscribe-stack)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from argyle_ops.webhooks_cli import (
    EXIT_API_ERROR,
    EXIT_AUTH,
    EXIT_AWS,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    main,
)
from argyle_pipeline.argyle.webhook_events import SYNC_EVENTS
from argyle_pipeline.aws.secret_values import parse_webhook_secrets
from argyle_pipeline.receiving.signature import verify
from argyle_sandbox.server import SandboxServer
from tests.support.sandbox_fixtures import (  # noqa: F401
    SANDBOX_KEY_ID,
    SANDBOX_KEY_SECRET,
    RecordingServer,
    recorder,
    sandbox,
)

REPO = Path(__file__).resolve().parents[2]


class Run:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def json(self) -> Any:
        return json.loads(self.out)


def cli(*argv: str) -> Run:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return Run(code, out.getvalue(), err.getvalue())


@pytest.fixture
def argyle_env(sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> SandboxServer:
    """The CLI configured by environment for the sandbox, as a person or script would."""
    monkeypatch.setenv("ARGYLE_API_URL", sandbox.base_url)
    monkeypatch.setenv("ARGYLE_API_KEY_ID", SANDBOX_KEY_ID)
    monkeypatch.setenv("ARGYLE_API_KEY_SECRET", SANDBOX_KEY_SECRET)
    return sandbox


def test_create_list_get_delete_cycle(argyle_env: SandboxServer) -> None:
    # When a subscription is created
    created = cli(
        "create",
        "--events",
        "activities.added,activities.removed",
        "users.fully_synced",
        "--url",
        "https://example.test/hook",
        "--name",
        "cycle",
        "--secret",
        "top-secret",
        "--days-synced",
        "7",
        "--json",
    )
    assert created.code == EXIT_OK, created.err
    sub = created.json()
    assert sub["events"] == ["activities.added", "activities.removed", "users.fully_synced"]
    assert sub["config"] == {"days_synced": 7}
    assert sub["has_secret"] is True and "top-secret" not in created.out

    # Then list shows it as a table and as JSON
    table = cli("list")
    assert table.code == EXIT_OK
    header, row = table.out.splitlines()
    assert header.split() == ["ID", "NAME", "EVENTS", "URL", "CREATED"]
    assert row.startswith(sub["id"]) and "https://example.test/hook" in row
    assert [s["id"] for s in cli("--json", "list").json()] == [sub["id"]]

    # And get shows it, in both forms
    assert cli("get", sub["id"], "--json").json() == sub
    details = cli("get", sub["id"]).out
    assert f"id          {sub['id']}" in details and "has_secret  True" in details

    # When it is deleted, it is gone, and a second delete or get is "not found"
    deleted = cli("delete", sub["id"])
    assert (deleted.code, deleted.out.strip()) == (EXIT_OK, f"deleted {sub['id']}")
    assert argyle_env.state.subscriptions == {}
    missing = cli("get", sub["id"])
    assert missing.code == EXIT_NOT_FOUND and "not found" in missing.err
    assert cli("delete", sub["id"]).code == EXIT_NOT_FOUND


@pytest.mark.parametrize(
    "argv",
    [
        ["create", "--events", "*"],  # no --url
        ["create", "--url", "https://x.test"],  # no --events
        ["create", "--events", "*", "--url", "https://x.test", "--days-synced", "0"],
        ["create", "--events", "*", "--url", "https://x.test", "--days-synced", "week"],
        ["create", "--events", ",", "--url", "https://x.test"],
        ["create", "--events", "*", "--url", "ftp://x.test"],
        ["get"],
        ["frobnicate"],
        ["subscribe-stack"],  # neither --stack-name nor --webhook-url/--secret-id
    ],
)
def test_usage_errors_exit_2_and_change_nothing(argyle_env: SandboxServer, argv: list[str]) -> None:
    run = cli(*argv)

    assert run.code == EXIT_USAGE
    assert run.err  # argparse's usage message or ours
    assert argyle_env.state.subscriptions == {}
    assert argyle_env.faults.requests_seen == 0  # nothing reached the API


def test_missing_credentials_are_a_usage_error(sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARGYLE_API_KEY_ID", raising=False)
    monkeypatch.delenv("ARGYLE_API_KEY_SECRET", raising=False)

    run = cli("list", "--api-url", sandbox.base_url)

    assert run.code == EXIT_USAGE and "ARGYLE_API_KEY_ID" in run.err


def test_wrong_credentials_exit_4_saying_so(argyle_env: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARGYLE_API_KEY_SECRET", "wrong")

    run = cli("list")

    assert run.code == EXIT_AUTH
    assert "401" in run.err and "API key id/secret" in run.err


def test_an_api_rejection_exits_1_with_argyles_message(argyle_env: SandboxServer) -> None:
    argyle_env.faults.fail_next = 1
    argyle_env.faults.fail_status = 400

    run = cli("list")

    assert run.code == EXIT_API_ERROR and "HTTP 400" in run.err


def test_an_unavailable_api_exits_5(argyle_env: SandboxServer) -> None:
    argyle_env.faults.rate_limit_next = 10
    argyle_env.faults.retry_after = "0"

    run = cli("list")

    assert run.code == EXIT_UNAVAILABLE and "429" in run.err


def test_credentials_can_come_from_secrets_manager(
    sandbox: SandboxServer, moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ARGYLE_API_KEY_ID", raising=False)
    arn = boto3.client("secretsmanager").create_secret(
        Name="cli-argyle-keys",
        SecretString=json.dumps({"api_key_id": SANDBOX_KEY_ID, "api_key_secret": SANDBOX_KEY_SECRET}),
    )["ARN"]

    run = cli("list", "--api-url", sandbox.base_url, "--credentials-secret-id", arn, "--json")

    assert (run.code, run.json()) == (EXIT_OK, [])


def test_the_module_and_its_help_run_as_a_program(sandbox: SandboxServer) -> None:
    env = dict(
        os.environ,
        ARGYLE_API_URL=sandbox.base_url,
        ARGYLE_API_KEY_ID=SANDBOX_KEY_ID,
        ARGYLE_API_KEY_SECRET=SANDBOX_KEY_SECRET,
    )
    sandbox.subscribe("https://example.test/p", ["*"], name="from python")

    listed = subprocess.run(
        [sys.executable, "-m", "argyle_ops.webhooks_cli", "list", "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    helped = subprocess.run(
        [sys.executable, "-m", "argyle_ops.webhooks_cli", "--help"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert listed.returncode == 0, listed.stderr
    assert [s["name"] for s in json.loads(listed.stdout)] == ["from python"]
    assert helped.returncode == 0 and "exit codes" in helped.stdout


# --- subscribe-stack ------------------------------------------------------------------------------


def test_subscribe_stack_rotates_the_secret_and_deliveries_verify_with_it(
    argyle_env: SandboxServer, recorder: RecordingServer, moto_server: str
) -> None:
    # Given the stack's webhook secret as template.yaml creates it
    secretsmanager = boto3.client("secretsmanager")
    secret_arn = secretsmanager.create_secret(
        Name="stack-webhook-secret", SecretString=json.dumps({"current": "deploy-time", "previous": ""})
    )["ARN"]
    webhook_url = recorder.url + "/webhooks/argyle"

    # When the stack is subscribed (local endpoints given explicitly)
    first = cli(
        "subscribe-stack",
        "--webhook-url",
        webhook_url,
        "--secret-id",
        secret_arn,
        "--endpoint-url",
        moto_server,
        "--json",
    )

    # Then the new secret is current, the deploy-time one previous, and Argyle signs with the new one
    assert first.code == EXIT_OK, first.err
    stored = parse_webhook_secrets(secretsmanager.get_secret_value(SecretId=secret_arn)["SecretString"])
    assert stored[1] == "deploy-time" and len(stored[0]) >= 32
    # (two subscriptions: every synced event, and accounts.updated alone with the account object)
    sub, status = argyle_env.state.subscriptions.values()
    assert sub.url == webhook_url and sub.events == list(SYNC_EVENTS) and sub.secret == stored[0]
    assert first.json()["subscription"]["id"] == sub.id and stored[0] not in first.out
    assert (status.events, status.config, status.secret) == (["accounts.updated"], {"include_resource": True},
                                                             stored[0])
    assert first.json()["account_status_subscription"]["id"] == status.id

    argyle_env.connect_account(n_activities=100)
    argyle_env.wait_for_deliveries(10)
    assert len(recorder.requests) >= 2
    for request in recorder.requests:
        verify(request.body, request.headers["x-argyle-signature"], stored)

    # When it runs again: one subscription remains, with the newest secret; the last one is previous
    second = cli("subscribe-stack", "--webhook-url", webhook_url, "--secret-id", secret_arn, "--json")
    assert second.code == EXIT_OK, second.err
    assert second.json()["removed"] == [sub.id, status.id]
    rotated = parse_webhook_secrets(secretsmanager.get_secret_value(SecretId=secret_arn)["SecretString"])
    assert rotated[1] == stored[0]
    assert [s.secret for s in argyle_env.state.subscriptions.values()] == [rotated[0], rotated[0]]


def test_subscribe_stack_revoke_previous_stops_the_old_secret_at_once(
    argyle_env: SandboxServer, recorder: RecordingServer, moto_server: str
) -> None:
    # Given a stack whose webhook secret may have leaked
    secretsmanager = boto3.client("secretsmanager")
    secret_arn = secretsmanager.create_secret(Name="leaked-webhook-secret", SecretString="leaked")["ARN"]
    common = ["--webhook-url", recorder.url + "/webhooks/argyle", "--secret-id", secret_arn, "--endpoint-url",
              moto_server]

    # When it is rotated with --revoke-previous
    run = cli("subscribe-stack", *common, "--revoke-previous")

    # Then only the new secret verifies from now on (no previous, no expiry to wait for)
    assert run.code == EXIT_OK, run.err
    value = json.loads(secretsmanager.get_secret_value(SecretId=secret_arn)["SecretString"])
    (signing,) = {s.secret for s in argyle_env.state.subscriptions.values()}  # the stack's subscriptions share it
    assert value == {"current": signing, "previous": ""}
    assert parse_webhook_secrets(json.dumps(value)) == (signing,)
    assert "previous one is revoked" in run.out

    # And without it, the old secret stays accepted for the hours asked, then no longer
    before = time.time()
    kept = cli("subscribe-stack", *common, "--previous-valid-hours", "2")
    assert kept.code == EXIT_OK, kept.err
    value = json.loads(secretsmanager.get_secret_value(SecretId=secret_arn)["SecretString"])
    assert value["previous"] == signing
    expires = datetime.fromisoformat(value["previous_expires_at"]).timestamp()
    assert before + 2 * 3600 - 1 <= expires <= time.time() + 2 * 3600
    assert parse_webhook_secrets(json.dumps(value), now=expires - 1)[1] == signing
    assert parse_webhook_secrets(json.dumps(value), now=expires) == (value["current"],)

    # And the two options together are a usage error that changes nothing
    both = cli("subscribe-stack", *common, "--revoke-previous", "--previous-valid-hours", "2")
    assert both.code == EXIT_USAGE and "not allowed with" in both.err
    assert json.loads(secretsmanager.get_secret_value(SecretId=secret_arn)["SecretString"]) == value


def test_subscribe_stack_reads_the_stacks_outputs(
    argyle_env: SandboxServer, moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a deployed stack (in moto) whose outputs name the URL and both secrets
    monkeypatch.delenv("ARGYLE_API_KEY_ID", raising=False)  # credentials come from the stack too
    sm = boto3.client("secretsmanager")
    webhook_arn = sm.create_secret(Name="wh", SecretString="plain-old-secret")["ARN"]
    keys_arn = sm.create_secret(
        Name="keys", SecretString=json.dumps({"api_key_id": SANDBOX_KEY_ID, "api_key_secret": SANDBOX_KEY_SECRET})
    )["ARN"]
    outputs = {
        "WebhookUrl": "https://abc.execute-api.us-east-1.amazonaws.com/dev/webhooks/argyle",
        "WebhookSecretArn": webhook_arn,
        "ArgyleCredentialsSecretArn": keys_arn,
    }
    template = {
        "Resources": {"Handle": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
        "Outputs": {k: {"Value": v} for k, v in outputs.items()},
    }
    with pytest.warns(UserWarning):  # moto does not model the placeholder resource
        boto3.client("cloudformation").create_stack(StackName="argyle-sync", TemplateBody=json.dumps(template))

    run = cli("subscribe-stack", "--stack-name", "argyle-sync", "--days-synced", "14")

    assert run.code == EXIT_OK, run.err
    sub, status = argyle_env.state.subscriptions.values()
    assert sub.url == outputs["WebhookUrl"] and sub.config == {"days_synced": 14}
    assert status.config == {"include_resource": True} and status.secret == sub.secret
    assert parse_webhook_secrets(sm.get_secret_value(SecretId=webhook_arn)["SecretString"]) == (
        sub.secret,
        "plain-old-secret",
    )


def test_subscribe_stack_with_an_unknown_stack_exits_6(argyle_env: SandboxServer, moto_server: str) -> None:
    run = cli("subscribe-stack", "--stack-name", "no-such-stack")

    assert run.code == EXIT_AWS and "no-such-stack" in run.err
    assert argyle_env.state.subscriptions == {}


def test_subscribe_stack_with_wrong_keys_changes_no_secret(
    argyle_env: SandboxServer, moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARGYLE_API_KEY_SECRET", "wrong")
    sm = boto3.client("secretsmanager")
    arn = sm.create_secret(Name="wh2", SecretString="unchanged")["ARN"]

    run = cli("subscribe-stack", "--webhook-url", "https://x.test/h", "--secret-id", arn)

    assert run.code == EXIT_AUTH
    assert sm.get_secret_value(SecretId=arn)["SecretString"] == "unchanged"


def test_include_resource_is_for_a_single_event_subscription(argyle_env: SandboxServer) -> None:
    # Argyle attaches the resource only to a subscription of one event
    one = cli(
        "create", "--events", "accounts.updated", "--url", "https://example.test/a", "--include-resource", "--json"
    )
    several = cli(
        "create",
        "--events",
        "accounts.updated,accounts.connected",
        "--url",
        "https://example.test/b",
        "--include-resource",
    )

    assert one.code == EXIT_OK, one.err
    assert one.json()["config"] == {"include_resource": True}
    assert several.code == EXIT_API_ERROR and "exactly one event" in several.err
    assert len(argyle_env.state.subscriptions) == 1
