"""The critical files: the receiver's path, the store's conditional and batch writes, every sync rule."""

LAYER = "layers/shared/argyle_pipeline"

CRITICAL_FILES = (
    f"{LAYER}/receiving/signature.py",
    f"{LAYER}/receiving/webhook_intake.py",
    f"{LAYER}/aws/event_queue.py",
    f"{LAYER}/aws/activity_store.py",
    f"{LAYER}/sync/dispatch.py",
    f"{LAYER}/sync/listing.py",
    f"{LAYER}/sync/changes.py",
    f"{LAYER}/sync/reconcile.py",
    f"{LAYER}/sync/purge.py",
)
