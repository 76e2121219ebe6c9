"""Creates template.yaml's queues, tables and secrets in moto (in-process or server) from the
template itself, so tests and the local stack cannot drift from what `sam deploy` creates.
"""

from __future__ import annotations

import json
import secrets as random_secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

TEMPLATE_PATH = Path(__file__).resolve().parent.parent / "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    """A YAML loader that turns CloudFormation short-form tags (!Ref, !GetAtt...) into dicts."""


def _cfn_tag(loader: _CfnLoader, tag_suffix: str, node: yaml.Node) -> Any:
    name = tag_suffix if tag_suffix in ("Ref", "Condition") else f"Fn::{tag_suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if tag_suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        return yaml.load(fh, Loader=_CfnLoader)  # noqa: S506 - a SafeLoader subclass


def resources_of_type(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {name: res.get("Properties", {}) for name, res in template["Resources"].items()
            if res["Type"] == resource_type}


def deployed_resources_of_type(template: dict[str, Any], resource_type: str,
                               parameters: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Each resource the stack would create, with its properties' `Fn::If`s decided as a deploy with
    these parameters (the rest at their defaults) would decide them: with the defaults, for one,
    the optional customer key is absent."""
    conditions = decided_conditions(template, parameters)
    return {name: _decided(res.get("Properties", {}), conditions) for name, res in template["Resources"].items()
            if res["Type"] == resource_type and conditions.get(res.get("Condition", ""), True)}


_NO_VALUE = object()


def decided_conditions(template: dict[str, Any], parameters: dict[str, str] | None = None) -> dict[str, bool]:
    """The template's Conditions, evaluated with these parameters and every other at its default."""
    defaults = {name: str(p.get("Default", "")) for name, p in template.get("Parameters", {}).items()}
    defaults.update(parameters or {})
    definitions = template.get("Conditions", {})
    decided: dict[str, bool] = {}

    def value(node: Any) -> Any:
        if isinstance(node, dict) and set(node) == {"Ref"}:
            return defaults.get(node["Ref"], node["Ref"])
        return node if isinstance(node, str) else str(node)

    def truth(node: Any) -> bool:
        (function, argument), = node.items()
        if function == "Condition":
            return condition(argument)
        if function == "Fn::Equals":
            return bool(value(argument[0]) == value(argument[1]))
        if function == "Fn::Not":
            return not truth(argument[0])
        if function == "Fn::And":
            return all(truth(a) for a in argument)
        if function == "Fn::Or":
            return any(truth(a) for a in argument)
        raise ValueError(f"condition function {function} is not supported here")

    def condition(name: str) -> bool:
        if name not in decided:
            decided[name] = truth(definitions[name])
        return decided[name]

    return {name: condition(name) for name in definitions}


def _decided(node: Any, conditions: dict[str, bool]) -> Any:
    if isinstance(node, dict):
        if set(node) == {"Fn::If"}:
            name, yes, no = node["Fn::If"]
            return _decided(yes if conditions[name] else no, conditions)
        if node == {"Ref": "AWS::NoValue"}:
            return _NO_VALUE
        decided = {k: _decided(v, conditions) for k, v in node.items()}
        return {k: v for k, v in decided.items() if v is not _NO_VALUE}
    if isinstance(node, list):
        return [v for v in (_decided(item, conditions) for item in node) if v is not _NO_VALUE]
    return node


@dataclass
class StackResources:
    """Physical names of what was created, by logical id (like a stack's outputs)."""

    queue_urls: dict[str, str] = field(default_factory=dict)
    queue_arns: dict[str, str] = field(default_factory=dict)
    tables: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)

    def environment(self) -> dict[str, str]:
        """The functions' environment variables that name these resources, read from template.yaml's
        function definitions (not listed here a second time)."""
        from local_stack.lambda_runtime import function_environment

        physical = {*self.queue_urls.values(), *self.tables.values(), *self.secrets.values()}
        env: dict[str, str] = {}
        for function in ("ReceiverFunction", "SyncFunction"):
            env.update({k: v for k, v in function_environment(function, self).items() if v in physical})
        return env


def _queue_attributes(props: dict[str, Any], arns: dict[str, str]) -> dict[str, str]:
    attrs: dict[str, str] = {}
    simple = {
        "FifoQueue": "FifoQueue", "DeduplicationScope": "DeduplicationScope",
        "FifoThroughputLimit": "FifoThroughputLimit", "VisibilityTimeout": "VisibilityTimeout",
        "MessageRetentionPeriod": "MessageRetentionPeriod", "SqsManagedSseEnabled": "SqsManagedSseEnabled",
        "ContentBasedDeduplication": "ContentBasedDeduplication",
    }
    for prop, attr in simple.items():
        if prop in props:
            value = props[prop]
            attrs[attr] = str(value).lower() if isinstance(value, bool) else str(value)
    redrive = props.get("RedrivePolicy")
    if redrive:
        target = redrive["deadLetterTargetArn"]
        if isinstance(target, dict):  # !GetAtt Dlq.Arn
            target = arns[target["Fn::GetAtt"][0]]
        attrs["RedrivePolicy"] = json.dumps(
            {"deadLetterTargetArn": target, "maxReceiveCount": str(redrive["maxReceiveCount"])})
    return attrs


def create_queues(sqs: Any, template: dict[str, Any], prefix: str, out: StackResources) -> None:
    queues = deployed_resources_of_type(template, "AWS::SQS::Queue")
    # Dead-letter queues first: the others' RedrivePolicy names them.
    order = sorted(queues, key=lambda name: "RedrivePolicy" in queues[name])
    for name in order:
        props = queues[name]
        fifo = bool(props.get("FifoQueue"))
        physical = f"{prefix}-{name}" + (".fifo" if fifo else "")
        url = sqs.create_queue(QueueName=physical, Attributes=_queue_attributes(props, out.queue_arns))["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        out.queue_urls[name], out.queue_arns[name] = url, arn


def create_tables(dynamodb: Any, template: dict[str, Any], prefix: str, out: StackResources) -> None:
    for name, props in deployed_resources_of_type(template, "AWS::DynamoDB::Table").items():
        physical = f"{prefix}-{name}"
        kwargs: dict[str, Any] = {
            "TableName": physical,
            "AttributeDefinitions": props["AttributeDefinitions"],
            "KeySchema": props["KeySchema"],
            "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
        }
        if props.get("GlobalSecondaryIndexes"):
            kwargs["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
        if props.get("LocalSecondaryIndexes"):
            kwargs["LocalSecondaryIndexes"] = props["LocalSecondaryIndexes"]
        if props.get("SSESpecification", {}).get("SSEEnabled"):
            kwargs["SSESpecification"] = {"Enabled": True}
        dynamodb.create_table(**kwargs)
        ttl = props.get("TimeToLiveSpecification")
        if ttl and ttl.get("Enabled"):
            dynamodb.update_time_to_live(TableName=physical, TimeToLiveSpecification={
                "AttributeName": ttl["AttributeName"], "Enabled": True})
        out.tables[name] = physical


def _generated_secret_value(props: dict[str, Any]) -> str:
    gen = props.get("GenerateSecretString")
    if not gen:
        return str(props.get("SecretString", ""))
    value = random_secrets.token_urlsafe(int(gen.get("PasswordLength", 32)))[: int(gen.get("PasswordLength", 32))]
    template = gen.get("SecretStringTemplate")
    if template:
        doc = json.loads(template)
        doc[gen["GenerateStringKey"]] = value
        return json.dumps(doc)
    return value


def create_secrets(secretsmanager: Any, template: dict[str, Any], prefix: str, out: StackResources,
                   values: dict[str, str] | None = None) -> None:
    """Each secret gets `values[logical_id]` when given, else a value generated as CloudFormation would."""
    values = values or {}
    for name, props in resources_of_type(template, "AWS::SecretsManager::Secret").items():
        value = values.get(name, _generated_secret_value(props))
        arn = secretsmanager.create_secret(Name=f"{prefix}-{name}", SecretString=value)["ARN"]
        out.secrets[name] = arn


def create_stack_resources(session: Any, prefix: str = "argyle-sync", endpoint_url: str | None = None,
                           secret_values: dict[str, str] | None = None,
                           template: dict[str, Any] | None = None) -> StackResources:
    """Create every queue, table and secret of template.yaml with boto3 (moto in-process or server)."""
    template = template or load_template()
    out = StackResources()
    kw = {"endpoint_url": endpoint_url} if endpoint_url else {}
    create_queues(session.client("sqs", **kw), template, prefix, out)
    create_tables(session.client("dynamodb", **kw), template, prefix, out)
    create_secrets(session.client("secretsmanager", **kw), template, prefix, out, secret_values)
    return out
