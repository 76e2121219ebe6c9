"""SandboxServer: the sandbox as one object, for tests, the local stack and `python -m argyle_sandbox`.

with SandboxServer(seed=1, api_key_id="k", api_key_secret="s", pagination="offset") as sb:
    # api_version="v2" serves /v2/gigs (keyset pages), gigs.* webhooks and v2's users.fully_synced
    sb.subscribe("http://127.0.0.1:8080/webhooks/argyle", events=["*"], secret="x")
    user_id, account_id = sb.connect_account(n_activities=1000)
    sb.wait_for_deliveries(10)
    client = ArgyleClient(sb.base_url, ArgyleCredentials("k", "s"), api=sb.api)
"""

from __future__ import annotations

import threading
from datetime import datetime
from types import TracebackType
from typing import Any

from argyle_pipeline.argyle.api_versions import ApiVersion, api_version
from argyle_sandbox.delivery import Delivery, Outbox
from argyle_sandbox.faults import Faults
from argyle_sandbox.http_api import SandboxHTTPServer
from argyle_sandbox.pagination import PaginationMode
from argyle_sandbox.scenario import PageShift, Revocation, ScanResult, Scenario
from argyle_sandbox.settings import SandboxSettings
from argyle_sandbox.state import DEFAULT_NOW, SandboxState, Subscription, subscription_config
from argyle_sandbox.synthetic import iso_seconds


class SandboxServer:
    def __init__(
        self,
        seed: int = 1,
        api_key_id: str = "sandbox-key-id",
        api_key_secret: str = "sandbox-key-secret",  # noqa: S107 - a local test server's default
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        now: datetime = DEFAULT_NOW,
        pagination: PaginationMode | None = None,
        api: ApiVersion | str = "v1",
        delivery_attempts: int = 5,
        delivery_backoff: float = 0.2,
        delivery_timeout: float = 5.0,
        verbose: bool = False,
    ) -> None:
        self.api_key_id = api_key_id
        self.api_key_secret = api_key_secret
        self.host = host
        self._requested_port = port
        self.verbose = verbose
        # The API version it serves: v1 (activities) or v2 (gigs); UnknownApiVersion (a ValueError) otherwise.
        self.api = api if isinstance(api, ApiVersion) else api_version(api)
        self.state = SandboxState(seed=seed, now=now, api=self.api)
        # "offset" (DRF's LimitOffsetPagination, as v1's list shape implies) or "keyset" (v2's);
        # by default the version's own.
        self.settings = SandboxSettings(pagination=pagination or self.api.pagination)
        self.faults = Faults()
        self.outbox = Outbox(max_attempts=delivery_attempts, backoff=delivery_backoff, timeout=delivery_timeout)
        self.scenario = Scenario(self.state, self.outbox, self.faults, self.api)
        self._httpd: SandboxHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> SandboxServer:
        if self._httpd is None:
            self._httpd = SandboxHTTPServer((self.host, self._requested_port), self)
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.1},
                name="argyle-sandbox-http",
                daemon=True,
            )
            self._thread.start()
            self.outbox.start()
        return self

    def stop(self) -> None:
        self.outbox.stop()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def serve_forever(self) -> None:
        """Run in the calling thread until interrupted (the command line's way)."""
        self.start()
        assert self._thread is not None
        try:
            while self._thread.is_alive():
                self._thread.join(timeout=0.5)
        finally:
            self.stop()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the sandbox is not started")
        return int(self._httpd.server_address[1])

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What ArgyleClient and ARGYLE_API_URL take: http://127.0.0.1:PORT/v1 (or /v2)."""
        return f"{self.root_url}/{self.api.name}"

    # --- scenario -------------------------------------------------------------------------------

    def connect_account(
        self,
        user_id: str | None = None,
        n_activities: int = 1000,
        *,
        years: float = 3.0,
        employer: str | None = None,
        undated: int = 0,
        fail_with: str | None = None,
    ) -> tuple[str, str]:
        """A new account (and user, unless `user_id` names one); with `fail_with` (an error code
        such as "invalid_credentials") the connection fails: no data, only `accounts.failed`."""
        return self.scenario.connect_account(
            user_id, n_activities, years=years, employer=employer, undated=undated, fail_with=fail_with
        )

    def periodic_scan(
        self,
        account_id: str,
        add: int = 0,
        update: int = 0,
        remove: int = 0,
        *,
        update_ids: list[str] | None = None,
        remove_ids: list[str] | None = None,
        interval: float = 86_400,
    ) -> ScanResult:
        return self.scenario.periodic_scan(
            account_id, add, update, remove, update_ids=update_ids, remove_ids=remove_ids, interval=interval
        )

    def send_event(self, event: str, data: dict[str, Any]) -> int:
        return self.scenario.send_event(event, data)

    def revoke(self, account_id: str) -> Revocation:
        """The user revokes access: the account and its activities are deleted (GET answers 404,
        listings are empty) and only `accounts.removed` is sent. KeyError when unknown or revoked.
        A revoked id never comes back; connecting the user again makes a new account."""
        return self.scenario.revoke(account_id)

    def account_error(self, account_id: str, error_code: str) -> dict[str, Any]:
        """connection.status "error" with `error_code`, and `accounts.updated`; returns the account object."""
        return self.scenario.account_error(account_id, error_code)

    def account(self, account_id: str) -> dict[str, Any]:
        """The account object as GET /v1/accounts/{id} answers it; KeyError when unknown or revoked."""
        return self.state.account_document(account_id)

    def lying_removal(self, account_id: str, n: int = 10, *, ids: list[str] | None = None) -> list[str]:
        """Deliver a validly signed `activities.removed` naming n live activities (or `ids`) that
        stay live at Argyle; returns their ids."""
        return self.scenario.lying_removal(account_id, n, ids=ids)

    @property
    def page_shifts(self) -> list[PageShift]:
        """What every scan between two page requests (the page_shift_* faults) removed and added."""
        return list(self.scenario.page_shifts)

    def truth(self, account_id: str) -> list[dict[str, Any]]:
        """Every activity of the account as GET /v1/activities/{id} returns it, parsed the way the
        project parses Argyle's JSON (numbers as Decimal), in listing order."""
        import json

        from argyle_pipeline.argyle.activity import parse_json

        return list(parse_json(json.dumps(self.state.documents(account_id))))

    def available_range(self, account_id: str) -> tuple[str | None, str | None]:
        """(oldest, newest) start date of the account, as a fully_synced webhook would give them."""
        oldest, newest = self.state.date_span(self.state.account(account_id))
        return iso_seconds(oldest), iso_seconds(newest)

    # --- webhooks -------------------------------------------------------------------------------

    def subscribe(
        self,
        url: str,
        events: list[str] | None = None,
        secret: str | None = None,
        *,
        name: str = "sandbox subscription",
        config: dict[str, Any] | None = None,
    ) -> Subscription:
        events = list(events or ["*"])
        kept = subscription_config(events, config, self.settings.include_resource_rule)  # ValueError when refused
        return self.state.add_subscription(name=name, events=events, url=url, secret=secret, config=kept)

    def unsubscribe(self, subscription_id: str) -> bool:
        return self.state.remove_subscription(subscription_id)

    @property
    def deliveries(self) -> list[Delivery]:
        """Every delivery in the order it was queued, dropped ones included (see Delivery.status)."""
        return list(self.outbox.log)

    def wait_for_deliveries(self, timeout: float = 30.0) -> None:
        """Block until every queued webhook was delivered or given up; TimeoutError otherwise."""
        self.outbox.wait(timeout)
