"""A real HTTP server in front of the receiver function, doing what API Gateway's HTTP API does:
each request becomes a payload-2.0 event, and the function's answer becomes the HTTP response.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ROUTE_PATH = "/webhooks/argyle"
MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit
TEXT_TYPES = ("application/json", "text/", "application/xml", "application/javascript")

Invoke = Callable[[dict[str, Any]], dict[str, Any]]
Report = Callable[[dict[str, Any], dict[str, Any]], None]


def apigw_v2_event(method: str, path: str, query: str, headers: dict[str, str], body: bytes,
                   source_ip: str, stage: str = "$default") -> dict[str, Any]:
    content_type = headers.get("content-type", "")
    as_text = content_type.startswith(TEXT_TYPES)
    if as_text:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            as_text = False
    now = time.time()
    return {
        "version": "2.0",
        "routeKey": f"{method} {path}",
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012", "apiId": "local", "domainName": headers.get("host", "localhost"),
            "domainPrefix": "local",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": source_ip,
                     "userAgent": headers.get("user-agent", "")},
            "requestId": str(uuid.uuid4()), "routeKey": f"{method} {path}", "stage": stage,
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)), "timeEpoch": int(now * 1000),
        },
        "body": text if as_text else base64.b64encode(body).decode("ascii"),
        "isBase64Encoded": not as_text,
    }


class ReceiverHttpServer:
    """Serves POST /webhooks/argyle on loopback; anything else gets API Gateway's 404."""

    def __init__(self, invoke: Invoke, host: str = "127.0.0.1", port: int = 0,
                 report: Report | None = None) -> None:
        self._invoke = invoke
        self._report = report
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return  # the stack reports one line per event instead

            def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for name, value in (headers or {"content-type": "application/json"}).items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                path, _, query = self.path.partition("?")
                length = int(self.headers.get("content-length") or 0)
                if length > MAX_BODY_BYTES:
                    self._answer(413, b'{"message":"Request Entity Too Large"}')
                    return
                body = self.rfile.read(length) if length else b""
                if path != ROUTE_PATH:
                    self._answer(404, b'{"message":"Not Found"}')
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                event = apigw_v2_event("POST", path, query, headers, body, self.client_address[0])
                try:
                    response = server._invoke(event)
                except Exception as exc:  # a crashed function is API Gateway's 500
                    self._answer(500, b'{"message":"Internal Server Error"}')
                    if server._report:
                        server._report(event, {"statusCode": 500, "body": json.dumps({"error": repr(exc)})})
                    return
                status = int(response.get("statusCode", 200))
                payload = response.get("body") or ""
                raw = base64.b64decode(payload) if response.get("isBase64Encoded") else payload.encode("utf-8")
                self._answer(status, raw, {k.lower(): str(v) for k, v in (response.get("headers") or {}).items()}
                             or None)
                if server._report:
                    server._report(event, response)

            def do_GET(self) -> None:
                self._answer(404, b'{"message":"Not Found"}')

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="receiver-http", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}{ROUTE_PATH}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
