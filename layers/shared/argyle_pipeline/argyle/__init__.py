"""Argyle's API as data: the HTTP client, the activity model, the webhook payloads. No AWS here."""
