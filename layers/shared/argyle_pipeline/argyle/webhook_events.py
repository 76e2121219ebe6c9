"""Argyle's webhook payloads (`{"event", "name", "data"}`), one model per documented event.

The typed models describe the `data` object (they also accept the whole envelope and unwrap it).
Dates become aware UTC datetimes; the exact strings Argyle sent stay available through
`original(field)`, and `iso_z()` renders a datetime back for the activities filters.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from argyle_pipeline.argyle.activity import parse_json
from argyle_pipeline.argyle.api_versions import V1, V2, ApiVersion
from argyle_pipeline.timestamps import UtcDateTime, iso_z

__all__ = [
    "ACCOUNT_STATUS_EVENT",
    "EVENT_MODELS",
    "SYNC_EVENTS",
    "AccountEvent",
    "AccountsConnected",
    "AccountsFailed",
    "AccountsRemoved",
    "AccountsUpdated",
    "ActivitiesAdded",
    "ActivitiesFullySynced",
    "ActivitiesPartiallySynced",
    "ActivitiesRemoved",
    "ActivitiesUpdated",
    "EventData",
    "MalformedWebhook",
    "UserResource",
    "UsersFullySynced",
    "WebhookEnvelope",
    "iso_z",
    "parse_webhook",
    "sync_events",
]


class MalformedWebhook(ValueError):
    """The body is not a webhook this module can read (not JSON, no event, or bad data)."""


class WebhookEnvelope(BaseModel):
    model_config = ConfigDict(extra="allow")

    event: str
    name: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class EventData(BaseModel):
    """Common base: keeps unknown fields, the source mapping, and the envelope's name."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    _source: dict[str, Any] | None = PrivateAttr(default=None)
    _webhook_name: str | None = PrivateAttr(default=None)

    @model_validator(mode="wrap")
    @classmethod
    def _unwrap_and_keep_source(cls, value: Any, handler: Any) -> Any:
        name = None
        is_envelope = isinstance(value, dict) and isinstance(value.get("data"), dict)
        if is_envelope and isinstance(value.get("event"), str):
            name = value.get("name") if isinstance(value.get("name"), str) else None
            value = value["data"]
        model = handler(value)
        if isinstance(value, dict):
            model._source = value
            model._webhook_name = name
        return model

    def original(self, field: str) -> Any:
        """The value exactly as Argyle sent it (e.g. "2019-03-07T20:12:09Z"), or None."""
        return (self._source or {}).get(field)

    @property
    def webhook_name(self) -> str | None:
        """The subscription's name from the envelope, when the envelope was parsed."""
        return self._webhook_name


def _count_text(value: Any) -> Any:
    # Some copies of Argyle's docs give the counts as strings ("12"); an empty one is no count.
    if isinstance(value, str):
        text = value.strip()
        return text or None
    return value


# A count as Argyle sends it: an integer, or an integer's digits as a string.
Count = Annotated[int | None, BeforeValidator(_count_text)]


class _Available(EventData):
    account: str
    user: str | None = None
    # Null when available_count is 0 (seen in the wild).
    available_from: UtcDateTime | None = None
    available_to: UtcDateTime | None = None
    available_count: Count = None


class ActivitiesFullySynced(_Available):
    pass


class ActivitiesPartiallySynced(_Available):
    days_synced: Count = None


class ActivitiesAdded(_Available):
    added_from: UtcDateTime | None = None
    added_to: UtcDateTime | None = None
    added_count: Count = None


class ActivitiesUpdated(_Available):
    updated_from: UtcDateTime | None = None
    updated_to: UtcDateTime | None = None
    updated_count: Count = None
    # v2's gigs.updated calls the list updated_gigs.
    updated_activities: list[str] = Field(
        default_factory=list, validation_alias=AliasChoices(V1.updated_ids_field, V2.updated_ids_field)
    )


class ActivitiesRemoved(_Available):
    removed_from: UtcDateTime | None = None
    removed_to: UtcDateTime | None = None
    removed_count: Count = None
    # v2's gigs.removed calls the list removed_gigs.
    removed_activities: list[str] = Field(
        default_factory=list, validation_alias=AliasChoices(V1.removed_ids_field, V2.removed_ids_field)
    )


class AccountEvent(EventData):
    """accounts.removed / .connected / .failed: `{account, user}`."""

    account: str = Field(min_length=1)
    user: str | None = None


class AccountsRemoved(AccountEvent):
    """The worker revoked access (or the account was deleted): Argyle deletes the account's data and
    sends no activities.removed. The only signal that the account's data must leave our tables."""


class AccountsConnected(AccountEvent):
    pass


class AccountsFailed(AccountEvent):
    pass


class AccountConnection(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: str | None = None
    error_code: str | None = None


class AccountResource(BaseModel):
    """What the sync reads of the account object (`include_resource`): the rest is not validated."""

    model_config = ConfigDict(extra="allow")

    connection: AccountConnection | None = None
    # Kept as the string Argyle sent: recorded, never computed with.
    scanned_at: str | None = None


class AccountsUpdated(AccountEvent):
    resource: AccountResource | None = None

    @model_validator(mode="before")
    @classmethod
    def _lenient_resource(cls, value: Any) -> Any:
        # A resource whose shape we do not read must not fail the event: keep what fits.
        if isinstance(value, dict) and "resource" in value and not isinstance(value["resource"], dict | None):
            value = {k: v for k, v in value.items() if k != "resource"}
        if isinstance(value, dict) and isinstance(value.get("resource"), dict):
            resource = dict(value["resource"])
            if not isinstance(resource.get("connection"), dict | None):
                resource.pop("connection")
            if not isinstance(resource.get("scanned_at"), str | None):
                resource.pop("scanned_at")
            value = {**value, "resource": resource}
        return value


class UserResource(BaseModel):
    """v1 lists `data_providers_connected`; v2 `accounts_connected`, `items_connected` and
    `external_id` (may be null). The stored resource is the one Argyle sent, not this view."""

    model_config = ConfigDict(extra="allow")

    id: str | None = None
    data_providers_connected: list[str] = Field(default_factory=list)
    accounts_connected: list[str] = Field(default_factory=list)
    items_connected: list[str] = Field(default_factory=list)
    external_id: str | None = None
    employers_connected: list[str] = Field(default_factory=list)
    external_metadata: dict[str, Any] | None = None
    created_at: UtcDateTime | None = None


class UsersFullySynced(EventData):
    user: str
    resource: UserResource | None = None


_DATA_MODELS: dict[str, type[EventData]] = {
    "fully_synced": ActivitiesFullySynced,
    "partially_synced": ActivitiesPartiallySynced,
    "added": ActivitiesAdded,
    "updated": ActivitiesUpdated,
    "removed": ActivitiesRemoved,
}
# gigs.X reads as activities.X: the same model (and, in the sync, the same rule).
EVENT_MODELS: dict[str, type[EventData]] = {
    **{api.event(kind): model for api in (V1, V2) for kind, model in _DATA_MODELS.items()},
    "users.fully_synced": UsersFullySynced,
    "accounts.removed": AccountsRemoved,
    "accounts.connected": AccountsConnected,
    "accounts.failed": AccountsFailed,
    "accounts.updated": AccountsUpdated,
}

# The events the stack subscribes to in one subscription (`argyle-webhooks subscribe-stack`);
# accounts.updated has a subscription of its own, since Argyle allows `include_resource` only there.
ACCOUNT_STATUS_EVENT = "accounts.updated"
_OTHER_SYNC_EVENTS: tuple[str, ...] = tuple(
    e for e in EVENT_MODELS if e != ACCOUNT_STATUS_EVENT and e not in V1.data_events + V2.data_events)


def sync_events(api: ApiVersion = V1) -> tuple[str, ...]:
    """What a stack on `api` subscribes to in its main subscription: the version's data-set events,
    users.fully_synced and the account events other than accounts.updated."""
    return api.data_events + _OTHER_SYNC_EVENTS


SYNC_EVENTS: tuple[str, ...] = sync_events(V1)


def parse_webhook(body: bytes | str) -> tuple[str, EventData | None]:
    """(event name, typed data) for a webhook body; the model is None for events not modelled
    here (accounts.*, anything new). Raises MalformedWebhook (a ValueError)."""
    try:
        doc = parse_json(body)
    except (ValueError, RecursionError) as exc:
        raise MalformedWebhook("body is not JSON") from exc
    if not isinstance(doc, dict):
        raise MalformedWebhook("body is not a JSON object")
    try:
        envelope = WebhookEnvelope.model_validate(doc)
    except ValidationError as exc:
        # `from None`: pydantic's message quotes the input (personal data), and a chained cause is
        # printed with the traceback wherever the error is logged.
        raise MalformedWebhook(f"not a webhook envelope: {exc.error_count()} error(s)") from None
    model_type = EVENT_MODELS.get(envelope.event)
    if model_type is None:
        return envelope.event, None
    try:
        model = model_type.model_validate(envelope.data)
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in err["loc"]) for err in exc.errors()})
        raise MalformedWebhook(f"{envelope.event} data is invalid: {', '.join(fields)}") from None
    model._webhook_name = envelope.name
    return envelope.event, model
