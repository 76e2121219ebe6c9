"""The samples in events/ are current, correctly signed, and behave as documented through `make invoke`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from argyle_pipeline.argyle.api_versions import V2
from argyle_pipeline.receiving.signature import InvalidSignature, verify
from local_stack.dev_config import LOCAL_DEV_SECRET
from local_stack.invoke import main as invoke_main

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
DOCUMENTED = ["activities.fully_synced", "activities.partially_synced", "activities.added", "activities.updated",
              "activities.removed", "users.fully_synced", "accounts.added"]
# API v2's events (API-NOTES.md, "API v2"); users.fully_synced has a v2 sample too.
V2_SAMPLES = ["gigs_fully_synced", "gigs_partially_synced", "gigs_added", "gigs_updated", "gigs_removed",
              "users_fully_synced_v2"]


def test_committed_samples_match_the_generator(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_events.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    generated = {p.name: p.read_text() for p in tmp_path.glob("*.json")}
    committed = {p.name: p.read_text() for p in EVENTS.glob("*.json")}
    assert generated == committed, "events/ is stale: run `make events`"


def test_every_documented_webhook_has_a_signed_apigw_sample() -> None:
    seen = set()
    for path in EVENTS.glob("*.json"):
        if path.name.startswith(("sqs_", "reconcile_")) or path.name == "env.json":
            continue
        event = json.loads(path.read_text())
        assert event["version"] == "2.0" and event["routeKey"] == "POST /webhooks/argyle"
        body = event["body"].encode() if not event["isBase64Encoded"] else __import__("base64").b64decode(event["body"])
        signature = event["headers"].get("x-argyle-signature")
        if path.name.startswith(("forged", "missing")):
            with pytest.raises(InvalidSignature):
                verify(body, signature, [LOCAL_DEV_SECRET])
        else:
            verify(body, signature, [LOCAL_DEV_SECRET])
            seen.add(json.loads(body)["event"])
    assert seen == set(DOCUMENTED) | set(V2.data_events)


@pytest.mark.parametrize("stem", V2_SAMPLES)
def test_every_v2_sample_is_accepted_and_queued_as_its_sqs_form_carries_it(
        stem: str, capsys: pytest.CaptureFixture[str]) -> None:
    # When the receiver runs on the API Gateway form of a v2 sample
    assert invoke_main(["ReceiverFunction", str(EVENTS / f"{stem}.json")]) == 0
    out = capsys.readouterr().out
    outcome = json.loads(out[out.index("{\n"):])
    # Then it is accepted and queued in its account's (or user's) group, with the very body the SQS
    # sample hands the sync
    sqs = json.loads((EVENTS / f"sqs_{stem}.json").read_text())["Records"][0]
    assert outcome["response"]["statusCode"] == 202 and len(outcome["queued"]) == 1
    [queued] = outcome["queued"]
    assert queued["body"] == sqs["body"] and queued["group_id"] == sqs["attributes"]["MessageGroupId"]
    assert queued["attributes"]["event"] == json.loads(sqs["body"])["event"]


@pytest.mark.parametrize(("stem", "live", "removed"), [
    ("gigs_fully_synced", True, 0),
    ("gigs_removed", False, 1),  # the sample's gig is not at Argyle: confirmed gone, a tombstone
])
def test_make_invoke_runs_the_sync_on_v2_samples_against_a_v2_sandbox(
        stem: str, live: bool, removed: int, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARGYLE_API_URL", raising=False)
    monkeypatch.delenv("ARGYLE_API_VERSION", raising=False)

    assert invoke_main(["SyncFunction", str(EVENTS / f"sqs_{stem}.json")]) == 0

    captured = capsys.readouterr()
    outcome = json.loads(captured.out[captured.out.index("{\n"):])
    assert outcome["response"] == {"batchItemFailures": []}
    assert outcome["argyle_api"].endswith("/v2")  # the sample's version chose the sandbox's
    stored = outcome["stored"]["12db5af4-fd5f-4d1f-bd98-0360df770aa8"]
    assert (stored["live"] > 0) == live and stored["removed"] == removed


@pytest.mark.parametrize(("sample", "status", "queued"), [
    ("activities_fully_synced.json", 202, 1),
    ("users_fully_synced.json", 202, 1),
    ("forged_signature.json", 401, 0),
])
def test_make_invoke_runs_the_receiver_without_docker(sample: str, status: int, queued: int,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert invoke_main(["ReceiverFunction", str(EVENTS / sample)]) == 0
    out = capsys.readouterr().out
    outcome = json.loads(out[out.index("{\n"):])
    assert outcome["response"]["statusCode"] == status
    assert len(outcome["queued"]) == queued


def test_make_invoke_names_the_functions_when_given_a_wrong_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert invoke_main(["NoSuchFunction", str(EVENTS / "activities_added.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("make invoke: error: no function 'NoSuchFunction' in template.yaml; functions: ")
    assert "ReceiverFunction" in err and "SyncFunction" in err and err.count("\n") == 1


def test_make_invoke_says_which_samples_a_function_takes(capsys: pytest.CaptureFixture[str]) -> None:
    assert invoke_main(["SyncFunction", str(EVENTS / "activities_added.json")]) == 2
    assert "is not an SQS event (no Records): SyncFunction takes the events/sqs_*.json samples" in \
        capsys.readouterr().err


def test_make_invoke_runs_the_sync_against_an_in_process_sandbox_by_default(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # Given no Argyle API configured (the documented default: a sandbox holding the event's account)
    monkeypatch.delenv("ARGYLE_API_URL", raising=False)
    # When the sync runs on the activities.added sample
    assert invoke_main(["SyncFunction", str(EVENTS / "sqs_activities_added.json")]) == 0
    captured = capsys.readouterr()
    outcome = json.loads(captured.out[captured.out.index("{\n"):])
    # Then every record succeeded and the sample's account has the activities Argyle listed in its range
    assert outcome["response"] == {"batchItemFailures": []}
    assert outcome["argyle_api"].startswith("http://127.0.0.1:")
    stored = outcome["stored"]["12db5af4-fd5f-4d1f-bd98-0360df770aa8"]
    assert stored["live"] > 0 and stored["removed"] == 0
    assert "in-process sandbox" in captured.err


def test_make_invoke_runs_the_reconciler_on_its_samples(capsys: pytest.CaptureFixture[str]) -> None:
    # Both samples run with the template's environment; a fresh stack has no account to queue
    # (tests/integration/test_reconcile_on_moto.py covers one with accounts)
    for sample in ("reconcile_scheduled.json", "reconcile_on_demand.json"):
        assert invoke_main(["ReconcileFunction", str(EVENTS / sample)]) == 0
        out = capsys.readouterr().out
        outcome = json.loads(out[out.index("{\n"):])
        assert outcome["response"] == {"recent": 0, "full": 0, "in_error": 0}
