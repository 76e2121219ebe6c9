"""A local Argyle-compatible server (v1 activities and webhooks) with scenarios and faults.

Not part of the Lambda layer: tests, the local stack and demos run it on loopback.
See docs/argyle-api.md for how to use it.
"""
