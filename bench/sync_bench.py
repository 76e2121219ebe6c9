"""Sync benchmark: one account's activities.fully_synced (API v1) and gigs.fully_synced (API v2: gigs,
keyset pages) for N = 2,000, 10,000 and 100,000 activities, through the real handler, against moto's
server and the Argyle sandbox over HTTP; then a naive sync (pages of 10, one PutItem per activity) of
the same data, and the ratio of the two.

Processes: moto's server runs in its own process, the sandbox in this one, and each sync in a fresh
child process, so that the child's peak RSS is the sync's memory alone (the 100,000 items held by
moto and the sandbox are elsewhere). The handler runs as Lambda would run it: SQS messages from the
queue as Lambda-shaped events, a 900 s context, continuations when that budget runs low.

Two tables: first with production's latencies added (bench/latency_model.py: each Argyle page
250 ms, each single GET 120 ms, each DynamoDB call 6 ms), where the figure that matters is wall time
against the sequential floor (pages x page latency); then with none, which shows CPU cost.
The naive baseline runs on the first version only (its shape does not depend on the version).

Ours lists a listing above 2,000 activities as 4 start-date windows at once (API v1: v2 lists carry
no count and stay one sequence); the latency table also shows the same listing as one sequence
("1 win", prefetch only).

Targets, the same for both versions: Argyle calls = ceil(N/200) (with windows: the windows' pages
plus 2 count checks); activity write calls = ceil(N/25); peak memory at 100,000 no more than 30 MB
above that at the smallest N; with latency, ours / floor <= 1.1, and with 4 windows <= 0.5 at N =
10,000 and 100,000.
"""

from __future__ import annotations

import gc
import json
import math
import multiprocessing
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from bench.latency_model import DelayedPool, LatencyModel

ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
KEY_ID, KEY_SECRET = "bench-key-id", "bench-key-secret"
WRITE_OPERATIONS = frozenset({"BatchWriteItem", "PutItem", "UpdateItem", "TransactWriteItems", "DeleteItem"})
MEMORY_TARGET_MB = 30
FLOOR_TARGET = 1.1
PAGE = 200
# A listing above the sync's threshold (LISTING_WINDOW_THRESHOLD, 2,000) is listed as this many
# start-date windows at once (the template's default); the latency table also runs it as one sequence.
WINDOWS = 4
WINDOW_THRESHOLD = 2_000
WINDOWS_FLOOR_TARGET = 0.5


def _aws_environment(endpoint: str) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION, "AWS_ENDPOINT_URL": endpoint, "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_NAMESPACE": "ArgyleSyncBench", "POWERTOOLS_LOG_LEVEL": "WARNING",
            "POWERTOOLS_SERVICE_NAME": "argyle-sync", "AWS_LAMBDA_FUNCTION_NAME": "SyncFunction",
            "POWERTOOLS_METRICS_DISABLED": "true"}


def _start_moto() -> tuple[subprocess.Popen[bytes], str]:
    from tests.support.network import free_port

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "bench.bench_moto", str(port)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1)
            return process, url
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("moto server did not start") from None
            time.sleep(0.1)


# --- in the child process -------------------------------------------------------------------------

def _peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM). Not getrusage's ru_maxrss: on Linux that keeps
    the high-water mark from before exec, i.e. the forking parent's size, sandbox and all."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: the best there is


def _count_calls(client: Any, counts: dict[str, int]) -> None:
    def count(event_name: str, **_: Any) -> None:
        operation = event_name.rsplit(".", 1)[-1]
        counts[operation] = counts.get(operation, 0) + 1

    client.meta.events.register("before-call.dynamodb.*", count)


def _ours(job: dict[str, Any], out: Any) -> None:
    """The real handler on the queue until it is empty (continuations included)."""
    os.environ.update(job["env"])
    import boto3

    import sync_handler
    from argyle_pipeline.argyle.client import ArgyleClient
    from argyle_pipeline.aws.dynamodb_client import sync_dynamodb_client
    from argyle_pipeline.aws.event_queue import EventQueue, QueuedEvent, dedupe_key
    from argyle_pipeline.aws.secret_values import ArgyleCredentials
    from argyle_pipeline.sync.settings import sync_settings
    from tests.support.lambda_events import FakeLambdaContext, record_from_sqs_message, sqs_event

    dynamodb = sync_dynamodb_client()  # as the handler builds it
    counts: dict[str, int] = {}
    _count_calls(dynamodb, counts)
    latency = LatencyModel(**job["latency"]) if job.get("latency") else None
    if latency is not None:
        latency.delay_dynamodb(dynamodb)
    settings = sync_settings()
    credentials = ArgyleCredentials(KEY_ID, KEY_SECRET)
    # One client per fetching thread (the GETs', or a large listing's windows), as the handler makes.
    pool = _pool(latency, max(settings.fetch_concurrency, settings.listing_windows) + 1)
    clients = [ArgyleClient(settings.argyle_api_url, credentials, page_limit=PAGE, pool=pool,
                            api=settings.argyle_api)
               for _ in range(max(settings.fetch_concurrency, settings.listing_windows) + 1)]
    sync_handler.set_runtime(sync_handler.build_runtime(settings, argyle=clients[0], fetchers=clients[1:],
                                                        dynamodb=dynamodb))
    gc.freeze()  # as the handler does once it has built its runtime
    sqs = boto3.client("sqs")
    body = job["body"].encode()
    EventQueue(settings.queue_url, sqs).send(QueuedEvent(
        body=body, event_name=settings.argyle_api.event("fully_synced"), group_id=f"account:{job['account']}",
        dedupe_key=dedupe_key(body), correlation_id="bench", received_at_ms=int(time.time() * 1000)))
    baseline = _peak_rss_mb()
    invocations = failed = 0
    started = time.perf_counter()
    while True:
        messages = sqs.receive_message(QueueUrl=settings.queue_url, MaxNumberOfMessages=10,
                                       AttributeNames=["All"], MessageAttributeNames=["All"]).get("Messages", [])
        if not messages:
            break
        invocations += 1
        response = sync_handler.lambda_handler(sqs_event([record_from_sqs_message(m) for m in messages]),
                                               FakeLambdaContext(timeout_seconds=900))
        failures = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
        for message in messages:
            if message["MessageId"] in failures:
                failed += 1
                sqs.change_message_visibility(QueueUrl=settings.queue_url, ReceiptHandle=message["ReceiptHandle"],
                                              VisibilityTimeout=0)
            else:
                sqs.delete_message(QueueUrl=settings.queue_url, ReceiptHandle=message["ReceiptHandle"])
    wall = time.perf_counter() - started
    store = sync_handler.runtime().sync.ctx.activities
    out.put({"wall_s": wall, "argyle_calls": sum(c.calls for c in clients),
             "argyle_retries": sum(c.retries for c in clients),
             "activity_write_calls": store.write_calls,  # type: ignore[attr-defined]
             "dynamodb_write_calls": sum(n for op, n in counts.items() if op in WRITE_OPERATIONS),
             "dynamodb_calls": counts, "invocations": invocations, "failed_records": failed,
             "baseline_rss_mb": baseline, "peak_rss_mb": _peak_rss_mb()})


def _naive(job: dict[str, Any], out: Any) -> None:
    """What a first attempt looks like: default-ish pages of 10, one PutItem per activity."""
    os.environ.update(job["env"])
    import boto3

    from argyle_pipeline.argyle.api_versions import api_version
    from argyle_pipeline.argyle.client import ArgyleClient
    from argyle_pipeline.aws.activity_store import activity_item
    from argyle_pipeline.aws.secret_values import ArgyleCredentials

    dynamodb = boto3.client("dynamodb")
    counts: dict[str, int] = {}
    _count_calls(dynamodb, counts)
    latency = LatencyModel(**job["latency"]) if job.get("latency") else None
    if latency is not None:
        latency.delay_dynamodb(dynamodb)
    client = ArgyleClient(job["env"]["ARGYLE_API_URL"], ArgyleCredentials(KEY_ID, KEY_SECRET), page_limit=10,
                          max_pages=1_000_000, pool=_pool(latency),
                          api=api_version(job["env"]["ARGYLE_API_VERSION"]))
    baseline = _peak_rss_mb()
    started = time.perf_counter()
    synced_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for activity in client.list_activities(job["account"]):
        dynamodb.put_item(TableName=job["table"], Item=activity_item(activity, synced_at))
    wall = time.perf_counter() - started
    out.put({"wall_s": wall, "argyle_calls": client.calls, "dynamodb_calls": counts,
             "dynamodb_write_calls": sum(n for op, n in counts.items() if op in WRITE_OPERATIONS),
             "baseline_rss_mb": baseline, "peak_rss_mb": _peak_rss_mb()})


def _pool(latency: LatencyModel | None, size: int = 4) -> Any:
    import urllib3

    pool = urllib3.PoolManager(retries=False, maxsize=size)
    return DelayedPool(pool, latency) if latency is not None else pool


def _run_child(target: Any, job: dict[str, Any]) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: its peak RSS is the sync's
    out = context.Queue()
    child = context.Process(target=target, args=(job, out))
    child.start()
    result = out.get()
    child.join()
    if child.exitcode:
        raise RuntimeError(f"{target.__name__} failed with exit code {child.exitcode}")
    return dict(result)


# --- the benchmark --------------------------------------------------------------------------------

def _fresh_stack(endpoint: str, prefix: str) -> Any:
    import boto3

    from local_stack.template_resources import create_stack_resources

    return create_stack_resources(boto3.Session(region_name=REGION, aws_access_key_id="bench",
                                                aws_secret_access_key="bench"),
                                  prefix=prefix, endpoint_url=endpoint)


def _check_copy(table: str, sandbox: Any, account: str) -> None:
    """The table holds exactly the account's activities at Argyle (ids), or the figures mean nothing."""
    query = urllib.parse.urlencode({"table": table, "account": account, "region": REGION})
    with urllib.request.urlopen(f"{os.environ['AWS_ENDPOINT_URL']}/_bench/activity-ids?{query}", timeout=120) as answer:
        stored = set(json.loads(answer.read()))
    expected = set(sandbox.state.account(account).records)
    if stored != expected:
        raise RuntimeError(f"the copy of {account} is not exact: {len(expected - stored)} missing, "
                           f"{len(stored - expected)} extra")


def _webhook(sandbox: Any, account: str) -> str:
    start, end = sandbox.available_range(account)
    data = {"account": account, "user": sandbox.state.account(account).user, "available_from": start,
            "available_to": end, "available_count": len(sandbox.state.account(account).records)}
    return json.dumps({"event": sandbox.api.event("fully_synced"), "name": "bench", "data": data})


DEFAULT_SIZES = [2_000, 10_000, 100_000]
# With latency, a naive sync of 10,000 takes about 6 minutes: above this N it runs only on request.
NAIVE_WITH_LATENCY_UP_TO = 2_000


def run_sync_bench(sizes: list[int] | None = None, *, naive_up_to: int | None = None,
                   latency: LatencyModel | None = None, apis: tuple[str, ...] = ("v1", "v2")) -> list[dict[str, Any]]:
    """Both tables (with `latency`, default the model's figures; then without) for each API version and N.
    `naive_up_to`: run the naive sync only up to this N (SYNC_BENCH_NAIVE_UP_TO overrides; default
    every N without latency, NAIVE_WITH_LATENCY_UP_TO with it)."""
    sys.path[:0] = [str(ROOT / "layers" / "shared"), str(ROOT / "functions" / "sync"), str(ROOT)]
    from argyle_sandbox.server import SandboxServer

    sizes = sizes or DEFAULT_SIZES
    if naive_up_to is None and os.environ.get("SYNC_BENCH_NAIVE_UP_TO"):
        naive_up_to = int(os.environ["SYNC_BENCH_NAIVE_UP_TO"])
    latency = latency or LatencyModel()
    moto, endpoint = _start_moto()
    saved_env = dict(os.environ)
    os.environ.update(_aws_environment(endpoint))
    rows: list[dict[str, Any]] = []
    try:
        for api in apis:
            with SandboxServer(seed=5, api_key_id=KEY_ID, api_key_secret=KEY_SECRET, api=api) as sandbox:
                accounts = {n: sandbox.connect_account(n_activities=n)[1] for n in sizes}
                for model in (latency, None):
                    naive_limit = naive_up_to if naive_up_to is not None else (
                        NAIVE_WITH_LATENCY_UP_TO if model is not None else None)
                    if api != apis[0]:
                        naive_limit = -1  # the naive baseline does not depend on the version
                    rows += _table(sandbox, endpoint, accounts, model, naive_limit)
    finally:
        moto.terminate()
        try:
            moto.wait(timeout=10)
        except subprocess.TimeoutExpired:  # a server holding 200,000 items can be slow to stop
            moto.kill()
            moto.wait(timeout=10)
        os.environ.clear()
        os.environ.update(saved_env)
    return rows


def _table(sandbox: Any, endpoint: str, accounts: dict[int, str], latency: LatencyModel | None,
           naive_up_to: int | None) -> list[dict[str, Any]]:
    api = sandbox.api.name
    tag = f"{api}latency" if latency is not None else f"{api}zero"
    if latency is not None:
        print(f"\n## Sync, API {api}, with production's latency ({latency.describe()}): one account's "
              f"{sandbox.api.event('fully_synced')}")
        print(f"{'N':>8} {'run':>6} {'wall s':>8} {'floor s':>8} {'of floor':>12} {'naive/ours':>10} "
              f"{'Argyle calls':>13} {'DynamoDB calls':>15} {'peak MB':>8} {'+base MB':>8}")
    else:
        print(f"\n## Sync, API {api}, with no added latency (CPU cost): moto server + sandbox over HTTP, loopback")
        print(f"{'N':>8} {'run':>6} {'wall s':>8} {'act/s':>8} {'Argyle calls':>13} {'target':>7} "
              f"{'act. writes':>11} {'target':>7} {'all writes':>10} {'peak MB':>8} {'+base MB':>8}")
    rows: list[dict[str, Any]] = []
    job_latency = vars(latency) if latency is not None else None
    for n, account in accounts.items():
        stack = _fresh_stack(endpoint, f"{tag}{n}")
        env = {**_aws_environment(endpoint), **stack.environment(), "ARGYLE_API_URL": sandbox.base_url,
               "ARGYLE_API_VERSION": api}
        ours = _run_child(_ours, {"env": {**env, "LISTING_WINDOWS": str(WINDOWS)}, "account": account,
                                  "body": _webhook(sandbox, account), "latency": job_latency})
        # The same listing as one sequence (prefetch only): what the windows gain over it.
        sequential = None
        if latency is not None:  # into a table of its own, as the windows' run had
            sequential_stack = _fresh_stack(endpoint, f"{tag}{n}seq")
            sequential = _run_child(_ours, {"env": {**env, **sequential_stack.environment(), "LISTING_WINDOWS": "1"},
                                            "account": account, "body": _webhook(sandbox, account),
                                            "latency": job_latency})
            _check_copy(sequential_stack.tables["ActivitiesTable"], sandbox, account)
        _check_copy(stack.tables["ActivitiesTable"], sandbox, account)
        row: dict[str, Any] = {"bench": f"sync_{'latency' if latency is not None else 'zero'}", "api": api, "n": n,
                               **ours,
                               "activities_per_s": n / ours["wall_s"],
                               "argyle_calls_target": math.ceil(n / PAGE),
                               "activity_write_calls_target": math.ceil(n / 25)}
        if latency is not None:
            row["floor_s"] = math.ceil(n / PAGE) * latency.page_s
            row["of_floor"] = ours["wall_s"] / row["floor_s"]
            row["sequential"] = sequential
        naive: dict[str, Any] | None = None
        if naive_up_to is None or n <= naive_up_to:
            naive_stack = _fresh_stack(endpoint, f"naive{tag}{n}")
            naive = _run_child(_naive, {"env": env, "account": account, "latency": job_latency,
                                        "table": naive_stack.tables["ActivitiesTable"]})
            _check_copy(naive_stack.tables["ActivitiesTable"], sandbox, account)
            row["naive"] = naive
            row["naive_over_ours"] = naive["wall_s"] / ours["wall_s"]
        if latency is not None:
            _print_latency_row(n, "ours", row, row)
            if sequential is not None:
                _print_latency_row(n, "1 win", sequential, row)
            if naive is not None:
                _print_latency_row(n, "naive", naive, row)
            else:
                print(f"{'':>8} {'naive':>6} " + ("runs on the first API version only" if naive_up_to == -1 else
                                                  f"not run above N = {naive_up_to:,} (SYNC_BENCH_NAIVE_UP_TO)"))
        else:
            _print_row(n, "ours", row, row["argyle_calls_target"], row["activity_write_calls_target"])
            if naive is not None:
                _print_row(n, "naive", {**naive, "activity_write_calls": naive["dynamodb_write_calls"]},
                           math.ceil(n / 10), n)
                print(f"{'':>8} {'ratio':>6} naive takes {row['naive_over_ours']:.1f}x as long")
        rows.append(row)
    if len(rows) > 1:
        growth = rows[-1]["peak_rss_mb"] - rows[0]["peak_rss_mb"]
        verdict = "ok" if growth <= MEMORY_TARGET_MB else "OVER TARGET"
        print(f"peak memory at N={rows[-1]['n']:,} is {growth:+.1f} MB against N={rows[0]['n']:,} "
              f"(target <= {MEMORY_TARGET_MB} MB): {verdict}")
    if latency is not None:
        # The targets are for N >= 10,000 (below the window threshold a sync is short anyway).
        large = [r for r in rows if r["n"] >= 10_000]
        sequences = [r["sequential"]["wall_s"] / r["floor_s"] for r in large if r.get("sequential")]
        if sequences:
            worst = max(sequences)
            print(f"one sequence with prefetch, N >= 10,000: at most {worst:.2f}x floor (target <= {FLOOR_TARGET}x): "
                  f"{'ok' if worst <= FLOOR_TARGET else 'OVER TARGET'}")
        if large:
            worst_windowed = max(r["of_floor"] for r in large)
            print(f"{WINDOWS} windows, N >= 10,000: at most {worst_windowed:.2f}x floor (target <= "
                  f"{WINDOWS_FLOOR_TARGET}x): {'ok' if worst_windowed <= WINDOWS_FLOOR_TARGET else 'OVER TARGET'}")
    return rows


def _print_latency_row(n: int, label: str, run: dict[str, Any], ours: dict[str, Any]) -> None:
    dynamodb_calls = sum(run["dynamodb_calls"].values())
    of_floor = f"{run['wall_s'] / ours['floor_s']:.2f}x floor"
    ratio = f"{ours['naive_over_ours']:.1f}x" if label == "naive" else ""
    print(f"{n:>8,} {label:>6} {run['wall_s']:>8.1f} {ours['floor_s']:>8.1f} {of_floor:>12} {ratio:>10} "
          f"{run['argyle_calls']:>13,} {dynamodb_calls:>15,} {run['peak_rss_mb']:>8.1f} "
          f"{run['peak_rss_mb'] - run['baseline_rss_mb']:>8.1f}")


def _print_row(n: int, label: str, row: dict[str, Any], calls_target: int, writes_target: int) -> None:
    print(f"{n:>8,} {label:>6} {row['wall_s']:>8.1f} {n / row['wall_s']:>8.0f} {row['argyle_calls']:>13,} "
          f"{calls_target:>7,} {row['activity_write_calls']:>11,} {writes_target:>7,} "
          f"{row['dynamodb_write_calls']:>10,} {row['peak_rss_mb']:>8.1f} "
          f"{row['peak_rss_mb'] - row['baseline_rss_mb']:>8.1f}")


if __name__ == "__main__":
    run_sync_bench([int(n) for n in sys.argv[1].split(",")] if len(sys.argv) > 1 else None)
