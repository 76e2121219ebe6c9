"""The local stack as a library: moto's server as AWS, the template's resources created in it, the
receiver behind a real HTTP server, and the sync driven by an SQS poller. Used by `make dev`,
`make demo`, the end-to-end tests and the load run.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from local_stack.change_event_watcher import ChangeEventWatcher
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
from local_stack.serialized_moto import serialize_requests
from local_stack.sqs_poller import SqsPoller
from local_stack.sync_console import SyncConsole
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
    # A record whose invocation raised (a crash) comes back after this many seconds (AWS: 5,400).
    retry_delay: int = 1
    # A failed record's retry delays (the sync's RETRY_DELAYS_SECONDS); None: the template's
    # 30 s, 2 min, 8 min, 30 min. Tests and the demo scale them down to seconds.
    retry_delays: tuple[int, ...] | None = None
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
    # Change events (PublishChangeEvents) to a bus in moto, shown as console lines (`report`) and
    # written as JSON lines to `change_events_file` (`make dev`, `make demo`).
    change_events: bool = False
    change_events_file: Path | None = None


@dataclass
class StackCounters:
    accepted: int = 0
    rejected: dict[int, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class LocalStackError(Exception):
    """The stack cannot start as configured; the message says what to do."""


class PortInUse(LocalStackError):
    def __init__(self, what: str, host: str, port: int) -> None:
        super().__init__(f"port {port} on {host} ({what}) is already in use")
        self.what, self.host, self.port = what, host, port


def check_port_free(what: str, host: str, port: int) -> None:
    """PortInUse unless `port` can be bound on `host` now (0: any free port, always fine)."""
    if not port:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is fine
        try:
            sock.bind((host, port))
        except OSError:
            raise PortInUse(what, host, port) from None


def advertised_host(host: str) -> str:
    """The address to print and to call: a wildcard bind is reachable on loopback."""
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host  # noqa: S104 - compared, not bound


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
        self._console: SyncConsole | None = None
        self._template = load_template()
        self.dedupe_window = FifoDedupeWindow(config.dedupe_window_seconds, on_drop=self._report_drop)
        self._reconciles = 0
        self._reconcile_handler: Callable[[dict[str, Any], Any], Any] | None = None
        self.change_events: ChangeEventWatcher | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> LocalStack:
        cfg = self.config
        # moto's server logs every request through werkzeug; the stack reports per event instead.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        check_port_free("the AWS endpoint, moto", cfg.host, cfg.moto_port)
        check_port_free("the webhook receiver", cfg.host, cfg.receiver_port)
        moto = ThreadedMotoServer(ip_address=cfg.host, port=cfg.moto_port, verbose=False)
        self._start_moto(moto)
        self._exit.callback(moto.stop)
        # One request at a time into moto, whose backends are not thread-safe (see serialized_moto).
        serialize_requests(moto._server)
        self._count_aws_calls(moto)
        host, port = moto.get_host_and_port()
        host = advertised_host(str(host))
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
        if cfg.change_events:
            self.change_events = ChangeEventWatcher(session, prefix=cfg.prefix, report=self._report,
                                                    path=cfg.change_events_file).start()
            self._exit.callback(self.change_events.stop)
            env["CHANGE_EVENT_BUS"] = self.change_events.bus_name
        if cfg.retry_delays is not None:
            env["RETRY_DELAYS_SECONDS"] = ",".join(str(d) for d in cfg.retry_delays)
        env.update(cfg.extra_env)
        self._exit.enter_context(environment(env))

        receiver = load_handler("ReceiverFunction", self._template)
        self.dedupe_window.attach(sys.modules[receiver.__module__].event_queue().client)
        try:
            self._receiver_http = ReceiverHttpServer(
                lambda event: receiver(event, LambdaContext("ReceiverFunction", timeout_seconds=10)),
                host=cfg.host, port=cfg.receiver_port, report=self._report_request)
        except OSError:  # taken between the check above and now
            raise PortInUse("the webhook receiver", cfg.host, cfg.receiver_port) from None
        self._receiver_http.start()
        self._exit.callback(self._receiver_http.stop)
        # The reconcile schedule's subscription check looks for this URL at Argyle (the template's
        # WEBHOOK_URL names the API Gateway URL, which the local stack does not have).
        self._exit.enter_context(environment({"WEBHOOK_URL": self.webhook_url}))
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
        # One handler module per worker: Lambda runs concurrent invocations in separate containers,
        # and the handler's module state (its batch processor) must not be shared between them.
        containers = [load_handler("SyncFunction", self._template, container=n) for n in range(cfg.sync_workers)]
        for sync in containers:
            sync_sends_through(sync, self.dedupe_window.attach(session.client("sqs")))
        if self._report:
            # The function's own log lines tell the console why a record failed (sync_console.py).
            # Added after the handlers are loaded: Powertools takes the logger's first handler as its own.
            self._console = SyncConsole(self._report)
            sync_env = function_environment("SyncFunction", self.resources, parameters=params, template=self._template)
            sync_logger = logging.getLogger(sync_env.get("POWERTOOLS_SERVICE_NAME") or "argyle-sync")
            sync_logger.addHandler(self._console)
            self._exit.callback(sync_logger.removeHandler, self._console)
        self.poller = SqsPoller(
            session.client("sqs"), self.resources.queue_urls["EventsQueue"],
            [self._invoker(sync, timeout) for sync in containers],
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

    @staticmethod
    def _invoker(handler: Callable[[dict[str, Any], Any], Any], timeout: int) -> Callable[[dict[str, Any]], Any]:
        return lambda event: handler(event, LambdaContext("SyncFunction", timeout_seconds=timeout))

    @staticmethod
    def _start_moto(moto: ThreadedMotoServer) -> None:
        """moto's start() waits forever if its server cannot bind; wait in a thread, with a deadline."""
        starter = threading.Thread(target=moto.start, name="moto-start", daemon=True)
        starter.start()
        starter.join(timeout=30)
        if starter.is_alive() or moto._server is None:
            raise PortInUse("the AWS endpoint, moto", moto._ip_address, moto._port)

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
        host = advertised_host(self.config.host)
        return self._receiver_http.url.replace(f"//{self.config.host}:", f"//{host}:", 1)

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

    def _report_batch(self, records: list[dict[str, Any]], failed: set[str], elapsed: float, crashed: bool) -> None:
        if not self._report:
            return
        for record in records:
            attrs = record["messageAttributes"]
            event = (attrs.get("event") or {}).get("stringValue", "?")
            key = ((attrs.get("dedupe_key") or {}).get("stringValue") or "")[:12]
            group = record["attributes"].get("MessageGroupId", "")
            if record["messageId"] not in failed:
                self._report(f"sync      {'synced':8}  {event}  {group}  {key}  batch {elapsed * 1000:.0f} ms")
                continue
            note = self._console.note(record["messageId"]) if self._console else None
            if crashed:
                note = f"the invocation raised (see the function log); retry in {self.config.retry_delay} s"
            elif note is None:
                note = "reported failed (see the function log)"
            outcome = "TO DLQ" if "to the DLQ" in note else "skipped" if note.startswith("skipped") else "FAILED"
            self._report(f"sync      {outcome:8}  {event}  {group}  {key}  {note}")
