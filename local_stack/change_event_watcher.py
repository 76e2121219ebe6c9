"""The local stack's view of the change events (docs/change-events.md): the same EventBridge set-up a
user deploys, in moto (a bus, the example rule, an SQS queue as its target), and a thread that reads
the queue and shows each event as a console line (`make dev`) and a JSON line in a file."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from argyle_pipeline.sync.change_events import SOURCE


def describe(event: dict[str, Any]) -> str:
    """One console line: the detail type, the account, and what changed (counts only)."""
    detail = event.get("detail") or {}
    account = detail.get("account", "?")
    kind = event.get("detail-type", "?")
    if kind == "activities.changed":
        counts = detail.get("counts") or {}
        what = f"+{counts.get('added', 0)} ~{counts.get('updated', 0)} -{counts.get('removed', 0)}"
        if int(detail.get("parts") or 1) > 1:
            what += f"  (part {detail.get('part')} of {detail.get('parts')})"
    elif kind == "account.synced":
        what = f"data as of {detail.get('data_as_of')}"
    else:
        what = ", ".join(f"{k} {v}" for k, v in sorted((detail.get("deleted") or {}).items()))
    return f"change    {kind:19} account:{account}  {what}"


class ChangeEventWatcher:
    def __init__(self, session: Any, *, prefix: str, report: Callable[[str], None] | None = None,
                 path: Path | None = None) -> None:
        self.bus_name = f"{prefix}-changes"
        self._events = session.client("events")
        self._sqs = session.client("sqs")
        self._report, self._path = report, path
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.seen: Counter[str] = Counter()
        self.queue_url = ""

    def start(self) -> ChangeEventWatcher:
        self._events.create_event_bus(Name=self.bus_name)
        self.queue_url = self._sqs.create_queue(QueueName=f"{self.bus_name}-consumer")["QueueUrl"]
        arn = self._sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])
        # The example rule of docs/change-events.md: every change event of the stack.
        self._events.put_rule(Name="all-changes", EventBusName=self.bus_name,
                              EventPattern=json.dumps({"source": [SOURCE]}))
        self._events.put_targets(Rule="all-changes", EventBusName=self.bus_name,
                                 Targets=[{"Id": "console", "Arn": arn["Attributes"]["QueueArn"]}])
        self._thread = threading.Thread(target=self._run, name="change-events", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.drain(wait_seconds=1)
            except Exception as exc:
                if self._stop.is_set():
                    return
                if self._report:
                    self._report(f"change    could not read the change events: {type(exc).__name__}")
                self._stop.wait(1)

    def drain(self, wait_seconds: int = 0) -> int:
        """Show what the queue holds now; returns how many events."""
        found = self._sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10,
                                          WaitTimeSeconds=wait_seconds).get("Messages", [])
        for message in found:
            event = json.loads(message["Body"])
            self.seen[str(event.get("detail-type"))] += 1
            if self._report:
                self._report(describe(event))
            if self._path is not None:
                with open(self._path, "a", encoding="utf-8") as out:
                    out.write(json.dumps(event, sort_keys=True) + "\n")
            self._sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return len(found)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
