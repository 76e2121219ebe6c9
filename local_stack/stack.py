"""The local stack as a library: moto's server as AWS, the template's resources created in it, the
receiver behind a real HTTP server, and the sync driven by an SQS poller. Used by `make dev`,
`make demo`, the end-to-end tests and the load run.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from local_stack.dev_config import LOCAL_DEV_SECRET, LOCAL_PREFIX, REGION
from local_stack.fifo_dedupe_window import SQS_WINDOW_SECONDS, FifoDedupeWindow
from local_stack.lambda_runtime import (
    LambdaContext,
    environment,
    function_environment,
    function_timeout,
    load_handler,
    sync_sends_through,
)
from local_stack.receiver_http import ReceiverHttpServer
from local_stack.sqs_poller import SqsPoller
from local_stack.template_resources import TEMPLATE_PATH, StackResources, create_stack_resources, load_template


@dataclass
class StackConfig:
    argyle_api_url: str
    argyle_api_key_id: str
    argyle_api_key_secret: str
    webhook_secret: str = LOCAL_DEV_SECRET
    host: str = "127.0.0.1"
    moto_port: int = 0          # 0: any free port
    receiver_port: int = 0
    sync_workers: int = 2
    retry_delay: int = 1
    prefix: str = LOCAL_PREFIX
    extra_env: dict[str, str] = field(default_factory=dict)
    # Run the sync's poller as a separate process that can be killed mid-sync (crash tests).
    sync_in_subprocess: bool = False
    sync_timeout: int | None = None   # the function's timeout as its context reports it
    worker_visibility: int = 6
    # SQS FIFO's deduplication window, simulated on the functions' SQS clients (moto has none).
    dedupe_window_seconds: float = SQS_WINDOW_SECONDS
    # Seconds between runs of the reconcile schedule (0: only on demand, `reconcile_now()`).
    reconcile_every: float = 0.0


@dataclass
class StackCounters:
    accepted: int = 0
    rejected: dict[int, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class LocalStack:
    def __init__(self, config: StackConfig, *, report: Callable[[str], None] | None = None) -> None:
        self.config = config
        self._report = report
        self._exit = ExitStack()
        self.counters = StackCounters()
        self.resources: StackResources | None = None
        self.aws_endpoint = ""
        self.aws_calls = 0
        self._worker: subprocess.Popen[bytes] | None = None
        self._batch_size, self._sync_timeout = 10, 900
        self._receiver_http: ReceiverHttpServer | None = None
        self.poller: SqsPoller | None = None
        self._template = load_template()
        self.dedupe_window = FifoDedupeWindow(config.dedupe_window_seconds, on_drop=self._report_drop)
        self._reconciles = 0
        self._reconcile_handler: Callable[[dict[str, Any], Any], Any] | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> LocalStack:
        cfg = self.config
        # moto's server logs every request through werkzeug; the stack reports per event instead.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        moto = ThreadedMotoServer(ip_address=cfg.host, port=cfg.moto_port, verbose=False)
        moto.start()
        self._exit.callback(moto.stop)
        self._count_aws_calls(moto)
        host, port = moto.get_host_and_port()
        # moto keeps its state per process, shared by every server in it: a new stack starts empty.
        urllib.request.urlopen(urllib.request.Request(
            f"http://{host}:{port}/moto-api/reset", method="POST"), timeout=10).close()
        self.aws_endpoint = f"http://{host}:{port}"

        base_env = {"AWS_ENDPOINT_URL": self.aws_endpoint, "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION,
                    "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "local"),
                    "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "local"),
                    "POWERTOOLS_TRACE_DISABLED": "true"}
        self._exit.enter_context(environment(base_env))
        session = boto3.Session(region_name=REGION)
        self.resources = create_stack_resources(
            session, prefix=cfg.prefix, endpoint_url=self.aws_endpoint, template=self._template,
            secret_values={
                "WebhookSecret": json.dumps({"current": cfg.webhook_secret, "previous": ""}),
                "ArgyleCredentialsSecret": json.dumps({"api_key_id": cfg.argyle_api_key_id,
                                                       "api_key_secret": cfg.argyle_api_key_secret}),
            })
        params = {"ArgyleApiUrl": cfg.argyle_api_url}
        env = {}
        for fn in ("ReceiverFunction", "SyncFunction", "ReconcileFunction"):
            env.update(function_environment(fn, self.resources, parameters=params, template=self._template))
        env.update(cfg.extra_env)
        self._exit.enter_context(environment(env))

        receiver = load_handler("ReceiverFunction", self._template)
        self.dedupe_window.attach(sys.modules[receiver.__module__].event_queue().client)
        self._receiver_http = ReceiverHttpServer(
            lambda event: receiver(event, LambdaContext("ReceiverFunction", timeout_seconds=10)),
            host=cfg.host, port=cfg.receiver_port, report=self._report_request)
        self._receiver_http.start()
        self._exit.callback(self._receiver_http.stop)
        # Loaded once, before any sync runs: loading a handler resets module caches.
        self._reconcile_handler = load_handler("ReconcileFunction", self._template)

        timeout = cfg.sync_timeout or function_timeout("SyncFunction", self._template)
        sync_props = self._template["Resources"]["SyncFunction"]["Properties"]
        batch_size = int(sync_props["Events"]["QueuedWebhooks"]["Properties"].get("BatchSize", 10))
        self._batch_size, self._sync_timeout = batch_size, timeout
        if cfg.sync_in_subprocess:
            self.start_sync_worker()
            self._exit.callback(self.stop_sync_worker)
            return self
        sync = load_handler("SyncFunction", self._template)
        sync_sends_through(sync, self.dedupe_window.attach(session.client("sqs")))
        self.poller = SqsPoller(
            session.client("sqs"), self.resources.queue_urls["EventsQueue"],
            lambda event: sync(event, LambdaContext("SyncFunction", timeout_seconds=timeout)),
            batch_size=batch_size, workers=cfg.sync_workers, retry_delay=cfg.retry_delay, region=REGION,
            report=self._report_batch)
        self.poller.start()
        self._exit.callback(self.poller.stop)
        if cfg.reconcile_every > 0:
            self._start_reconcile_schedule(cfg.reconcile_every)
        return self

    # -- the reconcile schedule ----------------------------------------------------------------
    def reconcile_now(self, scope: str | None = None) -> dict[str, int]:
        """What EventBridge Scheduler does in AWS: invoke ReconcileFunction, which queues a reconcile
        of every known account (the sync function then does them). A fresh request id each call."""
        self._reconciles += 1
        handler = self._reconcile_handler
        assert handler is not None, "stack not started"
        event: dict[str, Any] = {"request_id": f"local-{int(time.time())}-{self._reconciles}"}
        if scope:
            event["scope"] = scope
        queued: dict[str, int] = handler(event, LambdaContext("ReconcileFunction", timeout_seconds=900))
        if self._report:
            self._report(f"reconcile queued  recent {queued['recent']}  full {queued['full']}")
        return queued

    def _start_reconcile_schedule(self, every: float) -> None:
        stop = threading.Event()

        def run() -> None:
            while not stop.wait(every):
                try:
                    self.reconcile_now()
                except Exception as exc:  # the schedule retries next period, as EventBridge would
                    if self._report:
                        self._report(f"reconcile FAILED  {type(exc).__name__}: {str(exc)[:200]}")

        thread = threading.Thread(target=run, name="reconcile-schedule", daemon=True)
        thread.start()

        def halt() -> None:
            stop.set()
            thread.join(timeout=10)

        self._exit.callback(halt)

    def stop(self) -> None:
        self._exit.close()

    # -- the sync worker as a process (crash tests) ------------------------------------------
    def start_sync_worker(self) -> None:
        cfg = self.config
        self._worker = subprocess.Popen(  # noqa: S603 - our own module, no shell
            [sys.executable, "-m", "local_stack.sync_worker", "--batch-size", str(self._batch_size),
             "--workers", str(cfg.sync_workers), "--retry-delay", str(cfg.retry_delay),
             "--visibility", str(cfg.worker_visibility), "--timeout", str(self._sync_timeout),
             "--dedupe-window", str(cfg.dedupe_window_seconds)],
            env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            cwd=str(TEMPLATE_PATH.parent))

    def kill_sync_worker(self) -> None:
        """SIGKILL: the worker dies wherever it is, between any two writes, like a crashed Lambda."""
        if self._worker is not None:
            self._worker.kill()
            self._worker.wait(timeout=10)
            self._worker = None

    def stop_sync_worker(self) -> None:
        if self._worker is not None:
            self._worker.terminate()
            try:
                self._worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._worker.kill()
            self._worker = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _count_aws_calls(self, moto: ThreadedMotoServer) -> None:
        """Count every request moto's server answers (all clients, all sessions): the demo's AWS calls."""
        server = moto._server  # werkzeug's server; its WSGI app is wrapped before any request arrives
        if server is None:
            return
        app = server.app

        def counting_app(environ: dict[str, Any], start_response: Any) -> Any:
            with self.counters.lock:
                self.aws_calls += 1
            return app(environ, start_response)

        server.app = counting_app

    # -- what tools and tests read ---------------------------------------------------------
    @property
    def webhook_url(self) -> str:
        assert self._receiver_http is not None, "stack not started"
        return self._receiver_http.url

    def outputs(self) -> dict[str, str]:
        """The same names as template.yaml's Outputs."""
        r = self.resources
        assert r is not None, "stack not started"
        return {
            "WebhookUrl": self.webhook_url,
            "EventsQueueUrl": r.queue_urls["EventsQueue"],
            "EventsDlqUrl": r.queue_urls["EventsDLQ"],
            "WebhookSecretArn": r.secrets["WebhookSecret"],
            "ArgyleCredentialsSecretArn": r.secrets["ArgyleCredentialsSecret"],
            "ActivitiesTableName": r.tables["ActivitiesTable"],
            "SyncStateTableName": r.tables["SyncStateTable"],
            "IdempotencyTableName": r.tables["IdempotencyTable"],
        }

    def queue_depth(self, logical_id: str = "EventsQueue") -> int:
        assert self.resources is not None
        attrs = boto3.client("sqs", region_name=REGION, endpoint_url=self.aws_endpoint).get_queue_attributes(
            QueueUrl=self.resources.queue_urls[logical_id],
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])

    def wait_until_drained(self, timeout: float = 120.0, settle: float = 1.0) -> bool:
        """True once the queue has stayed empty for `settle` seconds; False at `timeout`."""
        deadline = time.monotonic() + timeout
        empty_since: float | None = None
        while time.monotonic() < deadline:
            if self.queue_depth() == 0:
                empty_since = empty_since or time.monotonic()
                if time.monotonic() - empty_since >= settle:
                    return True
            else:
                empty_since = None
            time.sleep(0.2)
        return False

    # -- one line per event ------------------------------------------------------------------
    def _report_request(self, event: dict[str, Any], response: dict[str, Any]) -> None:
        status = int(response.get("statusCode", 0))
        with self.counters.lock:
            if status == 202:
                self.counters.accepted += 1
            else:
                self.counters.rejected[status] = self.counters.rejected.get(status, 0) + 1
        if self._report:
            try:
                answer = json.loads(response.get("body") or "{}")
            except ValueError:
                answer = {}
            what = answer.get("event") or answer.get("error", "")
            key = (answer.get("dedupe_key") or "")[:12]
            self._report(f"receiver  {status}  {what}  {key}".rstrip())

    def _report_drop(self, group: str, deduplication_id: str) -> None:
        if self._report:
            self._report(f"queue     dropped: deduplication id seen within {self.config.dedupe_window_seconds:g} s"
                         f"  {group}  {deduplication_id[:12]}")

    def _report_batch(self, records: list[dict[str, Any]], failed: set[str], elapsed: float) -> None:
        if not self._report:
            return
        for record in records:
            attrs = record["messageAttributes"]
            event = (attrs.get("event") or {}).get("stringValue", "?")
            key = ((attrs.get("dedupe_key") or {}).get("stringValue") or "")[:12]
            group = record["attributes"].get("MessageGroupId", "")
            outcome = "FAILED (will retry)" if record["messageId"] in failed else "synced"
            self._report(f"sync      {outcome:18}  {event}  {group}  {key}  batch {elapsed * 1000:.0f} ms")
