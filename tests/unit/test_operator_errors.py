"""The one wrapper every operator command runs in: what it turns into one line and an exit code,
and what it lets through (a bug stays a traceback, never a tidy line that hides it)."""

from __future__ import annotations

import io

import pytest
from botocore.exceptions import ClientError, NoRegionError

from argyle_ops.operator_errors import OperatorError, run_command
from argyle_pipeline.argyle.client import ArgyleAuthError, ArgyleNotFound, ArgyleUnavailable
from argyle_pipeline.aws.event_queue import QueueUnavailable


def client_error(code: str, message: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


def answer(exc: BaseException, **kwargs: object) -> tuple[int, str]:
    def command() -> int:
        raise exc

    err = io.StringIO()
    code = run_command("tool", command, err=err, **kwargs)  # type: ignore[arg-type]
    return code, err.getvalue()


def test_what_the_command_says_is_wrong_is_printed_with_its_code() -> None:
    assert answer(OperatorError("give --queue-url", 2)) == (2, "tool: error: give --queue-url\n")


@pytest.mark.parametrize(("exc", "code", "line"), [
    (NoRegionError(), 2, "no AWS region: pass --region, or set AWS_REGION / AWS_DEFAULT_REGION"),
    (client_error("ResourceNotFoundException", "Requested resource not found", "Query"), 6,
     "table t1 or t2 does not exist in region eu-west-1: check the table names (or --stack-name) and --region"),
    (client_error("ValidationError", "Stack with id s does not exist", "DescribeStacks"), 6,
     "stack 's' does not exist in region eu-west-1: check --stack-name and --region (the local stack has no "
     "CloudFormation stack: pass the names `make dev` prints instead)"),
    (client_error("ExpiredToken", "The security token included in the request is expired", "Scan"), 6,
     "AWS rejected the credentials (ExpiredToken in region eu-west-1): refresh them (e.g. `aws sso login`) or "
     "check the account and region"),
    (client_error("AccessDeniedException", "User x is not authorized", "Scan"), 6,
     "not allowed to Scan in region eu-west-1: User x is not authorized"),
])
def test_aws_errors_say_what_to_check(exc: BaseException, code: int, line: str) -> None:
    names = {"table": "t1 or t2", "stack": "'s'"}
    assert answer(exc, region=lambda: "eu-west-1", names=names) == (code, f"tool: error: {line}\n")


def test_an_error_the_project_wrapped_is_explained_by_its_aws_cause() -> None:
    try:
        try:
            raise client_error("AWS.SimpleQueueService.NonExistentQueue", "The queue does not exist", "SendMessage")
        except ClientError as cause:
            raise QueueUnavailable("QueueDoesNotExist") from cause
    except QueueUnavailable as wrapped:
        code, line = answer(wrapped, names={"queue": "https://sqs/q.fifo"})
    assert (code, line) == (6, "tool: error: queue https://sqs/q.fifo does not exist: check the queue URL "
                               "(or --stack-name)\n")


@pytest.mark.parametrize(("exc", "code"), [
    (ArgyleNotFound("GET /webhooks/x: HTTP 404"), 3),
    (ArgyleAuthError("GET /activities: HTTP 401, Argyle rejected the API key id/secret", status=401), 4),
    (ArgyleUnavailable("GET /activities: HTTP 503 after 5 attempt(s)", status=503), 5),
])
def test_argyle_errors_have_their_own_codes(exc: BaseException, code: int) -> None:
    got, line = answer(exc)
    assert got == code and line.startswith(f"tool: error: {exc}") and line.count("\n") == 1


def test_a_bug_is_not_dressed_up_as_a_mistake() -> None:
    with pytest.raises(KeyError):
        answer(KeyError("a bug"))
