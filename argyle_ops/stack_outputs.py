"""A deployed stack's outputs (template.yaml's Outputs), for the operator tools."""

from __future__ import annotations

from typing import Any


def stack_outputs(stack_name: str, cloudformation: Any) -> dict[str, str]:
    stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    if not stacks:
        raise SystemExit(f"stack {stack_name!r} not found")
    return {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}


def boto3_client(service: str, *, region: str | None, endpoint_url: str | None) -> Any:
    import boto3

    kwargs: dict[str, Any] = {}
    if region:
        kwargs["region_name"] = region
    if endpoint_url:
        kwargs["endpoint_url"] = endpoint_url
    return boto3.client(service, **kwargs)
