"""Argyle's API versions as data: what differs between v1 (activities) and v2 (gigs).

The client, the sync's rules, the store, the sandbox and the CLIs take one of these descriptions
instead of branching on a version name. v2 renames things; it does not change how the sync must
behave: a `gigs.X` event is handled by the rule of `activities.X` (`rule_event`), a gig is stored
as an activity (its `start_datetime` fills the item's `start_date`), and both versions' objects
carry `id`, `account` and `updated_at`. See docs/argyle-api.md, "API versions".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, urlsplit

ApiVersionName = Literal["v1", "v2"]
# The data-set events, by kind; `<objects>.<kind>` in each version.
EVENT_KINDS: tuple[str, ...] = ("fully_synced", "partially_synced", "added", "updated", "removed")
# The events the sync's rules are named after (v1's): every version's events map onto these.
RULE_OBJECTS = "activities"


class UnknownApiVersion(ValueError):
    """An API version (or an API URL of another version) that the stack cannot use."""


@dataclass(frozen=True)
class ApiVersion:
    name: ApiVersionName
    production_url: str
    sandbox_url: str
    # The list path's segment and the events' prefix: "activities" or "gigs".
    objects: str
    # What one object is called in messages ("activity" / "gig").
    object_name: str
    # The list's start filters (inclusive) and the object's start and end fields.
    from_filter: str
    to_filter: str
    start_field: str
    end_field: str
    # The id lists of `<objects>.updated` and `<objects>.removed`.
    updated_ids_field: str
    removed_ids_field: str
    # What `users.fully_synced`'s resource lists the user's connections by, and whether the event
    # is sent again each time another account of the user finishes syncing (v2; v1 says nothing).
    # v2's resource also has `items_connected` and `external_id`; the sync stores it as sent.
    user_connections_field: str
    user_synced_per_account: bool
    # v1's lists are DRF limit/offset pages with a `count`; v2's `next` carries a keyset cursor
    # (stable under change) and documents no `count`.
    pagination: Literal["offset", "keyset"]
    # Whether a list response carries `count`: the reconciler's cheap comparison needs it; without
    # it a reconcile is a full pass (sync/reconcile_schedule.py).
    list_counts: bool

    @property
    def list_path(self) -> str:
        return f"/{self.objects}"

    def object_path(self, object_id: str) -> str:
        return f"/{self.objects}/{quote(object_id, safe='')}"

    @property
    def list_filters(self) -> frozenset[str]:
        """The query parameters the client sets itself (a `next` link may not change them)."""
        return frozenset({"account", self.from_filter, self.to_filter, "limit"})

    def event(self, kind: str) -> str:
        """`activities.added` / `gigs.added` for the kind `added`."""
        return f"{self.objects}.{kind}"

    @property
    def data_events(self) -> tuple[str, ...]:
        return tuple(self.event(kind) for kind in EVENT_KINDS)

    def ids_field(self, kind: str) -> str:
        """The id list of an `updated` or `removed` event."""
        return {"updated": self.updated_ids_field, "removed": self.removed_ids_field}[kind]

    def default_url(self, *, sandbox: bool = False) -> str:
        return self.sandbox_url if sandbox else self.production_url


V1 = ApiVersion(
    name="v1", production_url="https://api.argyle.com/v1", sandbox_url="https://api-sandbox.argyle.com/v1",
    objects="activities", object_name="activity", from_filter="from_start_date", to_filter="to_start_date",
    start_field="start_date", end_field="end_date", updated_ids_field="updated_activities",
    removed_ids_field="removed_activities", user_connections_field="data_providers_connected",
    user_synced_per_account=False,
    pagination="offset", list_counts=True,
)
V2 = ApiVersion(
    name="v2", production_url="https://api.argyle.com/v2", sandbox_url="https://api-sandbox.argyle.com/v2",
    objects="gigs", object_name="gig", from_filter="from_start_datetime", to_filter="to_start_datetime",
    start_field="start_datetime", end_field="end_datetime", updated_ids_field="updated_gigs",
    removed_ids_field="removed_gigs", user_connections_field="accounts_connected", user_synced_per_account=True,
    pagination="keyset", list_counts=False,
)
API_VERSIONS: dict[str, ApiVersion] = {"v1": V1, "v2": V2}
# What a new stack runs (template.yaml's ArgyleApiVersion default); code that is given no version
# (an environment without ARGYLE_API_VERSION: every stack deployed before v2) keeps v1.
DEFAULT_STACK_VERSION = V2
UNSET_VERSION = V1

_RULE_EVENTS = {version.event(kind): V1.event(kind) for version in API_VERSIONS.values() for kind in EVENT_KINDS}


def api_version(name: str | None) -> ApiVersion:
    """The description named `name` ("v1" / "v2"); an empty or absent name is UNSET_VERSION."""
    text = (name or "").strip().lower()
    if not text:
        return UNSET_VERSION
    try:
        return API_VERSIONS[text]
    except KeyError:
        raise UnknownApiVersion(f"unknown Argyle API version {name!r}: use one of {', '.join(API_VERSIONS)}") from None


def api_base_url(version: ApiVersion, url: str | None) -> str:
    """The API's base URL: `url`, or the version's production URL when `url` is empty (the
    template's ArgyleApiUrl default). A URL whose path ends in another version's segment
    (`.../v1` with version v2) is refused: every call would answer 404."""
    text = (url or "").strip().rstrip("/")
    if not text:
        return version.production_url
    named = api_version_of_url(text)
    if named is not None and named is not version:
        raise UnknownApiVersion(
            f"the Argyle API URL {text} is a {named.name} URL, but the API version is {version.name}: "
            f"set both to the same version (ArgyleApiVersion / ARGYLE_API_VERSION)")
    return text


def api_version_of_url(url: str | None) -> ApiVersion | None:
    """The version an API URL names by its last path segment (`.../v2`), or None."""
    last = urlsplit((url or "").strip()).path.rstrip("/").rsplit("/", 1)[-1].lower()
    return API_VERSIONS.get(last)


def rule_event(event: str) -> str:
    """The event whose rule handles `event`: `gigs.added` -> `activities.added`; any other event
    is its own."""
    return _RULE_EVENTS.get(event, event)


def data_event_version(event: str) -> ApiVersion | None:
    """The version a data-set event belongs to (None for accounts.*, users.*, the sync's own)."""
    for version in API_VERSIONS.values():
        if event in version.data_events:
            return version
    return None
