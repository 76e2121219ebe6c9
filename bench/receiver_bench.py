"""Receiver benchmarks: cold start against a bare boto3 client, and the warm path against a bare check.

Cold start: fresh interpreters, timed from inside (interpreter start-up is the same for both and
left out): the handler module imported and its SQS client made, against `import boto3;
boto3.client("sqs")`. Warm path: the whole handler per request (signature, parse, Powertools log
line and metrics) with the SQS client stubbed by botocore's Stubber, against `hmac` plus
`send_message` on the same kind of stubbed client.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
COLD_TARGET, WARM_TARGET = 1.2, 1.3
QUEUE_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/bench.fifo"

BARE_COLD = "import time; t=time.perf_counter(); import boto3; boto3.client('sqs'); print(time.perf_counter()-t)"
OURS_COLD = ("import time; t=time.perf_counter(); import receiver_handler; receiver_handler.event_queue(); "
             "print(time.perf_counter()-t)")


def _env() -> dict[str, str]:
    return {**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench", "EVENTS_QUEUE_URL": QUEUE_URL,
            "PYTHONPATH": f"{ROOT / 'layers' / 'shared'}:{ROOT / 'functions' / 'receiver'}"}


def cold_start(runs: int = 9) -> dict[str, Any]:
    samples: dict[str, list[float]] = {"bare": [], "ours": []}
    for _ in range(runs):  # interleaved, so drift in machine load hits both alike
        for name, code in (("bare", BARE_COLD), ("ours", OURS_COLD)):
            out = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, check=True)
            samples[name].append(float(out.stdout.strip()))
    bare, ours = statistics.median(samples["bare"]), statistics.median(samples["ours"])
    return {"bare_ms": bare * 1000, "ours_ms": ours * 1000, "ratio": ours / bare, "target": COLD_TARGET}


def _stubbed_sqs(n: int) -> Any:
    import boto3
    from botocore.stub import ANY, Stubber

    client = boto3.client("sqs", region_name="us-east-1")
    stubber = Stubber(client)
    for i in range(n):
        stubber.add_response("send_message", {"MessageId": f"m{i}", "MD5OfMessageBody": "0" * 32},
                             {"QueueUrl": QUEUE_URL, "MessageBody": ANY, "MessageGroupId": ANY,
                              "MessageDeduplicationId": ANY, "MessageAttributes": ANY})
    stubber.activate()
    return client


def warm_path(requests: int = 2000) -> dict[str, Any]:
    os.environ.update({k: v for k, v in _env().items() if k != "PYTHONPATH"})
    for path in (ROOT / "layers" / "shared", ROOT / "functions" / "receiver", ROOT):
        sys.path.insert(0, str(path))
    import receiver_handler
    from argyle_pipeline.aws import secret_values
    from argyle_pipeline.aws.event_queue import EventQueue
    from local_stack.lambda_runtime import LambdaContext

    secret = "bench-secret"
    body = json.dumps({"event": "activities.added", "name": "bench", "data": {
        "account": "12db5af4-fd5f-4d1f-bd98-0360df770aa8", "user": "abdb5af4-fd5f-4d1f-bd10-0360df77012c",
        "added_from": "2019-08-07T20:12:09Z", "added_to": "2019-09-23T23:57:31Z", "added_count": 10,
        "available_from": "2019-03-07T20:12:09Z", "available_to": "2019-09-23T23:57:31Z",
        "available_count": 456}}).encode()
    signature = hmac.new(secret.encode(), body, hashlib.sha512).hexdigest()
    event = {"version": "2.0", "headers": {"x-argyle-signature": signature}, "body": body.decode(),
             "isBase64Encoded": False, "requestContext": {"requestId": "r", "http": {"sourceIp": "1.1.1.1"}}}
    # The secret as a warm container has it: cached by Powertools after the first read.
    secret_values_webhook = secret_values.webhook_secrets
    receiver_handler.webhook_secrets = lambda *_a, **_k: (secret,)  # type: ignore[attr-defined]
    context = LambdaContext("ReceiverFunction", timeout_seconds=10)

    def handler_run(n: int) -> float:
        receiver_handler.set_queue(EventQueue(QUEUE_URL, client=_stubbed_sqs(n)))
        sink = io.StringIO()
        # Log lines and EMF metrics are rendered as in Lambda, into a buffer instead of the terminal.
        receiver_handler.telemetry.stream = sink
        with redirect_stdout(sink):  # log lines and EMF metrics are written, as in Lambda
            start = time.perf_counter()
            for _ in range(n):
                response = receiver_handler.lambda_handler(event, context)
            elapsed = time.perf_counter() - start
        assert response["statusCode"] == 202, response
        return elapsed / n

    # The bare path sends the same SQS request (same group, dedupe id and attributes), so the
    # difference measured is everything the handler adds around it.
    queued = receiver_handler.handle_webhook.__globals__["QueuedEvent"](
        body=body, event_name="activities.added", group_id="account:12db5af4-fd5f-4d1f-bd98-0360df770aa8",
        dedupe_key=hashlib.sha256(body).hexdigest(), correlation_id="r", received_at_ms=int(time.time() * 1000),
        deduplication_id=hashlib.sha256(body + b"\nr").hexdigest())
    attributes = queued.attributes()

    def bare_run(n: int) -> float:
        client = _stubbed_sqs(n)
        start = time.perf_counter()
        for _ in range(n):
            expected = hmac.new(secret.encode(), body, hashlib.sha512).hexdigest()
            if not hmac.compare_digest(expected, signature):
                raise AssertionError("bench signature mismatch")
            client.send_message(QueueUrl=QUEUE_URL, MessageBody=body.decode(), MessageGroupId=queued.group_id,
                                MessageDeduplicationId=queued.deduplication_id, MessageAttributes=attributes)
        return (time.perf_counter() - start) / n

    handler_run(200), bare_run(200)  # warm both paths up
    # Interleaved rounds, best of each (timeit's advice): other load on the machine only adds time.
    rounds = [(handler_run(requests // 10), bare_run(requests // 10)) for _ in range(10)]
    ours, bare = min(r[0] for r in rounds), min(r[1] for r in rounds)
    receiver_handler.webhook_secrets = secret_values_webhook  # type: ignore[attr-defined]
    return {"bare_us": bare * 1e6, "ours_us": ours * 1e6, "ratio": ours / bare, "target": WARM_TARGET}


def run_receiver_bench() -> list[dict[str, Any]]:
    cold, warm = cold_start(), warm_path()
    print("Receiver")
    print(f"  cold start  handler+client {cold['ours_ms']:7.1f} ms   bare boto3+client {cold['bare_ms']:7.1f} ms"
          "   "
          f"ratio {cold['ratio']:.2f} (target <= {COLD_TARGET})  {'OK' if cold['ratio'] <= COLD_TARGET else 'MISSED'}")
    print(f"  warm path   handler        {warm['ours_us']:7.1f} us   bare hmac+send    {warm['bare_us']:7.1f} us"
          "   "
          f"ratio {warm['ratio']:.2f} (target <= {WARM_TARGET})  {'OK' if warm['ratio'] <= WARM_TARGET else 'MISSED'}")
    return [{"name": "receiver_cold_start", **cold}, {"name": "receiver_warm_path", **warm}]
