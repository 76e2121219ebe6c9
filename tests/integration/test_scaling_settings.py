"""The stack's capacity settings (docs/scaling.md): the defaults reserve nothing, so they deploy in
a new account whose Lambda concurrency quota may be 10; samconfig.toml's prod section holds the
100,000-account load of issue 16 and is consistent with itself; the optional reservations and warm
throughput land where they should. cfn-lint and `sam validate --lint` check the template's shape
(tests/integration/test_template.py)."""

from __future__ import annotations

import shlex
import tomllib
from pathlib import Path
from typing import Any

from local_stack.template_resources import TEMPLATE_PATH, deployed_resources_of_type, load_template

SAMCONFIG = TEMPLATE_PATH.parent / "samconfig.toml"
NEW_ACCOUNT_QUOTA = 10
UNRESERVED_MINIMUM = 100  # Lambda keeps at least this much of the quota unreserved
# docs/scaling.md's model at 100,000 accounts: webhooks per second at peak, a sync invocation's
# seconds per webhook (the 5 invocations for 11 webhooks/s), and a retry storm's rate.
PEAK_WEBHOOKS_PER_SECOND_100K = 28
SECONDS_PER_WEBHOOK = 5 / 11
RETRY_STORM_PER_SECOND_100K = 500


def prod_parameters() -> dict[str, str]:
    config = tomllib.loads(Path(SAMCONFIG).read_text())
    overrides = config["prod"]["deploy"]["parameters"]["parameter_overrides"]
    return dict(pair.split("=", 1) for pair in shlex.split(overrides))


def with_defaults(parameters: dict[str, str]) -> dict[str, int]:
    template = load_template()
    numbers = {name: p for name, p in template["Parameters"].items() if p["Type"] == "Number"}
    return {name: int(parameters.get(name, p["Default"])) for name, p in numbers.items()}


def functions(parameters: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    return deployed_resources_of_type(load_template(), "AWS::Serverless::Function", parameters)


def test_the_defaults_reserve_nothing_and_fit_a_new_accounts_quota() -> None:
    # Given the template's defaults
    fns = functions()
    # Then no function reserves concurrency (a reservation above the quota fails the deploy), the
    # queue's syncs leave a new account's quota room for the receiver and the reconciler (a throttled
    # sync invocation counts towards the DLQ), and no table is pre-warmed
    assert [name for name, props in fns.items() if "ReservedConcurrentExecutions" in props] == []
    assert with_defaults({})["SyncMaxConcurrency"] + 2 <= NEW_ACCOUNT_QUOTA
    activities = deployed_resources_of_type(load_template(), "AWS::DynamoDB::Table")["ActivitiesTable"]
    assert "WarmThroughput" not in activities
    assert all("WarmThroughput" not in index for index in activities["GlobalSecondaryIndexes"])


def test_prod_holds_the_100k_load_and_its_reservations_are_consistent() -> None:
    # Given samconfig.toml's prod parameters
    prod = prod_parameters()
    values = with_defaults(prod)
    template = load_template()
    # Then every value is one the template accepts
    for name, value in values.items():
        spec = template["Parameters"][name]
        assert spec.get("MinValue", value) <= value <= spec.get("MaxValue", value), name
    # And the sync keeps up with the peak of webhooks, and its reservation covers the queue's concurrency
    # (below it, Lambda throttles the queue's invocations and their records count towards the DLQ)
    assert values["SyncMaxConcurrency"] / SECONDS_PER_WEBHOOK >= 1.5 * PEAK_WEBHOOKS_PER_SECOND_100K
    assert values["SyncReservedConcurrency"] >= values["SyncMaxConcurrency"]
    # And the webhook endpoint takes a retry storm, with the receiver reserved for it
    assert values["ApiThrottlingRateLimit"] >= RETRY_STORM_PER_SECOND_100K
    assert values["ApiThrottlingBurstLimit"] >= values["ApiThrottlingRateLimit"]
    assert values["ReceiverReservedConcurrency"] > 0
    # And samconfig's comment names the quota the prod section needs
    needed = UNRESERVED_MINIMUM + values["SyncReservedConcurrency"] + values["ReceiverReservedConcurrency"]
    assert f"= {needed}" in SAMCONFIG.read_text()


def test_the_optional_reservations_and_warm_throughput_land_on_their_resources() -> None:
    # Given every optional capacity setting switched on
    parameters = {"SyncReservedConcurrency": "40", "ReceiverReservedConcurrency": "20",
                  "ActivitiesWarmWriteUnitsPerSecond": "20000"}
    fns = functions(parameters)
    activities = deployed_resources_of_type(load_template(), "AWS::DynamoDB::Table", parameters)
    # Then each lands on its function, and the warm throughput on the activities table and both indexes only
    assert fns["SyncFunction"]["ReservedConcurrentExecutions"] == {"Ref": "SyncReservedConcurrency"}
    assert fns["ReceiverFunction"]["ReservedConcurrentExecutions"] == {"Ref": "ReceiverReservedConcurrency"}
    assert "ReservedConcurrentExecutions" not in fns["ReconcileFunction"]
    warm = {"WriteUnitsPerSecond": {"Ref": "ActivitiesWarmWriteUnitsPerSecond"}}
    assert activities["ActivitiesTable"]["WarmThroughput"] == warm
    assert [index["WarmThroughput"] for index in activities["ActivitiesTable"]["GlobalSecondaryIndexes"]] == [warm] * 2
    assert all("WarmThroughput" not in props for name, props in activities.items() if name != "ActivitiesTable")
