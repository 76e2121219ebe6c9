"""The shared layer's wings keep their arrows one way: the receiver's cold start loads nothing of
the sync's rules or of Argyle's API client, and the sync's rules load no AWS SDK."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _modules_after_import(module: str) -> set[str]:
    code = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    paths = [str(ROOT / "layers" / "shared"), str(ROOT / "functions" / "receiver"), str(ROOT / "functions" / "sync")]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={"PYTHONPATH": ":".join(paths), "PATH": "/usr/bin:/bin"})
    return set(json.loads(result.stdout))


def test_the_receiver_imports_nothing_of_the_sync_or_the_argyle_client():
    # Given the receiver's handler module, When it is imported (its cold start)
    loaded = _modules_after_import("receiver_handler")
    # Then no sync rule, Argyle model or client (pydantic, urllib3) was loaded with it
    assert "argyle_pipeline.receiving.webhook_intake" in loaded
    assert not {m for m in loaded if m.startswith(("argyle_pipeline.sync", "argyle_pipeline.argyle"))}
    assert "pydantic" not in loaded


def test_the_sync_rules_import_no_aws_sdk_client_code():
    # The rules talk to ports; only argyle_pipeline.aws may bring boto3 (the queue's wire format
    # helpers in aws.event_queue import no boto3).
    loaded = _modules_after_import("argyle_pipeline.sync.dispatch")
    assert "argyle_pipeline.sync.listing" in loaded
    assert "boto3" not in loaded
