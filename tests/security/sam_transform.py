"""Transforms SAM templates into plain CloudFormation with the real SAM translator (samtranslator).

samtranslator ships with the SAM CLI, which lives in its own virtual environment (.venv-sam: it
pins its own boto3), so the tests run this file with that environment's Python:

    .venv-sam/bin/python tests/security/sam_transform.py < templates.json > transformed.json

stdin: a JSON list of SAM templates (as dicts, intrinsic functions in their long form, e.g.
{"Ref": ...}); stdout: a JSON list, one {"template": {...}} or {"error": "..."} per input.
Local CodeUri/ContentUri paths become s3:// URIs first, as `sam package` would make them.
No AWS call is made: managed policy names resolve through the small map below, not IAM.
"""

from __future__ import annotations

import json
import sys
from typing import Any

# What IAM's ListPolicies would answer for the names a template may use in `Policies`.
MANAGED_POLICY_NAMES = {
    "AWSLambdaBasicExecutionRole": "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
    "AWSXrayWriteOnlyAccess": "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
    "AmazonDynamoDBFullAccess": "arn:aws:iam::aws:policy/AmazonDynamoDBFullAccess",
    "AmazonSQSFullAccess": "arn:aws:iam::aws:policy/AmazonSQSFullAccess",
    "AdministratorAccess": "arn:aws:iam::aws:policy/AdministratorAccess",
}


class ManagedPolicyMap:
    """Stands in for samtranslator's ManagedPolicyLoader (which would call IAM)."""

    def load(self) -> dict[str, str]:
        return dict(MANAGED_POLICY_NAMES)


def packaged(template: dict[str, Any]) -> dict[str, Any]:
    for name, resource in template.get("Resources", {}).items():
        props = resource.get("Properties") or {}
        for key in ("CodeUri", "ContentUri"):
            if isinstance(props.get(key), str) and not props[key].startswith("s3://"):
                props[key] = f"s3://packaged-artifacts/{name}.zip"
    return template


def main() -> int:
    from samtranslator.translator.transform import transform

    results: list[dict[str, Any]] = []
    for template in json.load(sys.stdin):
        try:
            results.append({"template": transform(packaged(template), {}, ManagedPolicyMap())})
        except Exception as exc:  # reported per template, so one bad mutation names itself
            results.append({"error": f"{type(exc).__name__}: {exc}"})
    json.dump(results, sys.stdout, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
