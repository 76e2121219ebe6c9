"""Regenerates and re-signs the sample events in events/ (`make events`).

Each API Gateway (HTTP API, payload 2.0) event carries a webhook from Argyle's documentation,
signed with the local development secret, so `sam local invoke ReceiverFunction -e events/<file>`
and `make invoke` verify it. `forged_signature.json` is signed with another secret and must be
rejected. `sqs_*.json` are what Lambda's SQS source hands SyncFunction for the same webhooks. `env.json`
points `sam local invoke` at the local stack running on the host as host.docker.internal
(`LOCAL_STACK_HOST=0.0.0.0 make dev`: by default it listens on 127.0.0.1 only, out of a container's reach).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "layers" / "shared"), str(ROOT)]

from argyle_pipeline.aws.event_queue import delivery_keys  # noqa: E402
from argyle_pipeline.receiving.signature import sign  # noqa: E402
from local_stack.dev_config import (  # noqa: E402
    DEFAULT_MOTO_PORT,
    DEFAULT_SANDBOX_PORT,
    LOCAL_DEV_SECRET,
    LOCAL_PREFIX,
)

ACCOUNT = "12db5af4-fd5f-4d1f-bd98-0360df770aa8"
USER = "abdb5af4-fd5f-4d1f-bd10-0360df77012c"

# The payloads of Argyle's webhook documentation (activities-webhooks.txt, users-webhooks.txt).
WEBHOOKS: dict[str, dict[str, Any]] = {
    "activities_fully_synced": {
        "event": "activities.fully_synced", "name": "All historical data synced",
        "data": {"account": ACCOUNT, "user": USER, "available_from": "2019-03-07T20:12:09Z",
                 "available_to": "2019-09-23T23:57:31Z", "available_count": 432},
    },
    "activities_partially_synced": {
        "event": "activities.partially_synced", "name": "7 days synced",
        "data": {"account": ACCOUNT, "user": USER, "days_synced": 7, "available_from": "2019-06-07T20:12:09Z",
                 "available_to": "2019-06-14T20:12:09Z", "available_count": 324},
    },
    "activities_added": {
        "event": "activities.added", "name": "Activities added",
        "data": {"account": ACCOUNT, "user": USER, "added_from": "2019-08-07T20:12:09Z",
                 "added_to": "2019-09-23T23:57:31Z", "added_count": 10, "available_from": "2019-03-07T20:12:09Z",
                 "available_to": "2019-09-23T23:57:31Z", "available_count": 456},
    },
    "activities_updated": {
        "event": "activities.updated", "name": "Activities updated",
        "data": {"account": ACCOUNT, "user": USER, "updated_from": "2019-09-10T10:00:00Z",
                 "updated_to": "2019-09-12T12:00:00Z", "updated_count": 2,
                 "updated_activities": ["d667a477-e252-4f8a-9518-92a51b235187",
                                        "27f3cde1-1ca0-4b5a-940d-337fd33f97b5"],
                 "available_from": "2019-03-07T20:12:09Z", "available_to": "2019-09-23T23:57:31Z",
                 "available_count": 456},
    },
    "activities_removed": {
        "name": "Activities Removed", "event": "activities.removed",
        "data": {"account": ACCOUNT, "user": USER, "removed_from": "2021-09-27T00:22:54Z",
                 "removed_to": "2021-09-27T00:22:54Z", "removed_count": 1,
                 "removed_activities": ["017d9f62-84e1-15ad-b269-624458d343c8"],
                 "available_from": "2019-09-03T17:56:22Z", "available_to": "2021-12-09T00:01:01Z",
                 "available_count": 1237},
    },
    "users_fully_synced": {
        "event": "users.fully_synced", "name": "User fully synced",
        "data": {"user": USER, "resource": {
            "id": USER, "data_providers_connected": ["mypayroll_platform"],
            "employers_connected": ["Whole Goods", "SprintCar"], "external_metadata": {},
            "created_at": "2022-09-29T19:55:43.166095Z"}},
    },
    "accounts_added": {
        "event": "accounts.added", "name": "Account added",
        "data": {"account": ACCOUNT, "user": USER},
    },
}

GIG_IDS = ["0b2a6f4e-8c1d-4d3e-9f5a-1c2b3d4e5f60", "7e9d8c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b"]
ITEM = "item_000012345"

# API v2 (API-NOTES.md, "API v2"): the gigs.* events and v2's users.fully_synced, as captured
# from Argyle's sandbox by public integrations (some counts as strings; an extra item_id).
V2_WEBHOOKS: dict[str, dict[str, Any]] = {
    "gigs_fully_synced": {
        "event": "gigs.fully_synced", "name": "Gigs fully synced",
        "data": {"account": ACCOUNT, "user": USER, "available_from": "2019-03-07T20:12:09Z",
                 "available_to": "2019-09-23T23:57:31Z", "available_count": 432},
    },
    "gigs_partially_synced": {
        "event": "gigs.partially_synced", "name": "Gigs 30 days synced",
        "data": {"account": ACCOUNT, "user": USER, "item_id": ITEM, "days_synced": 30,
                 "available_from": "2019-08-24T20:12:09Z", "available_to": "2019-09-23T23:57:31Z",
                 "available_count": 61},
    },
    "gigs_added": {
        "event": "gigs.added", "name": "Gigs added",
        "data": {"account": ACCOUNT, "user": USER, "added_from": "2019-09-20T08:00:00Z",
                 "added_to": "2019-09-23T23:57:31Z", "added_count": "3", "available_from": "2019-03-07T20:12:09Z",
                 "available_to": "2019-09-23T23:57:31Z", "available_count": "435"},
    },
    "gigs_updated": {
        "event": "gigs.updated", "name": "Gigs updated",
        "data": {"account": ACCOUNT, "user": USER, "updated_from": "2019-09-10T10:00:00Z",
                 "updated_to": "2019-09-12T12:00:00Z", "updated_count": "2", "updated_gigs": GIG_IDS,
                 "available_from": "2019-03-07T20:12:09Z", "available_to": "2019-09-23T23:57:31Z",
                 "available_count": 435},
    },
    "gigs_removed": {
        "event": "gigs.removed", "name": "Gigs removed",
        "data": {"account": ACCOUNT, "user": USER, "removed_from": "2019-09-12T12:00:00Z",
                 "removed_to": "2019-09-12T12:00:00Z", "removed_count": 1, "removed_gigs": GIG_IDS[1:],
                 "available_from": "2019-03-07T20:12:09Z", "available_to": "2019-09-23T23:57:31Z",
                 "available_count": 434},
    },
    "users_fully_synced_v2": {
        "event": "users.fully_synced", "name": "User fully synced",
        "data": {"user": USER, "resource": {
            "id": USER, "accounts_connected": [ACCOUNT], "items_connected": [ITEM],
            "employers_connected": ["SprintCar"], "external_metadata": {}, "external_id": None,
            "created_at": "2022-09-29T19:55:43.166095Z"}},
    },
}

REQUEST_TIME_EPOCH_MS = 1732406400000  # fixed, so regenerating changes nothing


def body_bytes(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode("utf-8")


def apigw_event(body: bytes, signature: str | None, request_id: str, *, as_base64: bool = False) -> dict[str, Any]:
    headers = {"content-type": "application/json", "user-agent": "Argyle-Webhooks/1.0",
               "host": "abc123.execute-api.us-east-1.amazonaws.com"}
    if signature is not None:
        headers["x-argyle-signature"] = signature
    return {
        "version": "2.0",
        "routeKey": "POST /webhooks/argyle",
        "rawPath": "/dev/webhooks/argyle",
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012", "apiId": "abc123", "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {"method": "POST", "path": "/dev/webhooks/argyle", "protocol": "HTTP/1.1",
                     "sourceIp": "34.27.251.226", "userAgent": "Argyle-Webhooks/1.0"},
            "requestId": request_id, "routeKey": "POST /webhooks/argyle", "stage": "dev",
            "time": "24/Nov/2024:00:00:00 +0000", "timeEpoch": REQUEST_TIME_EPOCH_MS,
        },
        "body": base64.b64encode(body).decode("ascii") if as_base64 else body.decode("utf-8"),
        "isBase64Encoded": as_base64,
    }


def sqs_event(body: bytes, event_name: str, group_id: str, index: int,
              dedupe_id: str | None = None) -> dict[str, Any]:
    # As the receiver queues it: correlation id = the request id, deduplication id per delivery
    # (the sync's own messages give theirs).
    key, delivery_id = delivery_keys(body, f"sample-{index}")
    dedupe_id = dedupe_id or delivery_id
    return {"Records": [{
        "messageId": f"00000000-0000-4000-8000-{index:012d}",
        "receiptHandle": f"sample-receipt-{index}",
        "body": body.decode("utf-8"),
        "attributes": {
            "ApproximateReceiveCount": "1", "SentTimestamp": str(REQUEST_TIME_EPOCH_MS),
            "SequenceNumber": f"1{index:019d}", "MessageGroupId": group_id,
            "SenderId": "AROAEXAMPLE", "MessageDeduplicationId": dedupe_id,
            "ApproximateFirstReceiveTimestamp": str(REQUEST_TIME_EPOCH_MS),
        },
        "messageAttributes": {
            "event": {"stringValue": event_name, "stringListValues": [], "binaryListValues": [], "dataType": "String"},
            "dedupe_key": {"stringValue": key, "stringListValues": [], "binaryListValues": [], "dataType": "String"},
            "correlation_id": {"stringValue": f"sample-{index}", "stringListValues": [], "binaryListValues": [],
                               "dataType": "String"},
            "received_at_ms": {"stringValue": str(REQUEST_TIME_EPOCH_MS), "stringListValues": [],
                               "binaryListValues": [], "dataType": "Number"},
            "body_encoding": {"stringValue": "raw", "stringListValues": [], "binaryListValues": [],
                              "dataType": "String"},
        },
        "md5OfBody": hashlib.md5(body).hexdigest(),  # noqa: S324 - SQS's own checksum, not security
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:argyle-sync-EventsQueue.fifo",
        "awsRegion": "us-east-1",
    }]}


def all_events() -> dict[str, dict[str, Any]]:
    files: dict[str, dict[str, Any]] = {}
    # v2's samples number after v1's and the reconcile sample, so adding them changed no v1 file.
    numbered = [*enumerate(WEBHOOKS.items(), start=1),
                *enumerate(V2_WEBHOOKS.items(), start=len(WEBHOOKS) + 2)]
    for index, (stem, payload) in numbered:
        body = body_bytes(payload)
        files[f"{stem}.json"] = apigw_event(body, sign(body, LOCAL_DEV_SECRET), f"sample-{stem}")
        data = payload["data"]
        group = f"user:{data['user']}" if payload["event"].startswith("users.") else f"account:{data['account']}"
        files[f"sqs_{stem}.json"] = sqs_event(body, payload["event"], group, index)
    added = body_bytes(WEBHOOKS["activities_added"])
    files["activities_added_base64.json"] = apigw_event(
        added, sign(added, LOCAL_DEV_SECRET), "sample-base64", as_base64=True)
    files["forged_signature.json"] = apigw_event(
        added, sign(added, "not-the-secret"), "sample-forged")
    files["missing_signature.json"] = apigw_event(added, None, "sample-unsigned")
    # ReconcileFunction: what EventBridge Scheduler sends (nothing), and an on-demand full pass; and
    # what SyncFunction then receives for one account.
    files["reconcile_scheduled.json"] = {}
    files["reconcile_on_demand.json"] = {"request_id": "on-demand-sample-0001", "scope": "full"}
    account = WEBHOOKS["activities_added"]["data"]["account"]
    job = json.dumps({"event": "argyle_sync.reconcile", "data": {
        "account": account, "request_id": "scheduled-20000", "scope": "recent"}}, sort_keys=True).encode()
    files["sqs_reconcile.json"] = sqs_event(
        job, "argyle_sync.reconcile", f"account:{account}", len(WEBHOOKS) + 1,
        dedupe_id=hashlib.sha256(f"reconcile:{account}:scheduled-20000#part0".encode()).hexdigest())
    files["env.json"] = sam_local_env()
    return files


def sam_local_env() -> dict[str, Any]:
    """`sam local invoke --env-vars events/env.json`: the functions in Docker, AWS calls going to the
    local stack's moto server (`make dev`) on the host, whose names are fixed (prefix "local")."""
    endpoint = f"http://host.docker.internal:{DEFAULT_MOTO_PORT}"
    queue = f"{endpoint}/123456789012/{LOCAL_PREFIX}-EventsQueue.fifo"
    common = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
              "AWS_DEFAULT_REGION": "us-east-1", "POWERTOOLS_TRACE_DISABLED": "true", "EVENTS_QUEUE_URL": queue}
    return {
        "ReceiverFunction": {**common, "WEBHOOK_SECRET_ID": f"{LOCAL_PREFIX}-WebhookSecret"},
        "SyncFunction": {
            **common,
            # `make dev`'s sandbox serves API v2 by default (ARGYLE_API_VERSION=v1 make dev: set both to v1)
            "ARGYLE_API_VERSION": "v2",
            "ARGYLE_API_URL": f"http://host.docker.internal:{DEFAULT_SANDBOX_PORT}/v2",
            "ARGYLE_CREDENTIALS_SECRET_ID": f"{LOCAL_PREFIX}-ArgyleCredentialsSecret",
            "ACTIVITIES_TABLE": f"{LOCAL_PREFIX}-ActivitiesTable",
            "SYNC_STATE_TABLE": f"{LOCAL_PREFIX}-SyncStateTable",
            "IDEMPOTENCY_TABLE": f"{LOCAL_PREFIX}-IdempotencyTable",
        },
        "ReconcileFunction": {**common, "SYNC_STATE_TABLE": f"{LOCAL_PREFIX}-SyncStateTable",
                              "ARGYLE_API_VERSION": "v2"},
    }


def write_events(target: Path) -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, event in all_events().items():
        path = target / name
        path.write_text(json.dumps(event, indent=2) + "\n", encoding="utf-8")
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "events")
    args = parser.parse_args()
    for path in write_events(args.out):
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


if __name__ == "__main__":
    main()
