"""The critical files: the receiver's path, the store's conditional and batch writes, every sync rule.

Duplicate events are recognised in two places, both here: the queue's deduplication ids and
dedupe keys (`event_queue.py`) and the sync's "a run that began after this copy covers it"
(`dispatch.py`'s `run_unless_covered`, over Powertools' idempotency records). The sync state's
conditional writes (an account's status, the purge gate) are in `sync_state_store.py`.
"""

LAYER = "layers/shared/argyle_pipeline"

CRITICAL_FILES = (
    f"{LAYER}/receiving/signature.py",
    f"{LAYER}/receiving/webhook_intake.py",
    f"{LAYER}/aws/event_queue.py",
    f"{LAYER}/aws/activity_store.py",
    f"{LAYER}/aws/sync_state_store.py",
    f"{LAYER}/sync/dispatch.py",
    f"{LAYER}/sync/listing.py",
    f"{LAYER}/sync/listing_windows.py",
    f"{LAYER}/sync/page_prefetch.py",
    f"{LAYER}/sync/changes.py",
    f"{LAYER}/sync/reconcile.py",
    f"{LAYER}/sync/purge.py",
    f"{LAYER}/argyle/request_budget.py",
)
