"""The scanners a reviewer runs, run here on every `make test`: checkov on the template as
CloudFormation will see it (after the SAM transform), cfn-lint-serverless on template.yaml. Each
accepted finding is listed below with its reason; a new finding fails, and so does a listed one
that no longer occurs (the list stays true).

checkov lives in .venv-checkov (it pins an older boto3 than .venv needs): `make test` makes it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from local_stack.template_resources import TEMPLATE_PATH, load_template
from tests.security.test_template_security import sam_transform

ROOT = TEMPLATE_PATH.parent

_NO_VPC = ("the functions reach only AWS's public endpoints and Argyle's API, over TLS; a VPC would add NAT or "
           "endpoints and cold-start cost, and protect nothing more")
_NO_RESERVED = ("reserved concurrency is taken from the account's pool (a new account has none to give, and the deploy "
                "would fail); the receiver is bounded by the API's throttling, the sync by its event source's "
                "MaximumConcurrency (SyncMaxConcurrency), the reconciler by its schedule (the receiver and the sync "
                "take an optional reservation: ReceiverReservedConcurrency, SyncReservedConcurrency)")
_ENV_KMS = ("the environment holds resource names and settings, never a secret (test_template_security's "
            "secret-in-environment rule); Lambda encrypts it at rest with its own key")
ACCEPTED_CHECKOV: dict[tuple[str, str], str] = {
    ("CKV_AWS_117", "ReceiverFunction"): _NO_VPC,
    ("CKV_AWS_117", "SyncFunction"): _NO_VPC,
    ("CKV_AWS_117", "ReconcileFunction"): _NO_VPC,
    ("CKV_AWS_115", "ReconcileFunction"): _NO_RESERVED,
    ("CKV_AWS_173", "ReceiverFunction"): _ENV_KMS,
    ("CKV_AWS_173", "SyncFunction"): _ENV_KMS,
    ("CKV_AWS_173", "ReconcileFunction"): _ENV_KMS,
    ("CKV_AWS_116", "ReceiverFunction"): "invoked synchronously by API Gateway: a failure is a 5xx that Argyle "
                                         "retries; a Lambda DLQ only receives failed asynchronous invocations",
    ("CKV_AWS_116", "SyncFunction"): "invoked by its SQS event source: a record that keeps failing goes to "
                                     "EventsDLQ through the queue's redrive policy, not a Lambda DLQ",
    ("CKV_AWS_116", "ReconcileFunction"): "the schedule retries a failed run twice and the next period runs again; "
                                          "a reconcile is idempotent, nothing waits in a DLQ to be replayed",
    ("CKV_AWS_28", "IdempotencyTable"): "its records expire within IdempotencyDays and only save repeated work; "
                                        "restoring them from a backup would have no value",
}
ACCEPTED_CFN_LINT_SERVERLESS: dict[tuple[str, str], str] = {
    ("ES6000", "EventsDLQ"): "it is the dead-letter queue; a DLQ of the DLQ would only move the question",
    ("WS1004", "ReceiverFunction"): "the rule looks for a log group named /aws/lambda/<function>; the function "
                                    "logs to ReceiverLogGroup (LoggingConfig), which has a retention "
                                    "(tests/integration/test_template.py::test_globals_and_functions)",
    ("WS1004", "SyncFunction"): "likewise: SyncLogGroup, through LoggingConfig",
    ("WS1004", "ReconcileFunction"): "likewise: ReconcileLogGroup, through LoggingConfig",
}


def checkov() -> str:
    candidates = [os.environ.get("CHECKOV", ""), str(ROOT / ".venv-checkov" / "bin" / "checkov")]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return candidate
    pytest.fail("checkov not found: run the tests with `make test`, which installs it in .venv-checkov")


def run_checkov(template: dict[str, Any], tmp_path: Path) -> set[tuple[str, str]]:
    """(check id, logical id) of every failed check on this CloudFormation template."""
    path = tmp_path / "template.json"
    path.write_text(json.dumps(template))
    # --skip-download and BC_SKIP_MAPPING: no call to Prisma Cloud (no network here, none needed)
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    result = subprocess.run([checkov(), "-f", str(path), "--framework", "cloudformation", "-o", "json",
                             "--compact", "--quiet", "--skip-download"],
                            capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path)
    assert result.returncode in (0, 1), result.stderr[-3000:]  # 1: some check failed
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    assert [r["check_type"] for r in reports] == ["cloudformation"], result.stdout[:2000]
    assert reports[0]["summary"]["parsing_errors"] == 0 and reports[0]["summary"]["passed"] > 0
    return {(c["check_id"], c["resource"].split(".", 1)[1]) for c in reports[0]["results"]["failed_checks"]}


def run_cfn_lint_serverless(template_path: Path) -> set[tuple[str, str]]:
    """(rule id, logical id) of every cfn-lint finding, its own rules and the serverless ones."""
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    result = subprocess.run([str(cfn_lint), "--append-rules", "cfn_lint_serverless.rules", "--format", "json",
                             "--", str(template_path)], capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert result.returncode in (0, 2, 4, 6), result.stderr[-3000:]  # bit flags: 2 error, 4 warning
    findings = json.loads(result.stdout or "[]")
    return {(f["Rule"]["Id"], f["Location"]["Path"][1]) for f in findings}


@pytest.fixture(scope="module")
def translated() -> dict[str, Any]:
    (cfn,) = sam_transform([load_template()])
    return cfn


def test_checkov_finds_nothing_but_the_accepted_findings(translated: dict[str, Any], tmp_path: Path) -> None:
    # When checkov scans what CloudFormation would deploy
    failed = run_checkov(translated, tmp_path)
    # Then every finding is an accepted one, and every accepted one still occurs
    assert failed - set(ACCEPTED_CHECKOV) == set(), f"new checkov findings: {sorted(failed - set(ACCEPTED_CHECKOV))}"
    assert set(ACCEPTED_CHECKOV) - failed == set(), f"no longer found, remove: {sorted(set(ACCEPTED_CHECKOV) - failed)}"


def test_cfn_lint_serverless_finds_nothing_but_the_accepted_findings() -> None:
    found = run_cfn_lint_serverless(TEMPLATE_PATH)
    accepted = set(ACCEPTED_CFN_LINT_SERVERLESS)
    assert found - accepted == set(), f"new cfn-lint-serverless findings: {sorted(found - accepted)}"
    assert accepted - found == set(), f"no longer found, remove: {sorted(accepted - found)}"


def test_a_new_weakness_is_a_new_finding_for_both(translated: dict[str, Any], tmp_path: Path) -> None:
    # Given the template with a table's encryption off and the API's access logs gone
    weak = json.loads(json.dumps(translated))
    weak["Resources"]["ActivitiesTable"]["Properties"].pop("SSESpecification")
    stage = next(r for r in weak["Resources"].values() if r["Type"] == "AWS::ApiGatewayV2::Stage")
    stage["Properties"].pop("AccessLogSettings")
    # Then checkov reports what is new (and the accepted findings do not hide it)
    new = run_checkov(weak, tmp_path) - set(ACCEPTED_CHECKOV)
    assert ("CKV_AWS_119", "ActivitiesTable") in new and any(check == "CKV_AWS_95" for check, _ in new), new
    # And cfn-lint-serverless reports the access logs gone from template.yaml
    source = load_template()
    source["Resources"]["WebhookApi"]["Properties"].pop("AccessLogSettings")
    path = tmp_path / "weak.json"
    path.write_text(json.dumps(source))
    assert ("ES2000", "WebhookApi") in run_cfn_lint_serverless(path) - set(ACCEPTED_CFN_LINT_SERVERLESS)
