from __future__ import annotations

import io
import json

from argyle_pipeline.receiving.receiver_telemetry import RequestTelemetry


def test_each_request_is_one_line_that_is_both_a_log_record_and_an_emf_metric() -> None:
    # Given the receiver's telemetry writing to a buffer
    stream = io.StringIO()
    telemetry = RequestTelemetry(service="argyle-receiver", namespace="ArgyleSync", stream=stream)
    # When one request is accepted and one rejected
    telemetry.outcome(accepted=True, status=202, outcome="accepted", event_name="activities.added",
                      request_id="req", correlation_id="corr", cold_start=True, dedupe_key="k")
    telemetry.outcome(accepted=False, status=401, outcome="signature_mismatch", event_name=None,
                      request_id="req2", correlation_id="corr2", cold_start=False)
    accepted, rejected = (json.loads(line) for line in stream.getvalue().splitlines())
    # Then each line is valid EMF: the metric named in _aws is a top-level value, by its dimension
    for record, metric, dimension, value in ((accepted, "WebhookAccepted", "event", "activities.added"),
                                             (rejected, "WebhookRejected", "reason", "signature_mismatch")):
        directive = record["_aws"]["CloudWatchMetrics"][0]
        assert directive["Namespace"] == "ArgyleSync"
        assert directive["Metrics"] == [{"Name": metric, "Unit": "Count"}]
        assert directive["Dimensions"] == [["service", dimension]]
        assert record[metric] == 1 and record[dimension] == value and record["service"] == "argyle-receiver"
        assert isinstance(record["_aws"]["Timestamp"], int)
    assert (accepted["level"], rejected["level"]) == ("INFO", "WARNING")
    assert accepted["correlation_id"] == "corr" and accepted["dedupe_key"] == "k"
