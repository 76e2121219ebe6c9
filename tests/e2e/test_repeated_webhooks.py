"""End to end over real HTTP, with SQS FIFO's 5-minute deduplication window in front of moto (as
`make dev` has it): Argyle's byte-identical body for a second change is not lost to the queue."""

from __future__ import annotations

import sys
import time

import pytest

from argyle_pipeline.aws.event_queue import QueuedEvent
from tests.support.e2e import pipeline, settle, stored_activities, truth

pytestmark = pytest.mark.e2e


def test_a_second_change_with_an_identical_body_reaches_the_copy_within_the_queues_window() -> None:
    with pipeline(seed=25) as (sandbox, stack):
        # Given a synced account, one of whose activities changed and whose activities.updated was synced
        _, account = sandbox.connect_account(n_activities=30)
        settle(sandbox, stack)
        target = sorted(truth(sandbox, account))[0]
        sandbox.periodic_scan(account, update_ids=[target])
        settle(sandbox, stack)
        first = stored_activities(stack, account)[target]
        # When it changes again seconds later and Argyle's identical body arrives (well inside 5 minutes)
        sandbox.periodic_scan(account, update_ids=[target])
        settle(sandbox, stack)
        # Then Argyle's two bodies were byte-identical, and the copy holds the second change
        updates = [d.body for d in sandbox.deliveries if d.event == "activities.updated"]
        assert len(updates) == 2 and updates[0] == updates[1]
        assert stored_activities(stack, account)[target] == truth(sandbox, account)[target] != first
        assert stored_activities(stack, account) == truth(sandbox, account)


def test_the_local_stack_drops_an_id_sent_again_within_the_window_after_the_first_was_processed() -> None:
    with pipeline(seed=26, dedupe_window_seconds=60) as (_sandbox, stack):
        # Given one delivery that the receiver's SQS client sends, and the sync processes and deletes
        queue = sys.modules["receiver_handler"].event_queue()
        body = b'{"event": "accounts.updated", "data": {"account": "acc-window"}}'
        event = QueuedEvent(body=body, event_name="accounts.updated", group_id="account:acc-window",
                            dedupe_key="k", correlation_id="c", received_at_ms=int(time.time() * 1000),
                            deduplication_id="one-delivery")
        first_id = queue.send(event)
        assert stack.wait_until_drained(timeout=30, settle=0.5)
        records = stack.poller.stats.records if stack.poller else 0
        # When the same deduplication id is sent again within the window
        again_id = queue.send(event)
        # Then SQS's answer names the first message, and nothing more reaches the sync
        assert again_id == first_id and stack.dedupe_window.dropped == 1
        assert stack.wait_until_drained(timeout=30, settle=1.0)
        assert stack.poller is not None and stack.poller.stats.records == records
