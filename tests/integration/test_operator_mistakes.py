"""Every mistake a new user made with the operator tools and the local stack, run as the user runs
it (a process of its own), is answered in one line on stderr that says what is wrong and what to
do, with its documented exit code, and never a traceback. AWS is moto's server on loopback."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from local_stack.template_resources import StackResources
from tests.support.network import free_port

ROOT = Path(__file__).resolve().parents[2]
SYNCED = [sys.executable, "-m", "argyle_ops.synced_cli"]
WEBHOOKS = [sys.executable, "-m", "argyle_ops.webhooks_cli"]
REDRIVE = [sys.executable, "-m", "argyle_ops.redrive"]
DEV = [sys.executable, "-m", "local_stack.dev"]
NO_AWS_CONFIG = {"AWS_CONFIG_FILE": "/nonexistent/aws-config", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/creds",
                 "AWS_EC2_METADATA_DISABLED": "true"}


@dataclass
class Answer:
    code: int
    out: str
    err: str

    @property
    def line(self) -> str:
        """The one line on stderr (fails the test if there is not exactly one)."""
        lines = self.err.splitlines()
        assert len(lines) == 1 and "Traceback" not in self.err, self.err
        return lines[0]


def run(argv: list[str], env: dict[str, str | None] | None = None, timeout: float = 60) -> Answer:
    full = {k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL"}
    full["PYTHONPATH"] = os.pathsep.join(str(ROOT / p) for p in ("layers/shared", "."))
    for name, value in (env or {}).items():
        if value is None:
            full.pop(name, None)
        else:
            full[name] = value
    done = subprocess.run(argv, capture_output=True, text=True, env=full, cwd=ROOT, timeout=timeout)
    return Answer(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def closed_port() -> int:
    return free_port()  # nothing listens there


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


# --- argyle-synced -----------------------------------------------------------------------------

def test_synced_with_a_wrong_table_name(moto_server_url: str) -> None:
    answer = run([*SYNCED, "--endpoint-url", moto_server_url, "--activities-table", "no-such-table",
                  "--sync-state-table", "nor-this", "state", "acc-1"])
    assert answer.code == 6
    assert re.fullmatch(r"argyle-synced: error: table no-such-table or nor-this does not exist in region us-east-1 "
                        r"at http://127\.0\.0\.1:\d+: check the table names \(or --stack-name\) and --region",
                        answer.line)


def test_synced_with_an_unknown_stack(moto_server_url: str) -> None:
    answer = run([*SYNCED, "--endpoint-url", moto_server_url, "--stack-name", "no-such-stack", "accounts"])
    assert answer.code == 6
    assert answer.line.startswith("argyle-synced: error: stack 'no-such-stack' does not exist in region us-east-1")
    assert "check --stack-name and --region" in answer.line and "local stack has no CloudFormation stack" in answer.line


def test_synced_without_credentials(moto_server_url: str) -> None:
    answer = run([*SYNCED, "--endpoint-url", moto_server_url, "--activities-table", "a", "--sync-state-table", "s",
                  "accounts"], env={"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None,
                                    "AWS_SESSION_TOKEN": None, "AWS_PROFILE": None, **NO_AWS_CONFIG})
    assert answer.code == 6
    assert answer.line == ("argyle-synced: error: no AWS credentials: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
                           "AWS_SECRET_ACCESS_KEY (for the local stack any value, e.g. local)")


def test_synced_with_an_unreachable_endpoint(closed_port: int) -> None:
    answer = run([*SYNCED, "--endpoint-url", f"http://127.0.0.1:{closed_port}", "--activities-table", "a",
                  "--sync-state-table", "s", "accounts"])
    assert answer.code == 6
    assert answer.line == (f"argyle-synced: error: cannot reach http://127.0.0.1:{closed_port}/: is the local stack "
                           "running (`make dev`), on that port?")


def test_synced_without_a_region() -> None:
    answer = run([*SYNCED, "--activities-table", "a", "--sync-state-table", "s", "accounts"],
                 env={"AWS_REGION": None, "AWS_DEFAULT_REGION": None, **NO_AWS_CONFIG})
    assert answer.code == 2
    assert answer.line == "argyle-synced: error: no AWS region: pass --region, or set AWS_REGION / AWS_DEFAULT_REGION"


@pytest.fixture
def tables(stack_on_server: StackResources, moto_server: str) -> list[str]:
    return ["--endpoint-url", moto_server, "--activities-table", stack_on_server.tables["ActivitiesTable"],
            "--sync-state-table", stack_on_server.tables["SyncStateTable"],
            "--queue-url", stack_on_server.queue_urls["EventsQueue"]]


def test_synced_activities_of_an_account_nobody_knows_is_not_found(tables: list[str]) -> None:
    # Like `state`, not an empty list and success
    for command in (["activities", "no-such-account"], ["state", "no-such-account"], ["counts", "no-such-account"]):
        answer = run([*SYNCED, *tables, *command])
        assert (answer.code, answer.out) == (1, "")
        assert answer.line == ("argyle-synced: error: the sync has no state and no activities for account "
                               "no-such-account: check the id (`argyle-synced accounts` lists the known ones)")


def test_synced_resync_of_an_account_nobody_knows_queues_nothing(tables: list[str],
                                                                  stack_on_server: StackResources) -> None:
    answer = run([*SYNCED, *tables, "resync", "no-such-account"])
    assert answer.code == 1
    assert answer.line.startswith("argyle-synced: error: the sync has never seen account no-such-account")
    assert "--force" in answer.line
    sqs = boto3.client("sqs")
    attributes = sqs.get_queue_attributes(QueueUrl=stack_on_server.queue_urls["EventsQueue"],
                                          AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "0"
    # And --force queues it, for an account whose webhooks were all missed
    forced = run([*SYNCED, *tables, "resync", "no-such-account", "--force"])
    assert forced.code == 0 and '"queued": "resync"' in forced.out


# --- argyle-webhooks and make redrive --------------------------------------------------------------

def test_subscribe_stack_without_a_region() -> None:
    answer = run([*WEBHOOKS, "subscribe-stack", "--stack-name", "argyle-activity-sync"],
                 env={"AWS_REGION": None, "AWS_DEFAULT_REGION": None, **NO_AWS_CONFIG})
    assert answer.code == 2
    assert answer.line == ("argyle-webhooks: error: no AWS region: pass --region, or set AWS_REGION / "
                           "AWS_DEFAULT_REGION")


def test_subscribe_stack_with_an_unreachable_endpoint(closed_port: int) -> None:
    answer = run([*WEBHOOKS, "--endpoint-url", f"http://127.0.0.1:{closed_port}", "subscribe-stack",
                  "--stack-name", "argyle-activity-sync"])
    assert answer.code == 6
    assert answer.line == (f"argyle-webhooks: error: cannot reach http://127.0.0.1:{closed_port}/: is the local stack "
                           "running (`make dev`), on that port?")


def test_redrive_with_an_unknown_stack(moto_server_url: str) -> None:
    answer = run([*REDRIVE, "--stack-name", "no-such-stack", "--endpoint-url", moto_server_url])
    assert answer.code == 6
    assert answer.line.startswith("make redrive: error: stack 'no-such-stack' does not exist in region us-east-1")


# --- make dev ----------------------------------------------------------------------------------

@pytest.mark.parametrize("taken", ["MOTO_PORT", "RECEIVER_PORT"])
def test_make_dev_with_a_port_taken_says_so_and_exits(taken: str, taken_port: int) -> None:
    ports = {name: str(free_port()) for name in ("MOTO_PORT", "RECEIVER_PORT", "SANDBOX_PORT")}
    ports[taken] = str(taken_port)
    # The run's own timeout is the proof that it does not hang
    answer = run(DEV, env=ports, timeout=30)
    assert answer.code == 3
    what = {"MOTO_PORT": "the AWS endpoint, moto", "RECEIVER_PORT": "the webhook receiver"}[taken]
    assert answer.line == (f"make dev: error: port {taken_port} on 127.0.0.1 ({what}) is already in use: stop what "
                           f"holds it (another `make dev`?), or choose another port, e.g. {taken}={taken_port + 1} "
                           "make dev")


def test_make_dev_with_a_setting_that_is_not_a_number() -> None:
    answer = run(DEV, env={"SYNC_WORKERS": "two"}, timeout=30)
    assert answer.code == 2
    assert answer.line == "make dev: error: SYNC_WORKERS='two' is not a whole number: fix or unset it"


@pytest.mark.parametrize(("env", "says"), [
    ({"ARGYLE_API_VERSION": "v3"}, "unknown Argyle API version 'v3': use one of v1, v2"),
    ({"ARGYLE_API_VERSION": "v2", "ARGYLE_API_URL": "https://api-sandbox.argyle.com/v1"},
     "the Argyle API URL https://api-sandbox.argyle.com/v1 is a v1 URL, but the API version is v2"),
])
def test_make_dev_with_an_api_version_it_cannot_use(env: dict[str, str | None], says: str) -> None:
    answer = run(DEV, env=env, timeout=30)
    assert answer.code == 2
    assert answer.line.startswith(f"make dev: error: {says}") and answer.line.endswith(": fix or unset it")


def test_make_sandbox_with_its_port_taken(taken_port: int) -> None:
    answer = run([sys.executable, "-m", "argyle_sandbox", "--port", str(taken_port)], timeout=30)
    assert answer.code == 3
    assert answer.line == (f"argyle-sandbox: error: cannot listen on 127.0.0.1:{taken_port} (Address already in "
                           "use): stop what holds it, or choose another --port")
