"""The sandbox's HTTP routes: Argyle's API of the sandbox's version (v1: /v1/activities; v2:
/v2/gigs; accounts and webhooks under the same prefix) and a /_sandbox control plane.

Errors follow Django REST framework, which Argyle's v1 API answers with (see api_errors.py);
lists page as pagination.py says. Every /v1 route needs HTTP Basic auth; the /_sandbox control
plane (scenarios, faults, settings, truth) needs none: it listens on loopback.
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

from pydantic import ValidationError

from argyle_pipeline.argyle.api_versions import V1, ApiVersion
from argyle_pipeline.timestamps import parse_timestamp
from argyle_sandbox.api_errors import ApiError, field_error
from argyle_sandbox.pagination import decode_cursor, encode_cursor, offset_links, parse_limit, parse_offset
from argyle_sandbox.scenario import check_error_code
from argyle_sandbox.state import StartRange, subscription_config
from argyle_sandbox.synthetic import render_object

if TYPE_CHECKING:
    from argyle_sandbox.server import SandboxServer


# --- filters --------------------------------------------------------------------------------------


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


def start_range(query: dict[str, str], api: ApiVersion = V1) -> StartRange:
    first = _instant(query, api.from_filter, end_of_day=False)
    last = _instant(query, api.to_filter, end_of_day=True)
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
            if segments and segments[0] == self.sandbox.api.name:
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
        if status == 429 and faults.rate_limit_per_second > 0:
            raise ApiError(429, {"detail": "Request was throttled."},
                           {"Retry-After": faults.rate_limit_retry_after()})
        if status == 429:
            headers = {"Retry-After": str(faults.retry_after)} if faults.retry_after is not None else {}
            raise ApiError(429, {"detail": "Request was throttled."}, headers)
        if status is not None:
            raise ApiError(status, {"detail": "A server error occurred."})

    def _route(self, method: str, segments: list[str]) -> Route:
        shape = tuple(segments[:2]) + (("{id}",) if len(segments) == 3 else ())
        version, objects = self.sandbox.api.name, self.sandbox.api.objects
        routes: dict[tuple[str, tuple[str, ...]], Route] = {
            ("GET", (version, objects)): SandboxHandler.list_activities,
            ("GET", (version, objects, "{id}")): SandboxHandler.get_activity,
            ("GET", (version, "accounts", "{id}")): SandboxHandler.get_account,
            ("GET", (version, "webhooks")): SandboxHandler.list_webhooks,
            ("POST", (version, "webhooks")): SandboxHandler.create_webhook,
            ("GET", (version, "webhooks", "{id}")): SandboxHandler.get_webhook,
            ("DELETE", (version, "webhooks", "{id}")): SandboxHandler.delete_webhook,
            ("GET", ("_sandbox", "truth")): SandboxHandler.control_truth,
            ("GET", ("_sandbox", "faults")): SandboxHandler.control_faults,
            ("POST", ("_sandbox", "faults")): SandboxHandler.control_faults,
            ("PATCH", ("_sandbox", "faults")): SandboxHandler.control_faults,
            ("POST", ("_sandbox", "connect")): SandboxHandler.control_connect,
            ("POST", ("_sandbox", "scan")): SandboxHandler.control_scan,
            ("POST", ("_sandbox", "wait")): SandboxHandler.control_wait,
            ("GET", ("_sandbox", "deliveries")): SandboxHandler.control_deliveries,
            ("GET", ("_sandbox", "accounts")): SandboxHandler.control_accounts,
            ("GET", ("_sandbox", "settings")): SandboxHandler.control_settings,
            ("POST", ("_sandbox", "settings")): SandboxHandler.control_settings,
            ("PATCH", ("_sandbox", "settings")): SandboxHandler.control_settings,
            ("GET", ("_sandbox", "page_shifts")): SandboxHandler.control_page_shifts,
            ("POST", ("_sandbox", "lying_removal")): SandboxHandler.control_lying_removal,
            ("POST", ("_sandbox", "revoke")): SandboxHandler.control_revoke,
            ("POST", ("_sandbox", "account_error")): SandboxHandler.control_account_error,
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

    # --- /v1/activities, /v2/gigs --------------------------------------------------------------

    def list_activities(self, segments: list[str], query: dict[str, str]) -> tuple[int, Any]:
        # Every parameter is checked before anything (a fault's scan included) happens.
        sandbox = self.sandbox
        api = sandbox.api
        path = f"/{api.name}{api.list_path}"
        limit = parse_limit(query)
        after, carried = decode_cursor(query["cursor"]) if query.get("cursor") else (None, None)
        filter_names = ("account", api.from_filter, api.to_filter)
        if carried is not None:
            # v2: the cursor's own filters; a request that names others does not continue this listing.
            if any(query.get(name) and query[name] != carried.get(name) for name in filter_names):
                raise field_error("cursor", "The cursor belongs to a listing with other filters.")
            query = {**query, **carried}
        window = start_range(query, api)
        account = query.get("account") or None
        if sandbox.settings.pagination == "keyset":
            if account is not None and after is not None:
                sandbox.scenario.scan_before_page(account, window, after=after)
            page = sandbox.state.page(account, window, after, limit)
            next_link = None
            if page.next_after is not None:
                if api.pagination == "keyset":  # the version's own keyset: the cursor carries the filters
                    filters = {name: query[name] for name in filter_names if query.get(name)}
                    params = {"limit": str(limit), "cursor": encode_cursor(page.next_after, filters)}
                else:
                    params = {k: v for k, v in query.items() if k != "cursor"}
                    params["limit"] = str(limit)
                    params["cursor"] = encode_cursor(page.next_after)
                next_link = self._url(path, params)
            previous_link = None
        else:
            offset = parse_offset(query)
            if account is not None and offset > 0:
                sandbox.scenario.scan_before_page(account, window, offset=offset)
            page = sandbox.state.offset_page(account, window, offset, limit)
            next_query, previous_query = offset_links(query, offset, limit, page.count)
            next_link = None if next_query is None else self._url(path, next_query)
            previous_link = None if previous_query is None else self._url(path, previous_query)
        results = [render_object(acc, rec, api) for acc, rec in page.items]
        body: dict[str, Any] = {"next": next_link, "previous": previous_link, "results": results}
        if api.list_counts:  # v2 documents no count
            body = {"count": page.count, **body}
        return 200, body

    def get_activity(self, segments: list[str], query: dict[str, str]) -> tuple[int, Any]:
        found = self.sandbox.state.find(segments[2])
        if found is None:
            raise ApiError(404, {"detail": "Not found."})
        return 200, render_object(*found, self.sandbox.api)

    # --- /v1/accounts ---------------------------------------------------------------------------

    def get_account(self, segments: list[str], query: dict[str, str]) -> tuple[int, Any]:
        try:
            return 200, self.sandbox.account(segments[2])
        except KeyError:  # unknown, or deleted by a revoke
            raise ApiError(404, {"detail": "Not found."}) from None

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
        if "events" not in errors and "config" not in errors:
            try:
                config = subscription_config(list(events or []), config, self.sandbox.settings.include_resource_rule)
            except ValueError as exc:
                errors["config"] = [str(exc)]
        if errors:
            raise ApiError(400, errors)
        sub = self.sandbox.state.add_subscription(
            name=doc["name"], events=list(events or []), url=str(url), secret=secret or None, config=config
        )
        return 201, sub.to_json()

    def list_webhooks(self, segments: list[str], query: dict[str, str]) -> tuple[int, Any]:
        limit = parse_limit(query)
        ordering = query.get("ordering") or "created_at"
        if ordering.lstrip("-") not in ("id", "created_at"):
            raise field_error("ordering", f"Select a valid choice. {ordering} is not one of the available choices.")
        first = _instant(query, "from_created_at_date", end_of_day=False)
        last = _instant(query, "to_created_at_date", end_of_day=True)
        offset = parse_offset(query)
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
        next_query, previous_query = offset_links(query, offset, limit, len(subs))
        return 200, {
            "count": len(subs),
            "next": None if next_query is None else self._url(f"/{self.sandbox.api.name}/webhooks", next_query),
            "previous": None if previous_query is None else self._url(f"/{self.sandbox.api.name}/webhooks",
                                                                       previous_query),
            "results": results,
        }

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
            if not isinstance(doc, dict):
                raise ApiError(400, {"non_field_errors": ["Invalid data. Expected a dictionary."]})
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
                fail_with=doc.get("fail_with"),
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
        wanted = query.get("status") or None
        if wanted not in (None, "pending", "delivered", "gave_up", "dropped"):
            raise field_error("status", f"Select a valid choice. {wanted} is not one of the available choices.")
        return 200, [
            {
                "event": d.event,
                "url": d.url,
                "subscription": d.subscription_id,
                "status": d.status,
                "attempts": d.attempts,
                "outcomes": d.outcomes,
                "delivered": d.delivered,
                "gave_up": d.gave_up,
                "dropped": d.dropped,
                "body": d.body.decode("utf-8"),
            }
            for d in self.sandbox.deliveries
            if wanted is None or d.status == wanted
        ]

    def control_accounts(self, segments: list[str], query: dict[str, str]) -> tuple[int, Any]:
        state = self.sandbox.state
        with state.lock:
            return 200, [
                {"account": a.id, "user": a.user, "employer": a.employer, "activities": len(a.records)}
                for a in state.accounts.values()
            ]

    def control_settings(self, segments: list[str], query: dict[str, str]) -> tuple[int, Any]:
        sandbox = self.sandbox
        if self.command != "GET":
            doc = self._doc()
            if not isinstance(doc, dict):
                raise ApiError(400, {"non_field_errors": ["Invalid data. Expected a dictionary."]})
            try:
                sandbox.settings = sandbox.settings.updated(doc)
            except ValidationError as exc:
                raise ApiError(400, _setting_errors(exc)) from None
        return 200, sandbox.settings.model_dump()

    def control_page_shifts(self, segments: list[str], query: dict[str, str]) -> tuple[int, Any]:
        return 200, [shift.to_json() for shift in self.sandbox.page_shifts]

    def control_lying_removal(self, segments: list[str], query: dict[str, str]) -> tuple[int, Any]:
        doc = self._doc()
        if not isinstance(doc, dict) or not isinstance(doc.get("account"), str):
            raise field_error("account", "This field is required.")
        n, ids = doc.get("n", 10), doc.get("ids")
        if not isinstance(n, int) or isinstance(n, bool):
            raise field_error("n", "A valid integer is required.")
        if ids is not None and not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
            raise field_error("ids", "Expected a list of activity ids.")
        try:
            named = self.sandbox.lying_removal(doc["account"], n, ids=ids)
        except KeyError as exc:
            raise ApiError(404, {"detail": str(exc)}) from None
        except ValueError as exc:
            raise ApiError(400, {"detail": str(exc)}) from None
        return 200, {"account": doc["account"], "removed_activities": named}

    def _account_field(self) -> tuple[dict[str, Any], str]:
        doc = self._doc()
        if not isinstance(doc, dict) or not isinstance(doc.get("account"), str) or not doc["account"]:
            raise field_error("account", "This field is required.")
        return doc, doc["account"]

    def control_revoke(self, segments: list[str], query: dict[str, str]) -> tuple[int, Any]:
        _, account = self._account_field()
        try:
            revoked = self.sandbox.revoke(account)
        except KeyError as exc:
            raise ApiError(404, {"detail": exc.args[0]}) from None
        return 200, {
            "account": revoked.account,
            "user": revoked.user,
            "activities_removed": revoked.activities_removed,
        }

    def control_account_error(self, segments: list[str], query: dict[str, str]) -> tuple[int, Any]:
        doc, account = self._account_field()
        try:
            error_code = check_error_code(doc.get("error_code"))
        except ValueError as exc:
            raise field_error("error_code", str(exc)) from None
        try:
            return 200, self.sandbox.account_error(account, error_code)
        except KeyError as exc:
            raise ApiError(404, {"detail": exc.args[0]}) from None


def _setting_errors(exc: ValidationError) -> dict[str, list[str]]:
    """pydantic's errors as DRF's field errors: {"pagination": ["Input should be 'offset' or 'keyset'"]}."""
    errors: dict[str, list[str]] = {}
    for error in exc.errors():
        name = ".".join(str(part) for part in error["loc"]) or "non_field_errors"
        errors.setdefault(name, []).append(error["msg"])
    return errors
