"""template.yaml, as CloudFormation will see it after the SAM transform, grants nothing wider than
the stack's own resources and stores nothing unencrypted.

The SAM translator (the code `sam deploy` runs, via tests/security/sam_transform.py in .venv-sam)
expands the policy templates (SQSSendMessagePolicy, DynamoDBCrudPolicy...) into the roles' inline
statements and attaches its managed policies; the rules below then read the real output:

- no Allow statement has a `*` in an action, unless the pattern is listed below and matches
  only the actions it is listed for (checked against IAM's list of the service's actions);
- every Resource is one of the stack's own resources (Ref / GetAtt / Sub of its logical ids, a
  `*` only after such a reference, e.g. a table's `/index/*`) or a secret ARN parameter, except
  the actions AWS only accepts on "*" (X-Ray);
- managed policies: only those listed, with their documents checked by the same rules, each
  `*` listed with its reason;
- queues have SSE (SQS-managed or KMS), tables SSESpecification.SSEEnabled;
- Lambda permissions name their source; no environment variable carries a secret's value.

The same check runs on mutated templates, to prove it reports what it is meant to.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from local_stack.template_resources import TEMPLATE_PATH, load_template

ROOT = TEMPLATE_PATH.parent
TRANSFORM_SCRIPT = Path(__file__).with_name("sam_transform.py")

# --- documented exceptions ---------------------------------------------------------------------

# Actions AWS only authorizes on Resource "*" (Service Authorization Reference: no resource types).
RESOURCE_STAR_ACTIONS = {
    "xray:PutTraceSegments": "X-Ray has no resource-level permissions; Tracing: Active needs it",
    "xray:PutTelemetryRecords": "X-Ray has no resource-level permissions; Tracing: Active needs it",
    "xray:GetSamplingRules": "X-Ray has no resource-level permissions; Tracing: Active needs it",
    "xray:GetSamplingTargets": "X-Ray has no resource-level permissions; Tracing: Active needs it",
    "xray:GetSamplingStatisticSummaries": "X-Ray has no resource-level permissions; Tracing: Active needs it",
}

# Wildcard actions SAM's policy templates produce, and every action each may match.
WILDCARD_ACTIONS = {
    "sqs:SendMessage*": (frozenset({"sqs:SendMessage", "sqs:SendMessageBatch"}),
                         "SAM's SQSSendMessagePolicy: the send actions only"),
}

# IAM's SQS actions (Service Authorization Reference), to expand the patterns above.
KNOWN_ACTIONS = {
    "sqs": ["AddPermission", "CancelMessageMoveTask", "ChangeMessageVisibility", "ChangeMessageVisibilityBatch",
            "CreateQueue", "DeleteMessage", "DeleteMessageBatch", "DeleteQueue", "GetQueueAttributes",
            "GetQueueUrl", "ListDeadLetterSourceQueues", "ListMessageMoveTasks", "ListQueueTags", "ListQueues",
            "PurgeQueue", "ReceiveMessage", "RemovePermission", "SendMessage", "SendMessageBatch",
            "SetQueueAttributes", "StartMessageMoveTask", "TagQueue", "UntagQueue"],
}

# Parameters that name one existing resource the deployer chooses (the stack's own, by contract).
RESOURCE_PARAMETERS = {
    "ExistingWebhookSecretArn": "the deployer's own webhook secret, used instead of the generated one",
    "ExistingArgyleCredentialsSecretArn": "the deployer's own Argyle API key secret",
}


@dataclass(frozen=True)
class ManagedPolicy:
    """An AWS managed policy SAM attaches, its document (as AWS publishes it), the roles that may
    carry it, and why each of its Resource "*" grants is accepted."""

    statements: tuple[dict[str, Any], ...]
    roles: frozenset[str]
    star_reasons: dict[str, str]


_LOGS_STAR = ("SAM attaches it to every role it creates; the log groups are named after functions whose "
              "names CloudFormation generates, so it cannot be scoped without hand-written roles (accepted)")
_SQS_STAR = ("SAM attaches it for an SQS event source: Lambda's poller uses the function's role. Wider than "
             "EventsQueue (any queue of the account): accepted, see docs/security-tests.md")
MANAGED_POLICIES = {
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole": ManagedPolicy(
        statements=({"Effect": "Allow", "Action": ["logs:CreateLogGroup", "logs:CreateLogStream",
                                                    "logs:PutLogEvents"], "Resource": "*"},),
        roles=frozenset({"ReceiverFunctionRole", "SyncFunctionRole", "ReconcileFunctionRole"}),
        star_reasons={"logs:CreateLogGroup": _LOGS_STAR, "logs:CreateLogStream": _LOGS_STAR,
                      "logs:PutLogEvents": _LOGS_STAR}),
    "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess": ManagedPolicy(
        statements=({"Effect": "Allow", "Action": list(RESOURCE_STAR_ACTIONS), "Resource": ["*"]},),
        roles=frozenset({"ReceiverFunctionRole", "SyncFunctionRole", "ReconcileFunctionRole"}),
        star_reasons={}),
    "arn:aws:iam::aws:policy/service-role/AWSLambdaSQSQueueExecutionRole": ManagedPolicy(
        statements=({"Effect": "Allow", "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage",
                                                    "sqs:GetQueueAttributes", "logs:CreateLogGroup",
                                                    "logs:CreateLogStream", "logs:PutLogEvents"],
                     "Resource": "*"},),
        roles=frozenset({"SyncFunctionRole"}),
        star_reasons={"sqs:ReceiveMessage": _SQS_STAR, "sqs:DeleteMessage": _SQS_STAR,
                      "sqs:GetQueueAttributes": _SQS_STAR, "logs:CreateLogGroup": _LOGS_STAR,
                      "logs:CreateLogStream": _LOGS_STAR, "logs:PutLogEvents": _LOGS_STAR}),
}

PSEUDO_PARAMETERS = frozenset({"AWS::Partition", "AWS::Region", "AWS::AccountId", "AWS::URLSuffix",
                               "AWS::StackName"})
SECRET_LIKE_ENV = re.compile(r"SECRET|PASSWORD|TOKEN|API_KEY|PRIVATE", re.IGNORECASE)


# --- the check ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Finding:
    resource: str
    rule: str
    detail: str


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _branches(value: Any) -> Iterator[Any]:
    """Every value an expression can take across Fn::If branches (other expressions as they are)."""
    if isinstance(value, dict) and set(value) == {"Fn::If"}:
        _, yes, no = value["Fn::If"]
        yield from _branches(yes)
        yield from _branches(no)
    else:
        yield value


class TemplateCheck:
    def __init__(self, cfn: dict[str, Any]) -> None:
        self.cfn = cfn
        self.resources: dict[str, Any] = cfn.get("Resources", {})
        self.findings: list[Finding] = []

    def run(self) -> list[Finding]:
        for name, resource in self.resources.items():
            kind, props = resource.get("Type"), resource.get("Properties") or {}
            if kind == "AWS::IAM::Role":
                for policy in props.get("Policies") or []:
                    self._document(name, policy.get("PolicyDocument") or {})
                for arn in props.get("ManagedPolicyArns") or []:
                    self._managed(name, arn)
            elif kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
                self._document(name, props.get("PolicyDocument") or {})
                for arn in props.get("ManagedPolicyArns") or []:
                    self._managed(name, arn)
            elif kind == "AWS::SQS::Queue":
                if props.get("SqsManagedSseEnabled") is not True and not props.get("KmsMasterKeyId"):
                    self._found(name, "unencrypted-queue", "neither SqsManagedSseEnabled nor KmsMasterKeyId")
            elif kind == "AWS::DynamoDB::Table":
                if (props.get("SSESpecification") or {}).get("SSEEnabled") is not True:
                    self._found(name, "unencrypted-table", "SSESpecification.SSEEnabled is not true")
            elif kind == "AWS::Lambda::Permission":
                if not any(self._own(branch) for branch in _branches(props.get("SourceArn"))):
                    self._found(name, "permission-without-source", f"SourceArn {props.get('SourceArn')!r}")
            elif kind == "AWS::Lambda::Function":
                variables = ((props.get("Environment") or {}).get("Variables") or {})
                for var, value in variables.items():
                    # A secret's id or ARN may be configured; its value must come from Secrets Manager.
                    names_a_secret = SECRET_LIKE_ENV.search(var) and not var.endswith(("_ID", "_ARN", "_NAME"))
                    if names_a_secret and isinstance(value, str | int) and str(value):
                        self._found(name, "secret-in-environment", f"{var} holds a value, not a secret's id")
        return self.findings

    def _found(self, resource: str, rule: str, detail: str) -> None:
        self.findings.append(Finding(resource, rule, detail))

    # --- statements ----------------------------------------------------------------------------

    def _document(self, owner: str, document: dict[str, Any],
                  star_reasons: dict[str, str] | None = None) -> None:
        for statement in _as_list(document.get("Statement") or []):
            for branch in _branches(statement):
                if isinstance(branch, dict):
                    self._statement(owner, branch, star_reasons or {})

    def _statement(self, owner: str, statement: dict[str, Any], star_reasons: dict[str, str]) -> None:
        if statement.get("Effect") != "Allow":
            return
        for key in ("NotAction", "NotResource"):
            if key in statement:
                self._found(owner, "negated-grant", f"Allow with {key} grants everything else")
        actions = [a for a in _as_list(statement.get("Action") or []) if isinstance(a, str)]
        for action in actions:
            if "*" in action and not self._wildcard_ok(action):
                self._found(owner, "wildcard-action", action)
        for resource in _as_list(statement.get("Resource") or []):
            for branch in _branches(resource):
                if branch == "*":
                    wide = [a for a in actions if a not in RESOURCE_STAR_ACTIONS and a not in star_reasons]
                    if wide:
                        self._found(owner, "resource-star", f"{', '.join(wide)} on '*'")
                elif not self._own(branch):
                    self._found(owner, "foreign-resource", f"{', '.join(actions)} on {json.dumps(branch)}")

    @staticmethod
    def _wildcard_ok(action: str) -> bool:
        allowed = WILDCARD_ACTIONS.get(action)
        service = action.split(":", 1)[0]
        if allowed is None or service not in KNOWN_ACTIONS:
            return False
        matched = {f"{service}:{a}" for a in KNOWN_ACTIONS[service] if fnmatch.fnmatchcase(f"{service}:{a}", action)}
        return bool(matched) and matched <= allowed[0]

    def _managed(self, owner: str, arn: Any) -> None:
        policy = MANAGED_POLICIES.get(arn) if isinstance(arn, str) else None
        if policy is None:
            self._found(owner, "unlisted-managed-policy", json.dumps(arn))
            return
        if owner not in policy.roles:
            self._found(owner, "managed-policy-on-wrong-role", arn)
        self._document(owner, {"Statement": list(policy.statements)}, policy.star_reasons)

    # --- resources -----------------------------------------------------------------------------

    def _own(self, expression: Any) -> bool:
        """Whether the expression names only this stack's resources (or a resource parameter)."""
        if not isinstance(expression, dict) or len(expression) != 1:
            return False
        (function, argument), = expression.items()
        if function == "Ref":
            return argument in self.resources or argument in RESOURCE_PARAMETERS
        if function == "Fn::GetAtt":
            logical = argument[0] if isinstance(argument, list) else str(argument).split(".", 1)[0]
            return logical in self.resources
        if function == "Fn::If":
            return all(self._own(branch) for branch in _branches(expression))
        if function == "Fn::Sub":
            text, variables = (argument, {}) if isinstance(argument, str) else (argument[0], argument[1])
            return self._own_sub(text, variables)
        return False

    def _own_sub(self, text: str, variables: dict[str, Any]) -> bool:
        for name, value in variables.items():  # literal values are part of the text
            if isinstance(value, str):
                text = text.replace("${" + name + "}", value)
        first_own: int | None = None
        for match in re.finditer(r"\$\{([^}!]+)\}", text):
            name = match.group(1)
            if name in PSEUDO_PARAMETERS:
                continue
            if name in variables:
                own = self._own(variables[name])
            else:
                own = name.split(".", 1)[0] in self.resources or name in RESOURCE_PARAMETERS
            if not own:
                return False
            first_own = match.start() if first_own is None else first_own
        if first_own is None:
            return False
        return "*" not in text[:first_own]


def check(cfn: dict[str, Any]) -> list[Finding]:
    return TemplateCheck(cfn).run()


# --- the translator ----------------------------------------------------------------------------

def sam_python() -> str:
    """The Python of .venv-sam (made by `make test`), where samtranslator lives with the SAM CLI."""
    candidates = []
    if os.environ.get("SAM_CLI"):
        candidates.append(Path(os.environ["SAM_CLI"]).parent / "python")
    candidates.append(ROOT / ".venv-sam" / "bin" / "python")
    for candidate in candidates:
        if candidate.exists():
            return str(candidate)
    pytest.fail("samtranslator not found: run the tests with `make test`, which installs the SAM CLI in .venv-sam")


def sam_transform(templates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each SAM template as CloudFormation, by the real SAM translator."""
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}
    result = subprocess.run([sam_python(), str(TRANSFORM_SCRIPT)], input=json.dumps(templates),
                            capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr
    outputs = json.loads(result.stdout)
    errors = [o["error"] for o in outputs if "error" in o]
    assert not errors, errors
    return [o["template"] for o in outputs]


@pytest.fixture(scope="module")
def transformed() -> dict[str, Any]:
    (cfn,) = sam_transform([load_template()])
    return cfn


# --- the template as it is -----------------------------------------------------------------------

def test_the_translator_expands_the_policy_templates_into_inline_statements(transformed: dict[str, Any]) -> None:
    # Given the transformed template
    roles = {name: r["Properties"] for name, r in transformed["Resources"].items() if r["Type"] == "AWS::IAM::Role"}
    # Then each function has a role whose inline statements come from the policy templates, and the
    # reconcile schedule a role of its own (it may invoke that function, nothing else)
    assert set(roles) == {"ReceiverFunctionRole", "SyncFunctionRole", "ReconcileFunctionRole",
                          "ReconcileFunctionScheduleRole"}
    actions = {a for props in roles.values() for policy in props["Policies"]
               for statement in policy["PolicyDocument"]["Statement"] for a in _as_list(statement["Action"])}
    assert {"sqs:SendMessage*", "secretsmanager:GetSecretValue", "dynamodb:BatchWriteItem"} <= actions


def test_the_deployed_template_has_no_finding(transformed: dict[str, Any]) -> None:
    # When the rules read what CloudFormation would deploy
    findings = check(transformed)
    # Then there is nothing to report
    assert findings == []


def test_every_documented_exception_is_still_needed_and_matches_what_it_claims(transformed: dict[str, Any]) -> None:
    # Given the roles as deployed
    roles = {name: r["Properties"] for name, r in transformed["Resources"].items() if r["Type"] == "AWS::IAM::Role"}
    attached = {arn for props in roles.values() for arn in props.get("ManagedPolicyArns", [])}
    inline_actions = {a for props in roles.values() for policy in props["Policies"]
                      for statement in policy["PolicyDocument"]["Statement"] for a in _as_list(statement["Action"])}
    # Then each listed managed policy is attached (a stale exception is removed, not kept)
    assert attached == set(MANAGED_POLICIES)
    # And each listed wildcard action is used, and matches only what it is listed for
    assert set(WILDCARD_ACTIONS) <= inline_actions
    for pattern, (allowed, _reason) in WILDCARD_ACTIONS.items():
        service = pattern.split(":")[0]
        matched = {f"{service}:{a}" for a in KNOWN_ACTIONS[service] if fnmatch.fnmatchcase(f"{service}:{a}", pattern)}
        assert matched == allowed


# --- the check can fail ---------------------------------------------------------------------------

def _add_policy(function: str, policy: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(template: dict[str, Any]) -> None:
        template["Resources"][function]["Properties"].setdefault("Policies", []).append(policy)
    return mutate


def _set(path: list[str], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(template: dict[str, Any]) -> None:
        node = template
        for key in path[:-1]:
            node = node[key]
        if value is None:
            node.pop(path[-1], None)
        else:
            node[path[-1]] = value
    return mutate


def _statement(action: Any, resource: Any) -> dict[str, Any]:
    return {"Statement": [{"Effect": "Allow", "Action": action, "Resource": resource}]}


MUTATIONS: dict[str, tuple[Callable[[dict[str, Any]], None], Finding]] = {
    "dynamodb:* on the stack's table": (
        _add_policy("SyncFunction", _statement("dynamodb:*", {"Fn::GetAtt": ["ActivitiesTable", "Arn"]})),
        Finding("SyncFunctionRole", "wildcard-action", "dynamodb:*")),
    "every action": (
        _add_policy("ReceiverFunction", _statement("*", {"Fn::GetAtt": ["EventsQueue", "Arn"]})),
        Finding("ReceiverFunctionRole", "wildcard-action", "*")),
    "a wildcard pattern wider than the send actions": (
        _add_policy("ReceiverFunction", _statement("sqs:*Message*", {"Fn::GetAtt": ["EventsQueue", "Arn"]})),
        Finding("ReceiverFunctionRole", "wildcard-action", "sqs:*Message*")),
    "GetItem on every table": (
        _add_policy("SyncFunction", _statement(["dynamodb:GetItem"], "*")),
        Finding("SyncFunctionRole", "resource-star", "dynamodb:GetItem on '*'")),
    "a policy template naming another table": (
        _add_policy("SyncFunction", {"DynamoDBReadPolicy": {"TableName": "someone-elses-table"}}),
        Finding("SyncFunctionRole", "foreign-resource", "")),
    "every table of the account through Sub": (
        _add_policy("SyncFunction", _statement(["dynamodb:Query"], {
            "Fn::Sub": "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/*"})),
        Finding("SyncFunctionRole", "foreign-resource", "")),
    "a wildcard region before the stack's table": (
        _add_policy("SyncFunction", _statement(["dynamodb:Query"], {
            "Fn::Sub": "arn:${AWS::Partition}:dynamodb:*:${AWS::AccountId}:table/${ActivitiesTable}"})),
        Finding("SyncFunctionRole", "foreign-resource", "")),
    "a literal ARN": (
        _add_policy("ReceiverFunction", _statement(["sqs:SendMessage"],
                                                    "arn:aws:sqs:us-east-1:123456789012:other-queue")),
        Finding("ReceiverFunctionRole", "foreign-resource", "")),
    "Allow with NotAction": (
        _add_policy("ReceiverFunction", {"Statement": [{"Effect": "Allow", "NotAction": "iam:*",
                                                        "Resource": {"Fn::GetAtt": ["EventsQueue", "Arn"]}}]}),
        Finding("ReceiverFunctionRole", "negated-grant", "")),
    "AdministratorAccess": (
        _add_policy("SyncFunction", "AdministratorAccess"),
        Finding("SyncFunctionRole", "unlisted-managed-policy", '"arn:aws:iam::aws:policy/AdministratorAccess"')),
    "the SQS poller's policy on the receiver": (
        _add_policy("ReceiverFunction", "arn:aws:iam::aws:policy/service-role/AWSLambdaSQSQueueExecutionRole"),
        Finding("ReceiverFunctionRole", "managed-policy-on-wrong-role",
                "arn:aws:iam::aws:policy/service-role/AWSLambdaSQSQueueExecutionRole")),
    "a DLQ without SSE": (
        _set(["Resources", "EventsDLQ", "Properties", "SqsManagedSseEnabled"], None),
        Finding("EventsDLQ", "unencrypted-queue", "")),
    "a queue with SSE switched off": (
        _set(["Resources", "EventsQueue", "Properties", "SqsManagedSseEnabled"], False),
        Finding("EventsQueue", "unencrypted-queue", "")),
    "a table without SSESpecification": (
        _set(["Resources", "IdempotencyTable", "Properties", "SSESpecification"], None),
        Finding("IdempotencyTable", "unencrypted-table", "")),
    "a table with SSEEnabled false": (
        _set(["Resources", "ActivitiesTable", "Properties", "SSESpecification"], {"SSEEnabled": False}),
        Finding("ActivitiesTable", "unencrypted-table", "")),
    "a secret's value in the environment": (
        _set(["Resources", "ReceiverFunction", "Properties", "Environment", "Variables", "WEBHOOK_SECRET"],
             "hunter2"),
        Finding("ReceiverFunction", "secret-in-environment", "")),
}


@pytest.fixture(scope="module")
def mutated() -> dict[str, dict[str, Any]]:
    """Every mutation applied to its own copy of template.yaml, all transformed in one translator run."""
    base = load_template()
    templates = []
    for mutate, _ in MUTATIONS.values():
        template = copy.deepcopy(base)
        mutate(template)
        templates.append(template)
    return dict(zip(MUTATIONS, sam_transform(templates), strict=True))


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_a_mutated_template_is_reported(mutation: str, mutated: dict[str, dict[str, Any]]) -> None:
    # Given template.yaml with one weakness added, through the translator
    _, expected = MUTATIONS[mutation]
    # When the rules read it
    findings = check(mutated[mutation])
    # Then exactly that weakness is reported, on the resource it was added to
    matching = [f for f in findings if (f.resource, f.rule) == (expected.resource, expected.rule)
                and expected.detail in f.detail]
    assert matching, findings
    assert {(f.resource, f.rule) for f in findings} == {(expected.resource, expected.rule)}, findings
