"""The sync function's own log lines (what CloudWatch Logs would hold), condensed for the `make dev`
console: why a record failed, attempt n of N and when it comes back, that its last failure sends
it to the DLQ, and each wait Argyle asked for (429) or a retry after a 5xx.

A logging handler on the function's logger: it reads the fields the function logs, so the console
says what an operator would read in the logs, not a second account of it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any


def failure_note(fields: dict[str, Any]) -> str:
    """One record's failure, from the fields of the sync's "record failed" log line."""
    reason = f"{fields.get('error')}: {fields.get('reason')}"
    head = f"attempt {fields.get('attempt')} of {fields.get('max_attempts')}: {reason}"
    if fields.get("retry_in_seconds") is None:
        return f"{head}; SQS moves it to the DLQ now (`make redrive` brings it back)"
    return f"{head}; retry in {fields['retry_in_seconds']} s"


def wait_line(fields: dict[str, Any]) -> str:
    status = fields.get("argyle_status")
    why = "its Retry-After" if fields.get("retry_after") else "backoff"
    answer = f"answered {status}" if status else "did not answer"
    return f"argyle    {answer} to {fields.get('argyle_call')}: waiting {fields.get('wait_seconds')} s ({why})"


class SyncConsole(logging.Handler):
    """Collects a note per failed record (read back with `note`, by message id, when the batch is
    reported) and reports Argyle's waits as they happen."""

    def __init__(self, report: Callable[[str], None]) -> None:
        super().__init__(level=logging.INFO)
        self._report = report
        self._notes: dict[str, str] = {}
        self._notes_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        fields = record.__dict__
        if "wait_seconds" in fields:
            self._report(wait_line(fields))
            return
        if "attempt" in fields and "message_id" in fields:
            note = failure_note(fields)
        elif record.getMessage().startswith("record skipped") and "message_id" in fields:
            note = "skipped: waits behind the failed record of its account, and comes back with it"
        else:
            return
        with self._notes_lock:
            self._notes[str(fields["message_id"])] = note

    def note(self, message_id: str) -> str | None:
        with self._notes_lock:
            return self._notes.pop(message_id, None)
