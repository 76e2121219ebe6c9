"""A deployed stack's outputs (template.yaml's Outputs), for the operator tools."""

from __future__ import annotations

import sys
from typing import Any


def stack_outputs(stack_name: str, cloudformation: Any) -> dict[str, str]:
    stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    if not stacks:
        raise SystemExit(f"stack {stack_name!r} not found")
    return {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}


def boto3_client(service: str, *, region: str | None, endpoint_url: str | None) -> Any:
    """A client, or a clear exit (code 2) when no region is configured, instead of a traceback."""
    import boto3
    from botocore.exceptions import NoRegionError

    kwargs: dict[str, Any] = {}
    if region:
        kwargs["region_name"] = region
    if endpoint_url:
        kwargs["endpoint_url"] = endpoint_url
    try:
        return boto3.client(service, **kwargs)
    except NoRegionError:
        print("no AWS region: pass --region, or set AWS_REGION / AWS_DEFAULT_REGION", file=sys.stderr)
        raise SystemExit(2) from None
