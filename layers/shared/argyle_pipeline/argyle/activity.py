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
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, PrivateAttr, ValidationError

from argyle_pipeline.argyle.api_versions import V1, ApiVersion
from argyle_pipeline.timestamps import UtcDateTime


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


class Activity(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    account: str
    start_date: UtcDateTime | None = None
    end_date: UtcDateTime | None = None
    updated_at: UtcDateTime | None = None
    created_at: UtcDateTime | None = None
    status: str | None = None
    type: str | None = None
    employer: str | None = None
    income: Income | None = None

    # default=None, not default_factory: a factory costs pydantic ~20 us per activity.
    _raw: dict[str, Any] | None = PrivateAttr(default=None)
    _api: ApiVersion = PrivateAttr(default=V1)

    @classmethod
    def from_api(cls, doc: dict[str, Any], api: ApiVersion = V1) -> Activity:
        """`doc` as parsed by `parse_json`; it is kept as `raw`, not copied or re-rendered. `api`:
        the version whose object it is (which fields hold its start and end)."""
        view = doc
        if api.start_field != "start_date" and isinstance(doc, dict):
            # A shallow copy for validation only: `raw` stays the gig exactly as sent.
            view = {**doc, "start_date": doc.get(api.start_field), "end_date": doc.get(api.end_field)}
        try:
            activity = cls.model_validate(view)
        except ValidationError as exc:
            # pydantic's own message quotes the input: name the fields only, and drop the cause.
            fields = sorted({f"{'.'.join(str(p) for p in err['loc'])} ({err['type']})"
                             for err in exc.errors(include_input=False, include_url=False)})
            raise InvalidActivity(f"activity does not fit the model: {', '.join(fields)}") from None
        activity._raw = doc
        activity._api = api
        return activity

    @property
    def api_version(self) -> ApiVersion:
        """The API version whose object this is (V1 for an Activity built directly)."""
        return self._api

    @property
    def raw(self) -> dict[str, Any]:
        """Every field exactly as parsed from Argyle's JSON (numbers Decimal/int, strings unchanged).
        For an Activity built directly rather than by from_api, the fields it was given."""
        if self._raw is None:
            self._raw = self.model_dump(exclude_unset=True)
        return self._raw
