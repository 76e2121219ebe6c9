"""The receiver's one line per request: a structured log record that is also an EMF metric.

CloudWatch turns the `_aws` block into metrics (WebhookAccepted by event, WebhookRejected by
reason) and keeps the rest as a searchable JSON log line. Powertools Logger and Metrics would write
two lines and cost more than the signature check and the SQS call together on this hot path (see
bench/receiver_bench.py), so the receiver writes this single line itself; the sync, where that
cost is noise, uses Powertools Logger and Metrics.

Never put a body, a secret or personal data in `fields`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import IO, Any

_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


class RequestTelemetry:
    def __init__(self, service: str = "argyle-receiver", namespace: str | None = None,
                 stream: IO[str] | None = None) -> None:
        self.service = service
        self.namespace = namespace or os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "ArgyleSync")
        self.stream = stream
        self.min_level = _LEVELS.get(os.environ.get("POWERTOOLS_LOG_LEVEL", "INFO").upper(), 20)
        self._emf_json: dict[str, str] = {}

    def outcome(self, *, accepted: bool, status: int, outcome: str, event_name: str | None,
                request_id: str, correlation_id: str, cold_start: bool, **fields: Any) -> None:
        """Write the request's line; the metric is emitted whatever the log level."""
        now_ms = int(time.time() * 1000)
        metric = "WebhookAccepted" if accepted else "WebhookRejected"
        dimension = "event" if accepted else "reason"
        level = "INFO" if accepted else ("ERROR" if status >= 500 else "WARNING")
        fields_out: dict[str, Any] = {
            "level": level,
            "message": "webhook accepted" if accepted else "webhook rejected",
            "service": self.service,
            "timestamp": now_ms,
            "cold_start": cold_start,
            "function_request_id": request_id,
            "correlation_id": correlation_id,
            dimension: (event_name or "unknown") if accepted else outcome,
            "status": status,
            metric: 1,
            **fields,
        }
        # The EMF block is the same for every request but its timestamp: rendered once per metric.
        emf = self._emf_json.get(metric)
        if emf is None:
            emf = self._emf_json[metric] = json.dumps(self._emf(metric, dimension), separators=(",", ":"))[1:-1]
        body = json.dumps(fields_out, separators=(",", ":"), default=str)
        (self.stream or sys.stdout).write(f'{{"_aws":{{"Timestamp":{now_ms},{emf}}},{body[1:]}\n')

    def _emf(self, metric: str, dimension: str) -> dict[str, Any]:
        return {"CloudWatchMetrics": [{"Namespace": self.namespace, "Dimensions": [["service", dimension]],
                                       "Metrics": [{"Name": metric, "Unit": "Count"}]}]}

    def error(self, message: str, **fields: Any) -> None:
        self._write({"level": "ERROR", "message": message, "service": self.service,
                     "timestamp": int(time.time() * 1000), **fields})

    def _write(self, record: dict[str, Any]) -> None:
        stream = self.stream or sys.stdout
        stream.write(json.dumps(record, separators=(",", ":"), default=str) + "\n")
