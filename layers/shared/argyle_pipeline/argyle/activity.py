"""Argyle's v1 Activity or v2 gig: a typed view for the few fields the pipeline reasons about, and
the exact document as Argyle sent it (`raw`), which is what storage keeps.

A gig is read as an activity: its start and end (`start_datetime`, `end_datetime`) fill the typed
view's `start_date` / `end_date`; `raw` keeps the gig's own field names, and `api_version` says
which version's object it is.

JSON numbers are parsed as Decimal (`parse_json`): money must never pass through float, and
DynamoDB rejects floats anyway. Unknown fields are kept, as Argyle asks integrations to do.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from argyle_pipeline.argyle.api_versions import V1, ApiVersion
from argyle_pipeline.timestamps import UtcDateTime, parse_timestamp


class InvalidActivity(ValueError):
    """An activity from Argyle that does not fit the model. Names the fields, never their values:
    activities carry addresses and earnings, and this message ends up in logs."""


def parse_json(data: bytes | str) -> Any:
    """JSON with every non-integer number as Decimal (integers stay int)."""
    return json.loads(data, parse_float=Decimal)


def _lenient_money(value: Any) -> Decimal | None:
    # The typed view is a convenience; `raw` keeps what Argyle sent. A value that is not a number
    # ("", "N/A") becomes None here instead of failing the whole page.
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        return value
    try:
        return Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None


Money = Annotated[Decimal | None, BeforeValidator(_lenient_money)]


class Income(BaseModel):
    """`income`: money as strings on the wire ("9.04"), Decimal here."""

    model_config = ConfigDict(extra="allow")

    currency: str | None = None
    pay: Money = None
    fees: Money = None
    tips: Money = None
    bonus: Money = None
    taxes: Money = None
    total: Money = None
    total_charge: Money = None


class _TypedView(BaseModel):
    """What the sync reads of an activity, validated strictly: a malformed field the sync never
    uses must not fail a page, so nothing else is validated here."""

    model_config = ConfigDict(extra="ignore")  # `raw` keeps every field, unknown ones included

    id: str
    account: str
    start_date: UtcDateTime | None = None
    updated_at: UtcDateTime | None = None


class Activity:
    """An activity (or gig) from Argyle: the typed fields the sync reads (`id`, `account`,
    `start_date`, `updated_at`), the document exactly as sent (`raw`), and lenient conveniences
    read from `raw` on access (None when absent or malformed)."""

    __slots__ = ("_api", "account", "id", "raw", "start_date", "updated_at")

    def __init__(self, view: _TypedView, raw: dict[str, Any], api: ApiVersion) -> None:
        self.id = view.id
        self.account = view.account
        self.start_date = view.start_date
        self.updated_at = view.updated_at
        self.raw = raw  # every field exactly as parsed from Argyle's JSON (numbers Decimal/int)
        self._api = api

    @classmethod
    def from_api(cls, doc: dict[str, Any], api: ApiVersion = V1) -> Activity:
        """`doc` as parsed by `parse_json`; it is kept as `raw`, not copied or re-rendered. `api`:
        the version whose object it is (which field holds its start)."""
        view = doc
        if api.start_field != "start_date" and isinstance(doc, dict):
            # A shallow copy for validation only: `raw` stays the gig exactly as sent.
            view = {**doc, "start_date": doc.get(api.start_field)}
        try:
            typed = _TypedView.model_validate(view)
        except ValidationError as exc:
            # pydantic's own message quotes the input: name the fields only, and drop the cause.
            fields = sorted({f"{'.'.join(str(p) for p in err['loc'])} ({err['type']})"
                             for err in exc.errors(include_input=False, include_url=False)})
            raise InvalidActivity(f"activity does not fit the model: {', '.join(fields)}") from None
        return cls(typed, doc, api)

    @property
    def api_version(self) -> ApiVersion:
        """The API version whose object this is."""
        return self._api

    # --- conveniences the sync does not read: lenient, from `raw` ------------------------------------

    @property
    def end_date(self) -> datetime | None:
        return _lenient_datetime(self.raw.get(self._api.end_field))

    @property
    def created_at(self) -> datetime | None:
        return _lenient_datetime(self.raw.get("created_at"))

    @property
    def status(self) -> str | None:
        return _text(self.raw.get("status"))

    @property
    def type(self) -> str | None:
        return _text(self.raw.get("type"))

    @property
    def employer(self) -> str | None:
        return _text(self.raw.get("employer"))

    @property
    def income(self) -> Income | None:
        value = self.raw.get("income")
        if not isinstance(value, dict):
            return None
        try:
            return Income.model_validate(value)
        except ValidationError:  # `currency` of the wrong type: the money is still Argyle's, in raw
            return None


def _lenient_datetime(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_timestamp(value)
    except ValueError:
        return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
