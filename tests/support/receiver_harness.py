"""Helpers for driving the receiver handler the way API Gateway does."""

from __future__ import annotations

import base64
import json
from typing import Any

from local_stack.lambda_runtime import LambdaContext


def apigw_event(body: bytes, headers: dict[str, str] | None = None, *, as_base64: bool = False,
                source_ip: str = "34.27.251.226", request_id: str = "req-1") -> dict[str, Any]:
    return {
        "version": "2.0",
        "routeKey": "POST /webhooks/argyle",
        "headers": headers or {},
        "requestContext": {"requestId": request_id, "http": {"method": "POST", "sourceIp": source_ip}},
        "body": base64.b64encode(body).decode() if as_base64 else body.decode("utf-8"),
        "isBase64Encoded": as_base64,
    }


def invoke_receiver(event: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    import receiver_handler

    response = receiver_handler.lambda_handler(event, LambdaContext("ReceiverFunction", timeout_seconds=10))
    return response["statusCode"], json.loads(response["body"])


def reset_receiver_state() -> None:
    """Forget cached settings, clients and secrets, as a new Lambda container would."""
    from aws_lambda_powertools.utilities import parameters
    from aws_lambda_powertools.utilities.parameters import base

    import receiver_handler
    from argyle_pipeline.receiving.settings import receiver_settings

    receiver_settings.cache_clear()
    receiver_handler.set_queue(None)
    receiver_handler._secret_refresh = type(receiver_handler._secret_refresh)(interval=10.0)
    parameters.clear_caches()
    base.DEFAULT_PROVIDERS.clear()
