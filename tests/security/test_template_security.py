"""template.yaml, as CloudFormation will see it after the SAM transform, grants nothing wider than
the stack's own resources, stores nothing unencrypted and takes no parameter that could widen either.

The SAM translator (the code `sam deploy` runs, via tests/security/sam_transform.py in .venv-sam)
makes the schedule's role and the API's permissions; the functions' roles are written out in
template.yaml. The rules below read the real output:

- no Allow statement has a `*` in an action, unless the pattern is listed below and matches
  only the actions it is listed for (checked against IAM's list of the service's actions);
- every Resource is one of the stack's own resources (Ref / GetAtt / Sub of its logical ids, a
  `*` only after such a reference, e.g. a table's `/index/*`) or a resource parameter whose
  AllowedPattern admits one ARN and no wildcard, except the actions AWS only accepts on "*" (X-Ray);
- no managed policy at all (SAM attaches AWSLambdaBasicExecutionRole and friends, on "*", only to
  roles it makes for functions: these have explicit roles);
- every role carries the optional permissions boundary;
- queues have SSE (SQS-managed or KMS) and a policy denying access without TLS, tables
  SSESpecification.SSEEnabled; with a customer key, every table, queue, secret and log group uses it;
- Lambda permissions name their source; no environment variable carries a secret's value;
- ArgyleApiUrl admits https:// only (or empty: the API version's https production URL).

The same check runs on mutated templates, to prove it reports what it is meant to. What each role
may do (and nothing more) is tests/security/test_iam_least_privilege.py.
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
}

# Wildcard actions a role may hold, and every action each may match. None today: the roles name
# each action (SAM's SQSSendMessagePolicy granted `sqs:SendMessage*`).
WILDCARD_ACTIONS: dict[str, tuple[frozenset[str], str]] = {}

# IAM's SQS actions (Service Authorization Reference), to expand patterns and mutations.
KNOWN_ACTIONS = {
    "sqs": ["AddPermission", "CancelMessageMoveTask", "ChangeMessageVisibility", "CreateQueue", "DeleteMessage",
            "DeleteQueue", "GetQueueAttributes", "GetQueueUrl", "ListDeadLetterSourceQueues",
            "ListMessageMoveTasks", "ListQueueTags", "ListQueues", "PurgeQueue", "ReceiveMessage",
            "RemovePermission", "SendMessage", "SetQueueAttributes", "StartMessageMoveTask", "TagQueue",
            "UntagQueue"],
}

# Parameters that name one existing resource the deployer chooses (the stack's own, by contract),
# with an ARN of that kind that their AllowedPattern must admit.
RESOURCE_PARAMETERS = {
    "ExistingWebhookSecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:argyle-webhook-AbCdEf",
    "ExistingArgyleCredentialsSecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:argyle-keys-AbCdEf",
    "KmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
}
# What such a parameter must refuse: a wildcard anywhere would widen the grant to many resources.
WIDENING_VALUES = ("*", "arn:aws:secretsmanager:us-east-1:123456789012:secret:*",
                   "arn:aws:kms:us-east-1:123456789012:key/*", "arn:aws:secretsmanager:*:*:secret:x")

BOUNDARY = {"Fn::If": ["HasPermissionsBoundary", {"Ref": "PermissionsBoundaryArn"}, {"Ref": "AWS::NoValue"}]}
CUSTOMER_KEY = {"Fn::If": ["UseCustomerKey", {"Fn::If": ["HasKmsKeyArn", {"Ref": "KmsKeyArn"},
                                                          {"Fn::GetAtt": ["CustomerKey", "Arn"]}]},
                           {"Ref": "AWS::NoValue"}]}
SQS_MANAGED_UNLESS_CUSTOMER_KEY = {"Fn::If": ["UseCustomerKey", {"Ref": "AWS::NoValue"}, True]}
# Where each kind of store names its key.
KEY_PROPERTY = {"AWS::SQS::Queue": ("KmsMasterKeyId",), "AWS::SecretsManager::Secret": ("KmsKeyId",),
                "AWS::Logs::LogGroup": ("KmsKeyId",), "AWS::DynamoDB::Table": ("SSESpecification", "KMSMasterKeyId")}

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
            if kind in KEY_PROPERTY:
                self._customer_key(name, kind, props)
            if kind == "AWS::IAM::Role":
                for policy in props.get("Policies") or []:
                    self._document(name, policy.get("PolicyDocument") or {})
                for arn in props.get("ManagedPolicyArns") or []:
                    self._found(name, "managed-policy", json.dumps(arn))
                if props.get("PermissionsBoundary") != BOUNDARY:
                    self._found(name, "no-permissions-boundary", json.dumps(props.get("PermissionsBoundary")))
            elif kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
                self._document(name, props.get("PolicyDocument") or {})
                for arn in props.get("ManagedPolicyArns") or []:
                    self._found(name, "managed-policy", json.dumps(arn))
            elif kind == "AWS::SQS::Queue":
                sse, key = props.get("SqsManagedSseEnabled"), props.get("KmsMasterKeyId")
                # Encrypted whichever way the stack is deployed: SQS-managed, or the customer key instead
                if not (sse is True or (sse == SQS_MANAGED_UNLESS_CUSTOMER_KEY and key == CUSTOMER_KEY)
                        or (isinstance(key, str) and key)):
                    self._found(name, "unencrypted-queue", "neither SqsManagedSseEnabled nor KmsMasterKeyId")
                if name not in self._tls_only_queues():
                    self._found(name, "queue-without-tls-only-policy", "no QueuePolicy denies plain http")
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
        self._parameters()
        return self.findings

    def _parameters(self) -> None:
        parameters = self.cfn.get("Parameters", {})
        for name, example in RESOURCE_PARAMETERS.items():
            pattern = parameters.get(name, {}).get("AllowedPattern")
            admits = [v for v in WIDENING_VALUES if pattern is None or re.fullmatch(pattern, v)]
            if admits or not re.fullmatch(pattern or "", example):
                self._found(name, "resource-parameter-admits-wildcards", f"AllowedPattern {pattern!r} admits {admits}")
        pattern = parameters.get("ArgyleApiUrl", {}).get("AllowedPattern")
        if pattern is None or re.fullmatch(pattern, "http://api.argyle.com/v1") \
                or not re.fullmatch(pattern, parameters["ArgyleApiUrl"]["Default"]):
            self._found("ArgyleApiUrl", "api-url-not-https-only", f"AllowedPattern {pattern!r}")

    def _customer_key(self, name: str, kind: str, props: dict[str, Any]) -> None:
        node: Any = props
        for key in KEY_PROPERTY[kind]:
            node = (node or {}).get(key) if isinstance(node, dict) else None
        if node != CUSTOMER_KEY:
            self._found(name, "not-on-customer-key", f"{'.'.join(KEY_PROPERTY[kind])} is {json.dumps(node)}")

    def _tls_only_queues(self) -> set[str]:
        covered: set[str] = set()
        for resource in self.resources.values():
            if resource.get("Type") != "AWS::SQS::QueuePolicy":
                continue
            props = resource.get("Properties") or {}
            for statement in _as_list((props.get("PolicyDocument") or {}).get("Statement") or []):
                denies = (statement.get("Effect") == "Deny" and statement.get("Principal") == "*"
                          and statement.get("Action") in ("sqs:*", ["sqs:*"])
                          and statement.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}})
                if denies:
                    covered |= {q["Ref"] for q in props.get("Queues") or [] if isinstance(q, dict) and "Ref" in q}
        return covered

    def _found(self, resource: str, rule: str, detail: str) -> None:
        self.findings.append(Finding(resource, rule, detail))

    # --- statements ----------------------------------------------------------------------------

    def _document(self, owner: str, document: dict[str, Any]) -> None:
        for statement in _as_list(document.get("Statement") or []):
            for branch in _branches(statement):
                if isinstance(branch, dict):
                    self._statement(owner, branch)

    def _statement(self, owner: str, statement: dict[str, Any]) -> None:
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
                    wide = [a for a in actions if a not in RESOURCE_STAR_ACTIONS]
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

def _roles(cfn: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: r["Properties"] for name, r in cfn["Resources"].items() if r["Type"] == "AWS::IAM::Role"}


def _statements(role: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for policy in role.get("Policies") or []:
        for statement in _as_list(policy["PolicyDocument"]["Statement"]):
            yield from (b for b in _branches(statement) if isinstance(b, dict) and "Effect" in b)


def test_every_role_is_written_out_or_the_schedules_and_none_carries_a_managed_policy(
        transformed: dict[str, Any]) -> None:
    # Given the transformed template
    roles = _roles(transformed)
    # Then the three functions have the roles template.yaml writes out, and the reconcile schedule a
    # role SAM makes (it may invoke that function, nothing else)
    assert set(roles) == {"ReceiverFunctionRole", "SyncFunctionRole", "ReconcileFunctionRole",
                          "ReconcileFunctionScheduleRole"}
    (invoke,) = _statements(roles["ReconcileFunctionScheduleRole"])
    assert (invoke["Action"], invoke["Resource"]) == ("lambda:InvokeFunction", {"Fn::GetAtt": ["ReconcileFunction",
                                                                                                 "Arn"]})
    # And no role has a managed policy (AWSLambdaBasicExecutionRole's logs:* and
    # AWSLambdaSQSQueueExecutionRole's sqs:* on "*" are gone)
    assert {name: props.get("ManagedPolicyArns") for name, props in roles.items() if props.get("ManagedPolicyArns")} \
        == {}


def test_the_deployed_template_has_no_finding(transformed: dict[str, Any]) -> None:
    # When the rules read what CloudFormation would deploy
    findings = check(transformed)
    # Then there is nothing to report
    assert findings == []


def test_every_documented_exception_is_still_needed_and_matches_what_it_claims(transformed: dict[str, Any]) -> None:
    # Given the roles as deployed
    statements = [s for props in _roles(transformed).values() for s in _statements(props)]
    on_star = {a for s in statements if "*" in _as_list(s["Resource"]) for a in _as_list(s["Action"])}
    actions = {a for s in statements for a in _as_list(s["Action"])}
    # Then each action accepted on "*" is granted there (a stale exception is removed, not kept)
    assert on_star == set(RESOURCE_STAR_ACTIONS)
    # And each listed wildcard action is used, and matches only what it is listed for
    assert set(WILDCARD_ACTIONS) <= actions
    for pattern, (allowed, _reason) in WILDCARD_ACTIONS.items():
        service = pattern.split(":")[0]
        matched = {f"{service}:{a}" for a in KNOWN_ACTIONS[service] if fnmatch.fnmatchcase(f"{service}:{a}", pattern)}
        assert matched == allowed


def test_parameters_that_name_resources_admit_one_arn_and_no_wildcard() -> None:
    parameters = load_template()["Parameters"]
    for name, example in RESOURCE_PARAMETERS.items():
        pattern = parameters[name]["AllowedPattern"]
        assert re.fullmatch(pattern, "") and re.fullmatch(pattern, example), name  # optional, and an ARN fits
        assert not [v for v in WIDENING_VALUES if re.fullmatch(pattern, v)], name
    api_url = parameters["ArgyleApiUrl"]["AllowedPattern"]
    assert re.fullmatch(api_url, "https://api-sandbox.argyle.com/v1")
    # Empty is the API version's own production URL (https), resolved by the code
    assert not re.fullmatch(api_url, "http://api.argyle.com/v1") and re.fullmatch(api_url, "")


def test_with_a_customer_key_every_store_uses_it_and_by_default_none_is_needed() -> None:
    from local_stack.template_resources import deployed_resources_of_type

    template = load_template()
    stores = [kind for kind in KEY_PROPERTY]
    given_key = RESOURCE_PARAMETERS["KmsKeyArn"]

    def key_of(kind: str, props: dict[str, Any]) -> Any:
        node: Any = props
        for part in KEY_PROPERTY[kind]:
            node = node.get(part) if isinstance(node, dict) else None
        return node

    # By default: AWS-managed keys, nothing to set up (SQS-managed SSE on the queues)
    for kind in stores:
        for name, props in deployed_resources_of_type(template, kind).items():
            assert key_of(kind, props) is None, name
    assert all(q["SqsManagedSseEnabled"] is True
               for q in deployed_resources_of_type(template, "AWS::SQS::Queue").values())
    assert deployed_resources_of_type(template, "AWS::KMS::Key") == {}
    # With KmsKeyArn: that key everywhere (4 log groups, 3 tables, 2 queues, 2 secrets), no key created
    counted = 0
    for kind in stores:
        for name, props in deployed_resources_of_type(template, kind, {"KmsKeyArn": given_key}).items():
            assert key_of(kind, props) == {"Ref": "KmsKeyArn"}, name
            counted += 1
    assert counted == 11
    assert deployed_resources_of_type(template, "AWS::KMS::Key", {"KmsKeyArn": given_key}) == {}
    # With CreateKmsKey=true: the stack's key everywhere, rotated
    created = {"Fn::GetAtt": ["CustomerKey", "Arn"]}
    for kind in stores:
        for name, props in deployed_resources_of_type(template, kind, {"CreateKmsKey": "true"}).items():
            assert key_of(kind, props) == created, name
    (key,) = deployed_resources_of_type(template, "AWS::KMS::Key", {"CreateKmsKey": "true"}).values()
    assert key["EnableKeyRotation"] is True


def test_the_created_keys_policy_admits_the_account_and_this_stacks_log_groups_only() -> None:
    key = load_template()["Resources"]["CustomerKey"]["Properties"]["KeyPolicy"]["Statement"]
    principals = [s["Principal"] for s in key]
    # The account (its admins, through IAM: the functions' roles hold kms:Decrypt / GenerateDataKey
    # on this key via SQS and Secrets Manager only) and CloudWatch Logs for this stack's groups
    assert principals == [{"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}},
                          {"Service": {"Fn::Sub": "logs.${AWS::Region}.amazonaws.com"}}]
    groups = key[1]["Condition"]["ArnEquals"]["kms:EncryptionContext:aws:logs:arn"]
    names = {g["Fn::Sub"].rsplit(":log-group:", 1)[1] for g in groups}
    template = load_template()
    declared = {r["Properties"]["LogGroupName"]["Fn::Sub"] for r in template["Resources"].values()
                if r["Type"] == "AWS::Logs::LogGroup"}
    assert names == declared and len(names) == 4
    assert all(s["Effect"] == "Allow" and s["Principal"] != "*" for s in key)


# --- the check can fail ---------------------------------------------------------------------------

def _add_statement(role: str, statement: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    def mutate(template: dict[str, Any]) -> None:
        template["Resources"][role]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"].append(statement)
    return mutate


def _add_managed(role: str, arn: str) -> Callable[[dict[str, Any]], None]:
    def mutate(template: dict[str, Any]) -> None:
        template["Resources"][role]["Properties"].setdefault("ManagedPolicyArns", []).append(arn)
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


def _allow(action: Any, resource: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource}


MUTATIONS: dict[str, tuple[Callable[[dict[str, Any]], None], Finding]] = {
    "dynamodb:* on the stack's table": (
        _add_statement("SyncFunctionRole", _allow("dynamodb:*", {"Fn::GetAtt": ["ActivitiesTable", "Arn"]})),
        Finding("SyncFunctionRole", "wildcard-action", "dynamodb:*")),
    "every action": (
        _add_statement("ReceiverFunctionRole", _allow("*", {"Fn::GetAtt": ["EventsQueue", "Arn"]})),
        Finding("ReceiverFunctionRole", "wildcard-action", "*")),
    "a wildcard pattern over the send actions": (
        _add_statement("ReceiverFunctionRole", _allow("sqs:SendMessage*", {"Fn::GetAtt": ["EventsQueue", "Arn"]})),
        Finding("ReceiverFunctionRole", "wildcard-action", "sqs:SendMessage*")),
    "GetItem on every table": (
        _add_statement("SyncFunctionRole", _allow(["dynamodb:GetItem"], "*")),
        Finding("SyncFunctionRole", "resource-star", "dynamodb:GetItem on '*'")),
    "logs on every log group": (
        _add_statement("ReceiverFunctionRole", _allow(["logs:CreateLogGroup", "logs:PutLogEvents"], "*")),
        Finding("ReceiverFunctionRole", "resource-star", "logs:CreateLogGroup, logs:PutLogEvents on '*'")),
    "another table by name": (
        _add_statement("SyncFunctionRole", _allow("dynamodb:Query", {
            "Fn::Sub": "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/someone-elses-table"})),
        Finding("SyncFunctionRole", "foreign-resource", "")),
    "every table of the account through Sub": (
        _add_statement("SyncFunctionRole", _allow(["dynamodb:Query"], {
            "Fn::Sub": "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/*"})),
        Finding("SyncFunctionRole", "foreign-resource", "")),
    "a wildcard region before the stack's table": (
        _add_statement("SyncFunctionRole", _allow(["dynamodb:Query"], {
            "Fn::Sub": "arn:${AWS::Partition}:dynamodb:*:${AWS::AccountId}:table/${ActivitiesTable}"})),
        Finding("SyncFunctionRole", "foreign-resource", "")),
    "a literal ARN": (
        _add_statement("ReceiverFunctionRole", _allow(["sqs:SendMessage"],
                                                      "arn:aws:sqs:us-east-1:123456789012:other-queue")),
        Finding("ReceiverFunctionRole", "foreign-resource", "")),
    "Allow with NotAction": (
        _add_statement("ReceiverFunctionRole", {"Effect": "Allow", "NotAction": "iam:*",
                                                "Resource": {"Fn::GetAtt": ["EventsQueue", "Arn"]}}),
        Finding("ReceiverFunctionRole", "negated-grant", "")),
    "AdministratorAccess": (
        _add_managed("SyncFunctionRole", "arn:aws:iam::aws:policy/AdministratorAccess"),
        Finding("SyncFunctionRole", "managed-policy", '"arn:aws:iam::aws:policy/AdministratorAccess"')),
    "the SQS poller's managed policy back on the sync": (
        _add_managed("SyncFunctionRole", "arn:aws:iam::aws:policy/service-role/AWSLambdaSQSQueueExecutionRole"),
        Finding("SyncFunctionRole", "managed-policy", "AWSLambdaSQSQueueExecutionRole")),
    "a role without the permissions boundary": (
        _set(["Resources", "ReconcileFunctionRole", "Properties", "PermissionsBoundary"], None),
        Finding("ReconcileFunctionRole", "no-permissions-boundary", "")),
    "the schedule's role without it": (
        _set(["Resources", "ReconcileFunction", "Properties", "Events", "Schedule", "Properties",
              "PermissionsBoundary"], None),
        Finding("ReconcileFunctionScheduleRole", "no-permissions-boundary", "")),
    "a DLQ without SSE": (
        _set(["Resources", "EventsDLQ", "Properties", "SqsManagedSseEnabled"], None),
        Finding("EventsDLQ", "unencrypted-queue", "")),
    "a queue with SSE switched off": (
        _set(["Resources", "EventsQueue", "Properties", "SqsManagedSseEnabled"], False),
        Finding("EventsQueue", "unencrypted-queue", "")),
    "a queue left out of the TLS-only policy": (
        _set(["Resources", "EventsQueuesTlsOnlyPolicy", "Properties", "Queues"], [{"Ref": "EventsQueue"}]),
        Finding("EventsDLQ", "queue-without-tls-only-policy", "")),
    "a table without SSEEnabled": (
        _set(["Resources", "IdempotencyTable", "Properties", "SSESpecification", "SSEEnabled"], None),
        Finding("IdempotencyTable", "unencrypted-table", "")),
    "a table with SSEEnabled false": (
        _set(["Resources", "ActivitiesTable", "Properties", "SSESpecification", "SSEEnabled"], False),
        Finding("ActivitiesTable", "unencrypted-table", "")),
    "a log group that ignores the customer key": (
        _set(["Resources", "SyncLogGroup", "Properties", "KmsKeyId"], None),
        Finding("SyncLogGroup", "not-on-customer-key", "")),
    "a secret that ignores it": (
        _set(["Resources", "ArgyleCredentialsSecret", "Properties", "KmsKeyId"], None),
        Finding("ArgyleCredentialsSecret", "not-on-customer-key", "")),
    "a secret's value in the environment": (
        _set(["Resources", "ReceiverFunction", "Properties", "Environment", "Variables", "WEBHOOK_SECRET"],
             "hunter2"),
        Finding("ReceiverFunction", "secret-in-environment", "")),
    "a secret ARN parameter that admits a wildcard": (
        _set(["Parameters", "ExistingWebhookSecretArn", "AllowedPattern"], "^$|^arn:aws:secretsmanager:.*$"),
        Finding("ExistingWebhookSecretArn", "resource-parameter-admits-wildcards", "")),
    "an Argyle URL that may be http": (
        _set(["Parameters", "ArgyleApiUrl", "AllowedPattern"], "^https?://.+$"),
        Finding("ArgyleApiUrl", "api-url-not-https-only", "")),
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
