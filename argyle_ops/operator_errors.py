"""Every mistake an operator tool meets, answered in one line that says what is wrong and what to
do, with a documented exit code, never a traceback: `run_command` wraps each CLI's command, so a
new subcommand is covered without code of its own.

Exit codes shared by the operator tools (docs/runbook.md): 0 done, 1 not found (or not all done;
argyle-webhooks: an Argyle API error), 2 usage (a missing or wrong option, no region), 3 Argyle
says not found, 4 Argyle rejected the API keys, 5 Argyle unavailable, 6 AWS (no credentials,
unreachable endpoint, a stack, table or queue that does not exist, access denied).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import TextIO

EXIT_OK, EXIT_NOT_FOUND, EXIT_USAGE, EXIT_AWS = 0, 1, 2, 6
EXIT_ARGYLE_ERROR, EXIT_ARGYLE_NOT_FOUND, EXIT_ARGYLE_AUTH, EXIT_ARGYLE_UNAVAILABLE = 1, 3, 4, 5

_BAD_CREDENTIALS = {"UnrecognizedClientException", "InvalidClientTokenId", "ExpiredToken", "ExpiredTokenException",
                    "InvalidSignatureException", "SignatureDoesNotMatch", "IncompleteSignature"}
_NO_QUEUE = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}


class OperatorError(Exception):
    """What is wrong and what to do, in one line, and the exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def _where(region: str | None, endpoint_url: str | None) -> str:
    place = f" in region {region}" if region else ""
    return place + (f" at {endpoint_url}" if endpoint_url else "")


def explain_aws_error(exc: BaseException, *, region: str | None = None, endpoint_url: str | None = None,
                      names: Mapping[str, str] | None = None) -> OperatorError:
    """botocore's error as one line. `names` says what the command named, by kind ("table",
    "queue", "stack"), so that "not found" can say which and which option sets it."""
    from botocore.exceptions import (
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
        ProfileNotFound,
        ReadTimeoutError,
    )

    names = names or {}
    where = _where(region, endpoint_url)
    if isinstance(exc, NoRegionError):
        return OperatorError("no AWS region: pass --region, or set AWS_REGION / AWS_DEFAULT_REGION", EXIT_USAGE)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return OperatorError("no AWS credentials: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                             "(for the local stack any value, e.g. local)", EXIT_AWS)
    if isinstance(exc, ProfileNotFound):
        return OperatorError(f"{exc}: check AWS_PROFILE (`aws configure list-profiles`)", EXIT_AWS)
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError | ReadTimeoutError):
        url = str(getattr(exc, "kwargs", {}).get("endpoint_url") or endpoint_url or "AWS")
        local = any(host in url for host in ("127.0.0.1", "localhost", "[::1]"))
        hint = ("is the local stack running (`make dev`), on that port?" if local
                else "check --endpoint-url / AWS_ENDPOINT_URL, the region and your network")
        return OperatorError(f"cannot reach {url}: {hint}", EXIT_AWS)
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code, message = str(error.get("Code", "Error")), str(error.get("Message", "")).rstrip(".")
        if code == "ValidationError" and "does not exist" in message:  # CloudFormation's unknown stack
            stack = names.get("stack", "")
            return OperatorError(f"stack {stack}{' ' if stack else ''}does not exist{where}: check --stack-name and "
                                 "--region (the local stack has no CloudFormation stack: pass the names `make dev` "
                                 "prints instead)", EXIT_AWS)
        if code == "ResourceNotFoundException" and "table" in names:
            return OperatorError(f"table {names['table']} does not exist{where}: check the table names (or "
                                 "--stack-name) and --region", EXIT_AWS)
        if code == "ResourceNotFoundException" and "secret" in names:
            return OperatorError(f"secret {names['secret']} does not exist{where}: check its id and --region",
                                 EXIT_AWS)
        if code in _NO_QUEUE:
            queue = names.get("queue", "")
            return OperatorError(f"queue {queue}{' ' if queue else ''}does not exist{where}: check the queue URL "
                                 "(or --stack-name)", EXIT_AWS)
        if code in _BAD_CREDENTIALS:
            return OperatorError(f"AWS rejected the credentials ({code}{where}): refresh them (e.g. `aws sso "
                                 "login`) or check the account and region", EXIT_AWS)
        if code.startswith("AccessDenied"):
            return OperatorError(f"not allowed to {exc.operation_name}{where}: {message}", EXIT_AWS)
        return OperatorError(f"{exc.operation_name} failed{where}: {code}: {message}", EXIT_AWS)
    return OperatorError(f"AWS call failed{where}: {exc}", EXIT_AWS)


def explain_argyle_error(exc: BaseException) -> OperatorError | None:
    """Argyle's API error as one line and its code; None for anything else."""
    from argyle_pipeline.argyle.client import ArgyleAuthError, ArgyleError, ArgyleNotFound, ArgyleUnavailable

    if isinstance(exc, ArgyleNotFound):
        return OperatorError(str(exc), EXIT_ARGYLE_NOT_FOUND)
    if isinstance(exc, ArgyleAuthError):
        return OperatorError(str(exc), EXIT_ARGYLE_AUTH)
    if isinstance(exc, ArgyleUnavailable):
        return OperatorError(f"{exc} (try again later)", EXIT_ARGYLE_UNAVAILABLE)
    if isinstance(exc, ArgyleError):
        return OperatorError(str(exc), EXIT_ARGYLE_ERROR)
    return None


def run_command(prog: str, command: Callable[[], int], *, err: TextIO | None = None,
                region: Callable[[], str | None] = lambda: None, endpoint_url: str | None = None,
                names: Mapping[str, str] | None = None) -> int:
    """Run one CLI command; an OperatorError, an Argyle API error or any AWS error becomes
    `prog: error: ...` and its code."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return command()
    except OperatorError as exc:
        failure = exc
    except (BotoCoreError, ClientError) as exc:
        failure = explain_aws_error(exc, region=_safe(region), endpoint_url=endpoint_url, names=names)
    except Exception as exc:
        argyle = explain_argyle_error(exc)
        if argyle is not None:
            failure = argyle
        # The project's own wrappers (QueueUnavailable...) keep AWS's error as their cause.
        elif isinstance(exc.__cause__, BotoCoreError | ClientError):
            failure = explain_aws_error(exc.__cause__, region=_safe(region), endpoint_url=endpoint_url, names=names)
        else:
            raise
    print(f"{prog}: error: {failure}", file=err or sys.stderr)
    return failure.code


def _safe(region: Callable[[], str | None]) -> str | None:
    try:
        return region()
    except Exception:  # the region is only for the message; its absence is reported on its own
        return None


def configured_region(explicit: str | None) -> str | None:
    """The region boto3 will use: the option, else the environment or profile."""
    if explicit:
        return explicit
    import boto3

    return boto3.session.Session().region_name
