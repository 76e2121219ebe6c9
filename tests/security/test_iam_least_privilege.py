"""Each function's role grants exactly what its code calls, on the resources it calls them on: no
action the code lacks (it would fail in AWS), none the code never calls (a compromised function
could use it). What the code calls is read from the code (tests/security/iam_from_code.py); the
grants from template.yaml. A failure says exactly what to add to template.yaml, or remove.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from local_stack.template_resources import load_template
from tests.security.iam_from_code import (
    CUSTOMER_KEY,
    Code,
    Grant,
    RoleGrant,
    customer_key_needs,
    needs,
    resource_key,
    role_grants,
    role_of,
)

FUNCTIONS = ("ReceiverFunction", "SyncFunction", "ReconcileFunction")


def _yaml(expression: Any) -> str:
    """An expression as template.yaml writes it (short forms)."""
    if isinstance(expression, dict) and len(expression) == 1:
        (function, argument), = expression.items()
        if function == "Ref":
            return f"!Ref {argument}"
        if function == "Fn::GetAtt":
            return f"!GetAtt {'.'.join(argument) if isinstance(argument, list) else argument}"
        if function == "Fn::Sub" and isinstance(argument, str):
            return f"!Sub {argument}"
        if function == "Fn::If":
            return f"!If [{', '.join(str(a) if isinstance(a, str) else _yaml(a) for a in argument)}]"
    return json.dumps(expression)


def _expression_for(template: dict[str, Any], resource: str) -> str:
    """How template.yaml spells a resource in a role's statement (taken from one that does)."""
    for name, res in template["Resources"].items():
        if res["Type"] == "AWS::IAM::Role":
            for grant in role_grants(template, name):
                if grant.grant.resource == resource:
                    return _yaml(grant.resource_expression)
    if "/index/" in resource:
        table, _, index = resource.partition("/index/")
        return f"!Sub ${{{table}.Arn}}/index/{index}"
    return f"!GetAtt {resource}.Arn"


def least_privilege_problems(template: dict[str, Any], function: str, code: Code | None = None) -> list[str]:
    role = role_of(template, function)
    granted = role_grants(template, role)
    found, problems = needs(template, function, code)
    needed = {n.grant: n for n in found}
    # Inside !If: the customer key's grants (kms:*), or a feature's (PublishChangeEvents' PutEvents),
    # which the code needs like any other once its resource is named.
    with_key = {g.grant: g for g in granted if g.conditional and g.grant.action.startswith("kms:")}
    plain = {g.grant: g for g in granted if g.grant not in with_key}

    def missing(grant: Grant, why: str, statements: dict[Grant, RoleGrant], where: str) -> str:
        same_resource = [g for g in statements.values() if g.grant.resource == grant.resource]
        if same_resource:
            fix = f"add `{grant.action}` to the Action of {role}'s statement `Sid: {same_resource[0].sid}`{where}"
        else:
            fix = (f"add to {role}'s statements{where}: `- Effect: Allow, Action: {grant.action}, "
                   f"Resource: {_expression_for(template, grant.resource)}`")
        return f"template.yaml: {role} lacks {grant.action} on {grant.resource}, which {function} needs ({why}): {fix}"

    def unused(grant: RoleGrant) -> str:
        return (f"template.yaml: {role} grants {grant.grant.action} on {grant.grant.resource} (`Sid: {grant.sid}`) "
                f"but no code path of {function} calls it: remove it")

    for grant, need in needed.items():
        if grant not in plain:
            problems.append(missing(grant, "; ".join(dict.fromkeys(need.why)), plain, ""))
    problems += [unused(g) for grant, g in plain.items() if grant not in needed]
    key_needed = customer_key_needs(needed)
    for grant in key_needed:
        if grant not in with_key:
            problems.append(missing(grant, "SQS and Secrets Manager use the customer key on its behalf", with_key,
                                    " (inside `!If [UseCustomerKey, ...]`)"))
    problems += [unused(g) for grant, g in with_key.items() if grant not in key_needed]
    return problems


# --- the roles as they are ------------------------------------------------------------------------

@pytest.mark.parametrize("function", FUNCTIONS)
def test_each_role_grants_exactly_what_its_functions_code_calls(function: str) -> None:
    # Given the function's code and its role in template.yaml
    # When what the code calls is compared with what the role grants
    problems = least_privilege_problems(load_template(), function)
    # Then they are the same, action by action and resource by resource
    assert problems == [], "\n".join(problems)


def test_the_derivation_reads_the_calls_from_the_code() -> None:
    # Given template.yaml and the code
    template = load_template()
    derived = {fn: {n.grant: n.why for n in needs(template, fn)[0]} for fn in FUNCTIONS}
    # Then the calls are found where they are made
    sync = derived["SyncFunction"]
    assert any("activity_store.py" in w for w in sync[Grant("dynamodb:BatchWriteItem", "ActivitiesTable")])
    assert any("persistence/dynamodb.py" in w for w in sync[Grant("dynamodb:DeleteItem", "IdempotencyTable")])
    assert any("event_queue.py" in w for w in derived["ReconcileFunction"][Grant("sqs:SendMessage", "EventsQueue")])
    # And nothing the code never calls: no Scan anywhere, no DeleteItem on the activities (a removal
    # is a tombstone, a purge deletes in batches), the reconciler reads account ids from the sparse
    # index and nothing else
    everything = {g for fn in FUNCTIONS for g in derived[fn]}
    assert not {g for g in everything if g.action == "dynamodb:Scan"}
    assert Grant("dynamodb:DeleteItem", "ActivitiesTable") not in everything
    assert {g for g in derived["ReconcileFunction"] if g.action.startswith("dynamodb:")} == {
        Grant("dynamodb:Query", "SyncStateTable/index/Lookups"),
        Grant("dynamodb:BatchGetItem", "SyncStateTable")}  # the health check reads state items by key
    assert {g for g in derived["ReceiverFunction"] if not g.action.startswith(("logs:", "xray:"))} == {
        Grant("sqs:SendMessage", "EventsQueue"),
        Grant("secretsmanager:GetSecretValue", "WebhookSecret|ExistingWebhookSecretArn")}
    # And with a customer key, each role may decrypt through SQS and Secrets Manager, and the senders
    # make data keys
    assert customer_key_needs(derived["ReconcileFunction"]) == [Grant("kms:Decrypt", CUSTOMER_KEY),
                                                                Grant("kms:GenerateDataKey", CUSTOMER_KEY)]


def test_a_resource_key_is_what_the_statement_names() -> None:
    assert resource_key({"Fn::GetAtt": ["ActivitiesTable", "Arn"]}) == "ActivitiesTable"
    assert resource_key({"Fn::Sub": "${SyncStateTable.Arn}/index/Lookups"}) == "SyncStateTable/index/Lookups"
    assert resource_key({"Fn::If": ["CreateWebhookSecret", {"Ref": "WebhookSecret"},
                                    {"Ref": "ExistingWebhookSecretArn"}]}) == "WebhookSecret|ExistingWebhookSecretArn"
    assert resource_key("*") == "*"
    assert resource_key("arn:aws:dynamodb:us-east-1:123456789012:table/other") is None
    assert _yaml({"Fn::If": ["CreateWebhookSecret", {"Ref": "WebhookSecret"}, {"Ref": "ExistingWebhookSecretArn"}]}) \
        == "!If [CreateWebhookSecret, !Ref WebhookSecret, !Ref ExistingWebhookSecretArn]"


# --- the test can fail ----------------------------------------------------------------------------

def _source(module: str) -> str:
    path = Code().path(module)
    assert path is not None
    return path.read_text()


def _code_with(module: str, old: str, new: str, **more: tuple[str, str]) -> Code:
    """The code with `old` replaced by `new` in `module` (and likewise in each of `more`)."""
    overrides = {}
    for name, (before, after) in {module: (old, new), **more}.items():
        text = _source(name)
        assert before in text, (name, before)
        overrides[name] = text.replace(before, after, 1)
    return Code(overrides)


SYNC_ENTRY = "    runtime().idempotency_config.register_lambda_context(context)\n"
RECONCILE_ENTRY = "    queued = queue_reconciles("


def _purge_account_in_the_sync() -> Code:
    # The lead's purge, say: a new store method that deletes items, called by the sync
    return _code_with(
        "sync_handler", SYNC_ENTRY, SYNC_ENTRY + '    runtime().sync.ctx.activities.purge_account("acc")\n',
        **{"argyle_pipeline.aws.activity_store": (
            "    def live_ids_not_marked(",
            "    def purge_account(self, account_id: str) -> None:\n"
            "        self._client.delete_item(TableName=self.table_name, Key={'account_id': {'S': account_id}})\n\n"
            "    def live_ids_not_marked(")})


def _sync_reads_by_start_date() -> Code:
    return _code_with("sync_handler", SYNC_ENTRY,
                      SYNC_ENTRY + '    list(runtime().sync.ctx.activities.activities_by_start_date("acc"))\n')


def _reconciler_scans_the_state_table() -> Code:
    return _code_with("reconcile_handler", RECONCILE_ENTRY, "    list(state.accounts())\n" + RECONCILE_ENTRY)


def _sync_handler_calls_sqs_itself() -> Code:
    return _code_with("sync_handler", SYNC_ENTRY, SYNC_ENTRY + "    boto3.client('sqs').change_message_visibility("
                      "QueueUrl='q', ReceiptHandle='r', VisibilityTimeout=60)\n")


def _role_statement(template: dict[str, Any], role: str, sid: str) -> dict[str, Any]:
    for statement in template["Resources"][role]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]:
        branch = statement["Fn::If"][1] if "Fn::If" in statement else statement
        if branch.get("Sid") == sid:
            return dict(branch)
    raise AssertionError(f"{role} has no statement {sid}")


def _edit_statement(role: str, sid: str, edit: Callable[[list[str]], list[str]]) -> Callable[[dict[str, Any]], None]:
    def mutate(template: dict[str, Any]) -> None:
        statement = _role_statement(template, role, sid)
        for candidate in template["Resources"][role]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]:
            branch = candidate["Fn::If"][1] if "Fn::If" in candidate else candidate
            if branch.get("Sid") == sid:
                actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                branch["Action"] = edit(list(actions))
    return mutate


CHANGES: dict[str, tuple[str, Callable[[], Code] | None, Callable[[dict[str, Any]], None] | None, list[str]]] = {
    "the sync starts deleting activities": (
        "SyncFunction", _purge_account_in_the_sync, None,
        ["SyncFunctionRole lacks dynamodb:DeleteItem on ActivitiesTable, which SyncFunction needs "
         "(ActivityStore.purge_account at layers/shared/argyle_pipeline/aws/activity_store.py",
         "add `dynamodb:DeleteItem` to the Action of SyncFunctionRole's statement `Sid: ActivitiesTable`"]),
    "the sync starts querying another index": (
        "SyncFunction", _sync_reads_by_start_date, None,
        ["SyncFunctionRole lacks dynamodb:Query on ActivitiesTable/index/ByStartDate",
         "add to SyncFunctionRole's statements: `- Effect: Allow, Action: dynamodb:Query, "
         "Resource: !Sub ${ActivitiesTable.Arn}/index/ByStartDate`"]),
    "the reconciler starts scanning the state table": (
        "ReconcileFunction", _reconciler_scans_the_state_table, None,
        ["ReconcileFunctionRole lacks dynamodb:Scan on SyncStateTable, which ReconcileFunction needs "
         "(SyncStateStore.accounts at",
         # the health check's BatchGetItem statement is there already: the action goes into it
         "add `dynamodb:Scan` to the Action of ReconcileFunctionRole's statement `Sid: SyncStateTable`"]),
    "a handler calls SQS itself": (
        "SyncFunction", _sync_handler_calls_sqs_itself, None,
        ["SyncFunction calls sqs.change_message_visibility at functions/sync/sync_handler.py:",
         "outside argyle_pipeline/aws: move it into an adapter there"]),
    "the role grants a Scan no code makes": (
        "SyncFunction", None, _edit_statement("SyncFunctionRole", "ActivitiesTable", lambda a: [*a, "dynamodb:Scan"]),
        ["SyncFunctionRole grants dynamodb:Scan on ActivitiesTable (`Sid: ActivitiesTable`) but no code path of "
         "SyncFunction calls it: remove it"]),
    "the role loses what Lambda's poller needs": (
        "SyncFunction", None,
        _edit_statement("SyncFunctionRole", "EventsQueue", lambda a: [x for x in a if x != "sqs:GetQueueAttributes"]),
        ["SyncFunctionRole lacks sqs:GetQueueAttributes on EventsQueue, which SyncFunction needs "
         "(Lambda's SQS poller (event QueuedWebhooks))",
         "add `sqs:GetQueueAttributes` to the Action of SyncFunctionRole's statement `Sid: EventsQueue`"]),
    "a sender cannot make data keys with the customer key": (
        "ReconcileFunction", None,
        _edit_statement("ReconcileFunctionRole", "CustomerKey", lambda a: [x for x in a if x != "kms:GenerateDataKey"]),
        ["ReconcileFunctionRole lacks kms:GenerateDataKey on KmsKeyArn|CustomerKey",
         "(inside `!If [UseCustomerKey, ...]`)"]),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_change_to_the_code_or_the_role_is_reported_saying_what_to_do(change: str) -> None:
    # Given the code, or template.yaml, changed in one way
    function, code_change, template_change, expected = CHANGES[change]
    template = load_template()
    if template_change is not None:
        template = copy.deepcopy(template)
        template_change(template)
    # When the function's role is checked against its code
    problems = least_privilege_problems(template, function, code_change() if code_change else None)
    # Then exactly one problem is reported, saying what is wrong and what to do about it
    assert len(problems) == 1, "\n".join(problems)
    for part in expected:
        assert part in problems[0], problems[0]
    # And the other functions are not affected
    for other in FUNCTIONS:
        if other != function:
            assert least_privilege_problems(template, other, code_change() if code_change else None) == []
