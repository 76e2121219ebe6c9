"""template.yaml checked by the real tools (cfn-lint, `sam validate --lint`, `sam build`) and by rule."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from local_stack.template_resources import TEMPLATE_PATH, deployed_resources_of_type, load_template, resources_of_type

ROOT = TEMPLATE_PATH.parent


def sam_cli() -> str:
    """The SAM CLI from .venv-sam (made by `make test`), or one on PATH."""
    candidates = [os.environ.get("SAM_CLI", ""), str(ROOT / ".venv-sam" / "bin" / "sam"), shutil.which("sam") or ""]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return candidate
    pytest.fail("SAM CLI not found: run the tests with `make test`, which installs it in .venv-sam")


def python313_dir() -> str | None:
    # pyenv's real interpreter first: its shim on PATH fails unless 3.13 is pyenv's selected version
    for base in (Path("/root/.pyenv/versions"), Path.home() / ".pyenv" / "versions"):
        for candidate in sorted(base.glob("3.13*/bin/python3.13")) if base.exists() else []:
            return str(candidate.parent)
    found = shutil.which("python3.13")
    if found and subprocess.run([found, "--version"], capture_output=True).returncode == 0:
        return str(Path(found).parent)
    return None


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0"}
    env.pop("AWS_ENDPOINT_URL", None)
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600, **kw)  # type: ignore[call-overload]


def test_cfn_lint_passes() -> None:
    result = run([str(Path(sys.executable).parent / "cfn-lint"), str(TEMPLATE_PATH)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_sam_validate_with_lint_passes() -> None:
    result = run([sam_cli(), "validate", "--lint", "--template-file", str(TEMPLATE_PATH), "--region", "us-east-1"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is a valid SAM Template" in result.stdout + result.stderr


def test_sam_build_produces_both_functions_and_an_arm64_layer(tmp_path: Path) -> None:
    py313 = python313_dir()
    if py313 is None:  # the documented condition: sam build needs the runtime's Python
        pytest.skip("python3.13 is not on this machine; sam build for the python3.13 runtime needs it")
    env_path = f"{py313}:{os.environ['PATH']}"
    build_dir = tmp_path / "build"
    result = subprocess.run([sam_cli(), "build", "--build-dir", str(build_dir), "--template-file", str(TEMPLATE_PATH)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PATH": env_path, "SAM_CLI_TELEMETRY": "0"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert (build_dir / "ReceiverFunction" / "receiver_handler.py").exists()
    assert (build_dir / "SyncFunction" / "sync_handler.py").exists()
    layer = build_dir / "SharedLayer" / "python"
    assert (layer / "argyle_pipeline" / "receiving" / "signature.py").exists()
    native = list((layer / "pydantic_core").glob("*.so"))
    assert native and "aarch64" in native[0].name, [p.name for p in native]


def test_queue_is_fifo_encrypted_with_a_dlq_for_14_days() -> None:
    template = load_template()
    queues = deployed_resources_of_type(template, "AWS::SQS::Queue")  # default parameters: no customer key
    main, dlq = queues["EventsQueue"], queues["EventsDLQ"]
    assert main["FifoQueue"] is True and dlq["FifoQueue"] is True
    assert main["SqsManagedSseEnabled"] is True and dlq["SqsManagedSseEnabled"] is True
    assert main["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["EventsDLQ", "Arn"]}
    assert main["RedrivePolicy"]["maxReceiveCount"] >= 3
    assert dlq["MessageRetentionPeriod"] == 14 * 24 * 3600
    sync_timeout = template["Resources"]["SyncFunction"]["Properties"]["Timeout"]
    assert main["VisibilityTimeout"] >= 6 * sync_timeout


def test_globals_and_functions() -> None:
    template = load_template()
    fn_globals = template["Globals"]["Function"]
    assert fn_globals["Runtime"] == "python3.13"
    assert fn_globals["Architectures"] == ["arm64"]
    assert fn_globals["Tracing"] == "Active"
    receiver = template["Resources"]["ReceiverFunction"]["Properties"]
    route = receiver["Events"]["ArgyleWebhook"]
    assert route["Type"] == "HttpApi"
    assert (route["Properties"]["Method"], route["Properties"]["Path"]) == ("POST", "/webhooks/argyle")
    sync_events = template["Resources"]["SyncFunction"]["Properties"]["Events"]["QueuedWebhooks"]
    assert sync_events["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    # Each function logs to a log group of its own, with a retention (and its role may write there only)
    groups = resources_of_type(template, "AWS::Logs::LogGroup")
    for fn in ("ReceiverFunction", "SyncFunction", "ReconcileFunction"):
        group = template["Resources"][fn]["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        assert "RetentionInDays" in groups[group]
        role = template["Resources"][fn]["Properties"]["Role"]["Fn::GetAtt"][0]
        (policy,) = template["Resources"][role]["Properties"]["Policies"]
        logs = [s for s in policy["PolicyDocument"]["Statement"] if "logs:PutLogEvents" in s.get("Action", [])]
        assert [s["Resource"] for s in logs] == [{"Fn::GetAtt": [group, "Arn"]}]


def test_log_retention_is_at_least_a_year_in_prod() -> None:
    template = load_template()
    retention = template["Parameters"]["ProdLogRetentionDays"]
    assert int(retention["Default"]) >= 365 and min(retention["AllowedValues"]) >= 365
    for name, group in resources_of_type(template, "AWS::Logs::LogGroup").items():
        assert group["RetentionInDays"] == {
            "Fn::If": ["IsProd", {"Ref": "ProdLogRetentionDays"}, {"Fn::FindInMap": ["StageConfig", "dev",
                                                                                     "LogRetentionDays"]}]}, name


def test_no_hard_coded_physical_names_and_outputs_for_tools() -> None:
    template = load_template()
    for name, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        for key in ("QueueName", "TableName", "FunctionName", "Name"):
            # An EventBus requires a Name: one made of the stack's name is not hard-coded.
            derived = "${AWS::StackName}" in str((props.get(key) or {}).get("Fn::Sub", "")) \
                if isinstance(props.get(key), dict) else False
            assert key not in props or derived, f"{name} hard-codes {key}"
    assert {"WebhookUrl", "EventsQueueUrl", "WebhookSecretArn", "EventsDlqUrl"} <= set(template["Outputs"])


def test_webhook_secret_generated_with_room_for_rotation() -> None:
    secret = load_template()["Resources"]["WebhookSecret"]
    gen = secret["Properties"]["GenerateSecretString"]
    assert gen["GenerateStringKey"] == "current"
    assert "previous" in gen["SecretStringTemplate"]
    assert secret["Condition"] == "CreateWebhookSecret"


def test_alarms_cover_the_operational_failures_and_can_notify_a_topic() -> None:
    template = load_template()
    alarms = resources_of_type(template, "AWS::CloudWatch::Alarm")
    watched = {(a.get("Namespace"), a.get("MetricName")) for a in alarms.values()}
    assert ("AWS/SQS", "ApproximateNumberOfMessagesVisible") in watched      # DLQ not empty
    assert ("AWS/ApiGateway", "5xx") in watched                              # receiver 5xx
    assert ("AWS/SQS", "ApproximateAgeOfOldestMessage") in watched           # oldest message age
    assert ("ArgyleSync", "ArgyleAuthFailures") in watched                   # Argyle 401s
    assert any("Metrics" in a for a in alarms.values())                      # sync errors (metric math)
    for name, alarm in alarms.items():
        assert alarm["AlarmActions"] == {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}],
                                                    {"Ref": "AWS::NoValue"}]}, name
    filters = resources_of_type(template, "AWS::Logs::MetricFilter")
    patterns = " ".join(f["FilterPattern"] for f in filters.values())
    # The log lines the filters count are the ones the sync writes
    sync_code = (ROOT / "functions" / "sync" / "sync_handler.py").read_text()
    retry_line = "sync failed, SQS will retry the message"
    assert retry_line in patterns and retry_line in sync_code
    assert "Argyle rejected the API keys" in patterns and "Argyle rejected the API keys" in sync_code


def test_dashboard_body_is_valid_json_once_substituted() -> None:
    import json
    import re

    body = load_template()["Resources"]["OperationsDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    rendered = re.sub(r"\$\{[^}]+\}", "x", body)
    widgets = json.loads(rendered)["widgets"]
    assert len(widgets) >= 5
    titles = " ".join(w["properties"]["title"] for w in widgets)
    assert "DLQ" in titles and "lag" in titles


def test_the_sync_retry_schedule_matches_the_queue_and_reaches_the_dlq_within_an_hour() -> None:
    from argyle_pipeline.sync.retry_schedule import RetrySchedule, parse_delays

    template = load_template()
    queue = template["Resources"]["EventsQueue"]["Properties"]
    env = template["Resources"]["SyncFunction"]["Properties"]["Environment"]["Variables"]
    schedule = RetrySchedule(parse_delays(env["RETRY_DELAYS_SECONDS"]), int(env["MAX_RECEIVE_COUNT"]))
    # The sync says "attempt n of N" and "to the DLQ" from the same count SQS uses
    assert schedule.max_attempts == queue["RedrivePolicy"]["maxReceiveCount"]
    # Every delay is shorter than the visibility timeout that protects a record still in progress
    assert max(schedule.delays_seconds) < queue["VisibilityTimeout"]
    # A poison message blocks its account for under an hour of delays, not 5 x 90 minutes
    assert schedule.seconds_to_dead_letter() <= 3600
    # And the oldest-message alarm's default stays above what a transient failure costs (three retries)
    default_alarm = template["Parameters"]["OldestMessageAgeAlarmSeconds"]["Default"]
    assert sum(schedule.after_failure(n).delay_seconds for n in (1, 2, 3)) < default_alarm


def test_the_sync_may_change_visibility_on_its_own_queue_only() -> None:
    # (tests/security/test_iam_least_privilege.py also derives this grant from the code that uses it)
    template = load_template()
    granted = {}
    for name, resource in template["Resources"].items():
        if resource["Type"] == "AWS::IAM::Role":
            for statement in resource["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]:
                actions = statement.get("Action", [])
                if "sqs:ChangeMessageVisibility" in (actions if isinstance(actions, list) else [actions]):
                    granted[name] = statement["Resource"]
    assert granted == {"SyncFunctionRole": {"Fn::GetAtt": ["EventsQueue", "Arn"]}}
