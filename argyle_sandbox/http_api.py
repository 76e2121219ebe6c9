"""The sandbox's HTTP routes: Argyle's v1 API (activities, webhooks) and a /_sandbox control plane.

Errors follow Django REST framework, which Argyle's v1 API answers with: `{"detail": "..."}` for
auth and 404, `{"field": ["message"]}` for validation. Every /v1 route needs HTTP Basic auth;
the /_sandbox control plane (scenarios, faults, truth) needs none: it listens on loopback.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

from argyle_pipeline.timestamps import parse_timestamp
from argyle_sandbox.state import SortKey, StartRange
from argyle_sandbox.synthetic import render

if TYPE_CHECKING:
    from argyle_sandbox.server import SandboxServer

DEFAULT_LIMIT = 10
MAX_LIMIT = 200


class ApiError(Exception):
    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


def field_error(name: str, message: str) -> ApiError:
    return ApiError(400, {name: [message]})


# --- cursors and filters --------------------------------------------------------------------------


def encode_cursor(key: SortKey) -> str:
    return base64.urlsafe_b64encode(json.dumps([key[0], key[1]]).encode()).decode().rstrip("=")


def decode_cursor(text: str) -> SortKey:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        value = json.loads(raw)
        if isinstance(value, list) and len(value) == 2 and isinstance(value[0], int) and isinstance(value[1], str):
            return value[0], value[1]
    except (binascii.Error, ValueError):
        pass
    raise field_error("cursor", "Invalid cursor.")


def _limit(query: dict[str, str]) -> int:
    text = query.get("limit")
    if text is None or text == "":
        return DEFAULT_LIMIT
    try:
        limit = int(text)
    except ValueError:
        raise field_error("limit", "A valid integer is required.") from None
    if limit < 1:
        raise field_error("limit", "Ensure this value is greater than or equal to 1.")
    if limit > MAX_LIMIT:
        raise field_error("limit", f"Ensure this value is less than or equal to {MAX_LIMIT}.")
    return limit


def _instant(query: dict[str, str], name: str, end_of_day: bool) -> float | None:
    text = query.get(name)
    if not text:
        return None
    try:
        value = parse_timestamp(text).timestamp()
    except ValueError:
        raise field_error(name, "Enter a valid date/time.") from None
    # A bare date as the upper bound means the whole of that day (inclusive).
    if end_of_day and len(text.strip()) == 10:
        value += 86_400 - 1
    return value


def start_range(query: dict[str, str]) -> StartRange:
    first = _instant(query, "from_start_date", end_of_day=False)
    last = _instant(query, "to_start_date", end_of_day=True)
    # Starts are whole seconds: round the bounds inward.
    first_s = None if first is None else int(-(-first // 1))
    last_s = None if last is None else int(last // 1)
    return StartRange(first_s, last_s)


# --- the handler ----------------------------------------------------------------------------------


class SandboxHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], sandbox: SandboxServer) -> None:
        super().__init__(address, SandboxHandler)
        self.sandbox = sandbox


Route = Callable[["SandboxHandler", list[str], dict[str, str]], tuple[int, Any]]


class SandboxHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse their connections
    server: SandboxHTTPServer
    server_version = "ArgyleSandbox/1.0"

    # --- plumbing -------------------------------------------------------------------------------

    @property
    def sandbox(self) -> SandboxServer:
        return self.server.sandbox

    def log_message(self, format: str, *args: Any) -> None:
        if self.sandbox.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _doc(self) -> Any:
        """The request's JSON body ({} when empty); 400 when it is not JSON."""
        if not self._pending_body:
            return {}
        try:
            return json.loads(self._pending_body)
        except ValueError:
            raise ApiError(400, {"detail": "JSON parse error."}) from None

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = b"" if status == 204 or body is None else json.dumps(body).encode("utf-8")
        self.send_response(status)
        if data:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if data:
            self.wfile.write(data)

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization") or ""
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        sandbox = self.sandbox
        return hmac.compare_digest(user, sandbox.api_key_id) & hmac.compare_digest(password, sandbox.api_key_secret)

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        segments = [s for s in parts.path.split("/") if s]
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        try:
            # Read the body first: an answer sent before it is read would break keep-alive.
            self._pending_body = self._body() if method in ("POST", "PATCH") else b""
            # Argyle's routes need Basic auth; the loopback control plane does not (curl-friendly).
            if segments[:1] != ["_sandbox"] and not self._authorized():
                raise ApiError(401, {"detail": "Invalid username/password."}, {"WWW-Authenticate": 'Basic realm="api"'})
            route = self._route(method, segments)
            if segments and segments[0] == "v1":
                self._apply_faults()
            status, body = route(self, segments, query)
        except ApiError as exc:
            self._send(exc.status, exc.body, exc.headers)
            return
        except Exception as exc:  # a sandbox bug must still answer, and say what it was
            self._send(500, {"detail": f"sandbox error: {type(exc).__name__}: {exc}"})
            return
        self._send(status, body)

    def _apply_faults(self) -> None:
        faults = self.sandbox.faults
        if faults.delay_seconds > 0:
            time.sleep(faults.delay_seconds)
        status = faults.decide()
        if status == 429:
            headers = {"Retry-After": str(faults.retry_after)} if faults.retry_after is not None else {}
            raise ApiError(429, {"detail": "Request was throttled."}, headers)
        if status is not None:
            raise ApiError(status, {"detail": "A server error occurred."})

    def _route(self, method: str, segments: list[str]) -> Route:
        shape = tuple(segments[:2]) + (("{id}",) if len(segments) == 3 else ())
        routes: dict[tuple[str, tuple[str, ...]], Route] = {
            ("GET", ("v1", "activities")): SandboxHandler.list_activities,
            ("GET", ("v1", "activities", "{id}")): SandboxHandler.get_activity,
            ("GET", ("v1", "webhooks")): SandboxHandler.list_webhooks,
            ("POST", ("v1", "webhooks")): SandboxHandler.create_webhook,
            ("GET", ("v1", "webhooks", "{id}")): SandboxHandler.get_webhook,
            ("DELETE", ("v1", "webhooks", "{id}")): SandboxHandler.delete_webhook,
            ("GET", ("_sandbox", "truth")): SandboxHandler.control_truth,
            ("GET", ("_sandbox", "faults")): SandboxHandler.control_faults,
            ("POST", ("_sandbox", "faults")): SandboxHandler.control_faults,
            ("PATCH", ("_sandbox", "faults")): SandboxHandler.control_faults,
            ("POST", ("_sandbox", "connect")): SandboxHandler.control_connect,
            ("POST", ("_sandbox", "scan")): SandboxHandler.control_scan,
            ("POST", ("_sandbox", "wait")): SandboxHandler.control_wait,
            ("GET", ("_sandbox", "deliveries")): SandboxHandler.control_deliveries,
            ("GET", ("_sandbox", "accounts")): SandboxHandler.control_accounts,
        }
        route = routes.get((method, shape))
        if route is None:
            if any(shape == s for (_, s) in routes):
                raise ApiError(405, {"detail": f'Method "{method}" not allowed.'})
            raise ApiError(404, {"detail": "Not found."})
        return route

    def _url(self, path: str, query: dict[str, str]) -> str:
        origin = self.sandbox.faults.foreign_next_host or f"http://{self.headers.get('Host') or self.sandbox.host}"
        return f"{origin.rstrip('/')}{path}?{urlencode(query)}"

    # --- /v1/activities -------------------------------------------------------------------------

    def list_activities(self, segments: list[str], query: dict[str, str]) -> tuple[int, Any]:
        limit = _limit(query)
        window = start_range(query)
        after = decode_cursor(query["cursor"]) if query.get("cursor") else None
        account = query.get("account") or None
        page = self.sandbox.state.page(account, window, after, limit)
        results = [render(acc, rec) for acc, rec in page.items]
        next_link = None
        if page.next_after is not None:
            params = {k: v for k, v in query.items() if k != "cursor"}
            params["limit"] = str(limit)
            params["cursor"] = encode_cursor(page.next_after)
            next_link = self._url("/v1/activities", params)
        return 200, {"count": page.count, "next": next_link, "previous": None, "results": results}

    def get_activity(self, segments: list[str], query: dict[str, str]) -> tuple[int, Any]:
        found = self.sandbox.state.find(segments[2])
        if found is None:
            raise ApiError(404, {"detail": "Not found."})
        return 200, render(*found)

    # --- /v1/webhooks ---------------------------------------------------------------------------

    def create_webhook(self, segments: list[str], query: dict[str, str]) -> tuple[int, Any]:
        doc = self._doc()
        if not isinstance(doc, dict):
            raise ApiError(400, {"non_field_errors": ["Invalid data. Expected a dictionary."]})
        errors: dict[str, list[str]] = {}
        events = doc.get("events")
        if isinstance(events, str):  # the overview page writes "events": "*"
            events = [events]
        for name in ("events", "name", "url"):
            if doc.get(name) in (None, "", []):
                errors[name] = ["This field is required."]
        if "events" not in errors and not (isinstance(events, list) and all(isinstance(e, str) and e for e in events)):
            errors["events"] = ["Expected a list of event names."]
        if "name" not in errors and not isinstance(doc.get("name"), str):
            errors["name"] = ["Not a valid string."]
        url = doc.get("url")
        if "url" not in errors and not (
            isinstance(url, str) and urlsplit(url).scheme in ("http", "https") and urlsplit(url).netloc
        ):
            errors["url"] = ["Enter a valid URL."]
        secret = doc.get("secret")
        if secret is not None and not isinstance(secret, str):
            errors["secret"] = ["Not a valid string."]
        config = doc.get("config")
        if config is not None and not isinstance(config, dict):
            errors["config"] = ["Expected a dictionary."]
        elif (
            config
            and "days_synced" in config
            and not (isinstance(config["days_synced"], int) and config["days_synced"] > 0)
        ):
            errors["config"] = ["days_synced must be a positive integer."]
        if errors:
            raise ApiError(400, errors)
        sub = self.sandbox.state.add_subscription(
            name=doc["name"], events=list(events or []), url=str(url), secret=secret or None, config=config
        )
        return 201, sub.to_json()

    def list_webhooks(self, segments: list[str], query: dict[str, str]) -> tuple[int, Any]:
        limit = _limit(query)
        ordering = query.get("ordering") or "created_at"
        if ordering.lstrip("-") not in ("id", "created_at"):
            raise field_error("ordering", f"Select a valid choice. {ordering} is not one of the available choices.")
        first = _instant(query, "from_created_at_date", end_of_day=False)
        last = _instant(query, "to_created_at_date", end_of_day=True)
        try:
            offset = int(query.get("offset") or 0)
        except ValueError:
            raise field_error("offset", "A valid integer is required.") from None
        with self.sandbox.state.lock:
            subs = list(self.sandbox.state.subscriptions.values())
        subs = [
            s
            for s in subs
            if (first is None or s.created_us / 1e6 >= first) and (last is None or s.created_us / 1e6 <= last)
        ]
        field = ordering.lstrip("-")
        subs.sort(
            key=(lambda s: s.id) if field == "id" else (lambda s: (s.created_us, s.id)),
            reverse=ordering.startswith("-"),
        )
        window = subs[offset : offset + limit]
        results = [s.to_json() for s in window]
        if self.sandbox.faults.bare_webhook_list:
            return 200, results
        next_link = None
        if offset + limit < len(subs):
            params = dict(query, limit=str(limit), offset=str(offset + limit))
            next_link = self._url("/v1/webhooks", params)
        return 200, {"count": len(subs), "next": next_link, "previous": None, "results": results}

    def get_webhook(self, segments: list[str], query: dict[str, str]) -> tuple[int, Any]:
        sub = self.sandbox.state.subscriptions.get(segments[2])
        if sub is None:
            raise ApiError(404, {"detail": "Not found."})
        return 200, sub.to_json()

    def delete_webhook(self, segments: list[str], query: dict[str, str]) -> tuple[int, Any]:
        if not self.sandbox.state.remove_subscription(segments[2]):
            raise ApiError(404, {"detail": "Not found."})
        return 204, None

    # --- /_sandbox (control plane for demos and other processes) --------------------------------

    def control_truth(self, segments: list[str], query: dict[str, str]) -> tuple[int, Any]:
        account = query.get("account")
        if not account:
            raise field_error("account", "This field is required.")
        if account not in self.sandbox.state.accounts:
            raise ApiError(404, {"detail": "Not found."})
        return 200, self.sandbox.state.documents(account)

    def control_faults(self, segments: list[str], query: dict[str, str]) -> tuple[int, Any]:
        if self.command != "GET":
            doc = self._doc()
            if doc.pop("reset", False):
                self.sandbox.faults.reset()
            try:
                self.sandbox.faults.update(doc)
            except ValueError as exc:
                raise ApiError(400, {"detail": str(exc)}) from None
        return 200, self.sandbox.faults.to_json()

    def control_connect(self, segments: list[str], query: dict[str, str]) -> tuple[int, Any]:
        doc = self._doc()
        try:
            user, account = self.sandbox.connect_account(
                user_id=doc.get("user_id"),
                n_activities=int(doc.get("n_activities", 100)),
                years=float(doc.get("years", 3)),
                employer=doc.get("employer"),
                undated=int(doc.get("undated", 0)),
            )
        except (ValueError, TypeError) as exc:
            raise ApiError(400, {"detail": str(exc)}) from None
        return 201, {"user": user, "account": account}

    def control_scan(self, segments: list[str], query: dict[str, str]) -> tuple[int, Any]:
        doc = self._doc()
        try:
            result = self.sandbox.periodic_scan(
                doc["account"],
                add=int(doc.get("add", 0)),
                update=int(doc.get("update", 0)),
                remove=int(doc.get("remove", 0)),
            )
        except KeyError as exc:
            raise ApiError(404, {"detail": str(exc)}) from None
        except (ValueError, TypeError) as exc:
            raise ApiError(400, {"detail": str(exc)}) from None
        return 200, {
            "account": result.account,
            "added": result.added,
            "updated": result.updated,
            "removed": result.removed,
        }

    def control_wait(self, segments: list[str], query: dict[str, str]) -> tuple[int, Any]:
        doc = self._doc()
        try:
            self.sandbox.wait_for_deliveries(float(doc.get("timeout", 30)))
        except TimeoutError as exc:
            raise ApiError(504, {"detail": str(exc)}) from None
        return 200, {"pending": 0}

    def control_deliveries(self, segments: list[str], query: dict[str, str]) -> tuple[int, Any]:
        return 200, [
            {
                "event": d.event,
                "url": d.url,
                "subscription": d.subscription_id,
                "attempts": d.attempts,
                "outcomes": d.outcomes,
                "delivered": d.delivered,
                "gave_up": d.gave_up,
            }
            for d in list(self.sandbox.outbox.log)
        ]

    def control_accounts(self, segments: list[str], query: dict[str, str]) -> tuple[int, Any]:
        state = self.sandbox.state
        with state.lock:
            return 200, [
                {"account": a.id, "user": a.user, "employer": a.employer, "activities": len(a.records)}
                for a in state.accounts.values()
            ]
