"""Command-line tools for operating the stack: subscriptions, what was synced, DLQ redrive."""
