"""A deployed stack's outputs (template.yaml's Outputs), and AWS clients, for the operator tools."""

from __future__ import annotations

from typing import Any

from argyle_ops.operator_errors import EXIT_AWS, OperatorError, explain_aws_error


def stack_outputs(stack_name: str, cloudformation: Any) -> dict[str, str]:
    """The stack's outputs by key; an unknown stack is an OperatorError that says what to check."""
    from botocore.exceptions import ClientError

    try:
        stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as exc:
        raise explain_aws_error(exc, region=cloudformation.meta.region_name,
                                names={"stack": repr(stack_name)}) from None
    if not stacks:
        raise OperatorError(f"stack {stack_name!r} does not exist: check --stack-name and --region", EXIT_AWS)
    return {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}


def boto3_client(service: str, *, region: str | None, endpoint_url: str | None) -> Any:
    """A client that fails fast when AWS cannot be reached (a person is waiting); no region is an
    OperatorError (exit 2) instead of a traceback."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import NoRegionError

    kwargs: dict[str, Any] = {"config": Config(connect_timeout=5, read_timeout=60,
                                               retries={"mode": "standard", "max_attempts": 3})}
    if region:
        kwargs["region_name"] = region
    if endpoint_url:
        kwargs["endpoint_url"] = endpoint_url
    try:
        return boto3.client(service, **kwargs)
    except NoRegionError as exc:
        raise explain_aws_error(exc) from None
