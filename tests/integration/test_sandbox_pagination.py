"""How the sandbox pages GET /v1/activities, over real HTTP: offset pagination as Django REST
framework's LimitOffsetPagination does it (the default), the keyset cursor as a mode, and the
scan that lands between two page requests: what a long listing at Argyle really goes through."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import urllib3

from argyle_pipeline.argyle.client import ArgyleClient
from argyle_pipeline.argyle.webhook_events import ActivitiesAdded, ActivitiesRemoved, parse_webhook
from argyle_pipeline.receiving.signature import verify
from argyle_pipeline.timestamps import iso_z
from argyle_sandbox.server import SandboxServer
from tests.support.sandbox_fixtures import (  # noqa: F401
    SANDBOX_CREDENTIALS,
    SANDBOX_KEY_ID,
    SANDBOX_KEY_SECRET,
    RecordingServer,
    recorder,
    sandbox,
)

AUTH = urllib3.make_headers(basic_auth=f"{SANDBOX_KEY_ID}:{SANDBOX_KEY_SECRET}")
http = urllib3.PoolManager(retries=False)
SECRET = "pagination-webhook-secret"


def get(url: str) -> tuple[int, Any]:
    response = http.request("GET", url, headers=AUTH)
    return response.status, json.loads(response.data)


def control(sb: SandboxServer, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    response = http.request(method, sb.root_url + path, body=None if body is None else json.dumps(body).encode())
    return response.status, json.loads(response.data)


def query_of(link: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlsplit(link).query, keep_blank_values=True).items()}


def live_ids(sb: SandboxServer, account: str) -> list[str]:
    return [doc["id"] for doc in sb.state.documents(account)]


def follow(first_url: str) -> list[dict[str, Any]]:
    """Every page, following `next` as given: the naive way a client pages."""
    pages = []
    link: str | None = first_url
    while link:
        status, page = get(link)
        assert status == 200, page
        pages.append(page)
        link = page["next"]
    return pages


# --- offset pagination, no change -----------------------------------------------------------------


def test_offset_is_the_default_and_its_links_are_drfs(sandbox: SandboxServer) -> None:
    _, account = sandbox.connect_account(n_activities=25)
    first_url = f"{sandbox.base_url}/activities?account={account}&limit=10"

    first, second, third = follow(first_url)

    # next: the same query with offset moved a page on, as a full URL; previous likewise
    assert first["previous"] is None
    assert first["next"].startswith(sandbox.base_url + "/activities?")
    assert query_of(first["next"]) == {"account": account, "limit": "10", "offset": "10"}
    assert query_of(second["next"]) == {"account": account, "limit": "10", "offset": "20"}
    # DRF drops offset from the link back to the first page
    assert query_of(second["previous"]) == {"account": account, "limit": "10"}
    assert query_of(third["previous"]) == {"account": account, "limit": "10", "offset": "10"}
    assert third["next"] is None
    assert [len(p["results"]) for p in (first, second, third)] == [10, 10, 5]


def test_an_offset_listing_with_no_change_returns_every_activity_once_and_count_on_every_page(
    sandbox: SandboxServer,
) -> None:
    # Given an account of 537 activities and a date-filtered listing of part of it
    _, account = sandbox.connect_account(n_activities=537)
    truth = sandbox.truth(account)
    low, high = truth[400]["start_date"], truth[30]["start_date"]
    in_range = [a["id"] for a in truth if low <= a["start_date"] <= high]

    # When both are followed page by page
    everything = follow(f"{sandbox.base_url}/activities?account={account}&limit=50")
    ranged = follow(
        f"{sandbox.base_url}/activities?account={account}&limit=50&from_start_date={low}&to_start_date={high}"
    )

    # Then each lists every activity exactly once, in order, with the total on every page
    assert [a["id"] for p in everything for a in p["results"]] == [a["id"] for a in truth]
    assert {p["count"] for p in everything} == {537} and len(everything) == 11
    assert [a["id"] for p in ranged for a in p["results"]] == in_range
    assert {p["count"] for p in ranged} == {len(in_range)}
    # and the filters travel in every next link
    assert all(query_of(p["next"])["from_start_date"] == low for p in ranged[:-1])


def test_an_offset_past_the_end_is_an_empty_last_page(sandbox: SandboxServer) -> None:
    _, account = sandbox.connect_account(n_activities=12)

    status, page = get(f"{sandbox.base_url}/activities?account={account}&limit=5&offset=40")

    assert status == 200
    assert (page["count"], page["results"], page["next"]) == (12, [], None)
    assert query_of(page["previous"])["offset"] == "35"


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ("offset=-1", "offset", "Ensure this value is greater than or equal to 0."),
        ("offset=ten", "offset", "A valid integer is required."),
        ("offset=1.5", "offset", "A valid integer is required."),
        ("limit=0&offset=10", "limit", "Ensure this value is greater than or equal to 1."),
        ("limit=201", "limit", "Ensure this value is less than or equal to 200."),
    ],
)
def test_bad_offset_or_limit_is_a_400_naming_the_field(
    sandbox: SandboxServer, params: str, field: str, message: str
) -> None:
    assert get(f"{sandbox.base_url}/activities?{params}") == (400, {field: [message]})


def test_webhook_listings_page_by_offset_too(sandbox: SandboxServer) -> None:
    made = [sandbox.subscribe(f"https://example.test/{i}", ["*"], name=f"hook {i}").id for i in range(23)]

    pages = follow(f"{sandbox.base_url}/webhooks?limit=10")

    assert [w["id"] for p in pages for w in p["results"]] == made
    assert query_of(pages[2]["previous"]) == {"limit": "10", "offset": "10"}
    assert get(f"{sandbox.base_url}/webhooks?offset=-3") == (
        400,
        {"offset": ["Ensure this value is greater than or equal to 0."]},
    )


# --- choosing the mode ------------------------------------------------------------------------------


def test_keyset_mode_pages_with_a_cursor(sandbox: SandboxServer) -> None:
    _, account = sandbox.connect_account(n_activities=25)
    sandbox.settings.pagination = "keyset"

    pages = follow(f"{sandbox.base_url}/activities?account={account}&limit=10")

    assert "cursor" in query_of(pages[0]["next"]) and "offset" not in query_of(pages[0]["next"])
    assert [a["id"] for p in pages for a in p["results"]] == live_ids(sandbox, account)
    assert get(f"{sandbox.base_url}/activities?cursor=garbage") == (400, {"cursor": ["Invalid cursor."]})


def test_the_mode_is_a_constructor_argument_and_a_setting_over_http() -> None:
    with SandboxServer(pagination="keyset") as sb:
        assert control(sb, "GET", "/_sandbox/settings") == (
            200,
            {"pagination": "keyset", "include_resource_rule": "refuse"},
        )

        status, settings = control(sb, "POST", "/_sandbox/settings", {"pagination": "offset"})
        assert (status, settings["pagination"]) == (200, "offset")
        assert sb.settings.pagination == "offset"

        status, errors = control(sb, "POST", "/_sandbox/settings", {"pagination": "pages"})
        assert status == 400 and list(errors) == ["pagination"] and "'offset' or 'keyset'" in errors["pagination"][0]
        status, errors = control(sb, "POST", "/_sandbox/settings", {"paging": "keyset"})
        assert status == 400 and list(errors) == ["paging"]
        assert sb.settings.pagination == "offset"  # nothing changed by the bad requests

    with pytest.raises(ValueError, match="pagination"):
        SandboxServer(pagination="pages")  # type: ignore[arg-type]


def test_the_command_line_flag_selects_the_mode() -> None:
    # Given the sandbox started as its command runs it, with --pagination keyset
    process = subprocess.Popen(
        [sys.executable, "-m", "argyle_sandbox", "--port", "0", "--pagination", "keyset", "--accounts", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = ""
        for line in process.stdout:  # it prints its URL once it serves (readline blocks until then)
            if line.startswith("Argyle sandbox on "):
                banner = line
                break
        assert banner, process.stderr.read() if process.stderr else "no output"
        root = banner.split()[3].removesuffix("/v1")

        # When its settings are read over HTTP, Then it runs in keyset mode
        response = http.request("GET", root + "/_sandbox/settings")
        assert json.loads(response.data)["pagination"] == "keyset"
    finally:
        process.terminate()
        process.wait(timeout=10)

    refused = subprocess.run(
        [sys.executable, "-m", "argyle_sandbox", "--pagination", "pages"], capture_output=True, text=True, timeout=30
    )
    assert refused.returncode == 2 and "invalid choice: 'pages'" in refused.stderr


@pytest.mark.parametrize("mode", ["offset", "keyset"])
def test_the_unchanged_client_lists_everything_in_either_mode(sandbox: SandboxServer, mode: str) -> None:
    _, account = sandbox.connect_account(n_activities=450)
    sandbox.settings.pagination = mode  # type: ignore[assignment]
    client = ArgyleClient(sandbox.base_url, SANDBOX_CREDENTIALS)

    first_page = next(client.list_activity_pages(account))
    listed = [a.id for a in client.list_activities(account)]

    assert set(first_page.next_cursor or {}) == {"offset" if mode == "offset" else "cursor"}
    assert listed == live_ids(sandbox, account) and client.calls == 4


@pytest.mark.parametrize("mode", ["offset", "keyset"])
def test_a_listing_without_an_account_merges_every_account_in_either_mode(sandbox: SandboxServer, mode: str) -> None:
    _, first = sandbox.connect_account(n_activities=30)
    _, second = sandbox.connect_account(n_activities=40)
    sandbox.settings.pagination = mode  # type: ignore[assignment]

    pages = follow(sandbox.base_url + "/activities?limit=7")

    seen = [a for p in pages for a in p["results"]]
    assert len(seen) == 70 and len({a["id"] for a in seen}) == 70 and {a["account"] for a in seen} == {first, second}
    starts = [a["start_date"] for a in seen]
    assert starts == sorted(starts, reverse=True)


# --- a scan between two page requests ----------------------------------------------------------------


def test_an_offset_listing_skips_exactly_the_removed_count_of_live_activities_per_shift(
    sandbox: SandboxServer, recorder: RecordingServer
) -> None:
    # Given an account of 300 and a scan that removes 3 earlier activities before each of 4 pages
    _, account = sandbox.connect_account(n_activities=300)
    sandbox.subscribe(recorder.url, ["activities.removed", "activities.added"], SECRET)
    sandbox.faults.update({"page_shift_remove": 3, "page_shift_times": 4})
    initial = live_ids(sandbox, account)

    # When the listing is followed naively, page by page, checking each page against the listing as it now is
    served: list[str] = []
    gaps: list[list[str]] = []
    link: str | None = f"{sandbox.base_url}/activities?account={account}&limit=40"
    while link:
        before = live_ids(sandbox, account)
        page = get(link)[1]
        ids = [a["id"] for a in page["results"]]
        if served and ids:
            # the activities live before this request between the last one served and this page's first
            gaps.append(before[before.index(served[-1]) + 1 : before.index(ids[0])])
        assert page["count"] == len(live_ids(sandbox, account))
        served += ids
        link = page["next"]

    # Then each of the 4 shifted pages jumped over exactly 3 live activities, never served
    shifts = sandbox.page_shifts
    assert len(shifts) == 4 and all(len(s.removed) == 3 and s.added == [] for s in shifts)
    assert [len(gap) for gap in gaps] == [3, 3, 3, 3] + [0] * (len(gaps) - 4)
    skipped = {i for gap in gaps for i in gap}
    assert not skipped & set(served) and len(served) == len(set(served))
    # and so the listing misses 3 activities per shift: 12 that were live when their page came
    assert set(initial) - set(served) == skipped and len(skipped) == 12
    # The removals were what the listing had already passed, and Argyle said so in signed webhooks
    removed = [i for s in shifts for i in s.removed]
    assert not set(removed) & set(live_ids(sandbox, account))
    sandbox.wait_for_deliveries(10)
    webhooks = [parse_webhook(r.body)[1] for r in recorder.requests]
    for request in recorder.requests:
        verify(request.body, request.headers["x-argyle-signature"], [SECRET])
    assert all(isinstance(w, ActivitiesRemoved) for w in webhooks)
    assert [w.removed_activities for w in webhooks] == [s.removed for s in shifts]


def test_an_offset_listing_repeats_exactly_the_added_count_per_shift(
    sandbox: SandboxServer, recorder: RecordingServer
) -> None:
    # Given a scan that adds 2 activities sorting before the requested page, twice
    _, account = sandbox.connect_account(n_activities=100)
    sandbox.subscribe(recorder.url, ["activities.added"], SECRET)
    sandbox.faults.update({"page_shift_add": 2, "page_shift_times": 2})
    initial = live_ids(sandbox, account)

    pages = follow(f"{sandbox.base_url}/activities?account={account}&limit=25")

    # Then the two pages after a shift each begin with the last 2 activities of the page before
    served = [[a["id"] for a in p["results"]] for p in pages]
    assert served[1][:2] == served[0][-2:] and served[2][:2] == served[1][-2:]
    counts = Counter(i for page in served for i in page)
    assert sorted(i for i, n in counts.items() if n > 1) == sorted(served[0][-2:] + served[1][-2:])
    assert set(counts) == set(initial)  # nothing missed; the 4 new ones are not listed at all
    added = [i for s in sandbox.page_shifts for i in s.added]
    assert len(added) == 4 and not set(added) & set(counts)
    # and the activities.added webhooks lead to exactly them, as the docs say to use them
    sandbox.wait_for_deliveries(10)
    client = ArgyleClient(sandbox.base_url, SANDBOX_CREDENTIALS)
    for request, shift in zip(recorder.requests, sandbox.page_shifts, strict=True):
        webhook = parse_webhook(request.body)[1]
        assert isinstance(webhook, ActivitiesAdded) and webhook.added_count == 2
        assert webhook.added_from is not None and webhook.added_to is not None
        found = client.list_activities(account, iso_z(webhook.added_from), iso_z(webhook.added_to))
        assert set(shift.added) <= {a.id for a in found}


@pytest.mark.parametrize(
    "scan",
    [
        {"page_shift_remove": 3, "page_shift_times": 4},  # the scans that made the offset listing skip 12
        {"page_shift_remove": 3, "page_shift_add": 2, "page_shift_times": 4},
    ],
)
def test_keyset_mode_stays_exact_under_the_same_scans(sandbox: SandboxServer, scan: dict[str, int]) -> None:
    # Given the same scans before each of 4 pages, in keyset mode
    _, account = sandbox.connect_account(n_activities=300)
    sandbox.settings.pagination = "keyset"
    sandbox.faults.update(scan)
    initial = live_ids(sandbox, account)

    pages = follow(f"{sandbox.base_url}/activities?account={account}&limit=40")

    # Then every activity is listed once, in order, none skipped or repeated, though 4 scans ran
    listed = [a["id"] for p in pages for a in p["results"]]
    assert len(sandbox.page_shifts) == 4
    assert all(len(s.removed) == 3 and len(s.added) == scan.get("page_shift_add", 0) for s in sandbox.page_shifts)
    assert listed == initial


def test_the_unchanged_client_misses_exactly_the_removed_count_per_shift(sandbox: SandboxServer) -> None:
    # Given 1,000 activities (5 pages of 200) and a scan removing 5 before each of 3 pages
    _, account = sandbox.connect_account(n_activities=1_000)
    sandbox.faults.update({"page_shift_remove": 5, "page_shift_times": 3})
    initial = set(live_ids(sandbox, account))

    # When the project's client lists the account, following next as it does
    listed = [a.id for a in ArgyleClient(sandbox.base_url, SANDBOX_CREDENTIALS).list_activities(account)]

    # Then it never saw 15 activities that were live when it passed them, and did not notice
    removed = {i for s in sandbox.page_shifts for i in s.removed}
    assert len(listed) == len(set(listed)) == 985
    never_seen = initial - set(listed)
    assert len(never_seen) == 3 * 5
    # A later scan may remove one it skipped; the others are live, and a copy made from this listing lacks them
    live_not_listed = set(live_ids(sandbox, account)) - set(listed)
    assert live_not_listed == never_seen - removed and live_not_listed


def test_shifts_only_hit_continuation_pages_of_the_chosen_account_and_count_down(sandbox: SandboxServer) -> None:
    _, mine = sandbox.connect_account(n_activities=60)
    _, other = sandbox.connect_account(n_activities=60)
    sandbox.faults.update({"page_shift_remove": 1, "page_shift_times": 2, "page_shift_account": mine})

    get(f"{sandbox.base_url}/activities?account={mine}&limit=10")  # a first page never shifts
    follow(f"{sandbox.base_url}/activities?account={other}&limit=10")  # another account's listing
    assert sandbox.page_shifts == []

    follow(f"{sandbox.base_url}/activities?account={mine}&limit=10")

    assert [s.page for s in sandbox.page_shifts] == [{"offset": "10"}, {"offset": "20"}]
    assert sandbox.faults.page_shift_times == 0
    assert len(live_ids(sandbox, mine)) == 58 and len(live_ids(sandbox, other)) == 60
    # the record is visible to other processes too
    status, shifts = control(sandbox, "GET", "/_sandbox/page_shifts")
    assert status == 200 and [(s["account"], len(s["removed"]), s["added"]) for s in shifts] == [(mine, 1, [])] * 2


def test_the_scan_fault_is_switched_over_http_and_checked(sandbox: SandboxServer) -> None:
    _, account = sandbox.connect_account(n_activities=30)

    status, faults = control(sandbox, "POST", "/_sandbox/faults", {"page_shift_remove": 2, "page_shift_times": 1})
    assert status == 200 and (faults["page_shift_remove"], faults["page_shift_times"]) == (2, 1)
    follow(f"{sandbox.base_url}/activities?account={account}&limit=10")
    assert [len(s.removed) for s in sandbox.page_shifts] == [2]

    assert control(sandbox, "POST", "/_sandbox/faults", {"page_shift_times": -1}) == (
        400,
        {"detail": "fault page_shift_times: must be 0 or more (got -1)"},
    )
    status, error = control(sandbox, "POST", "/_sandbox/faults", {"page_shift_add": "2"})
    assert status == 400 and error["detail"].startswith("fault page_shift_add: Input should be a valid integer")
