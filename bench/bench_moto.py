"""The benchmarks' DynamoDB and SQS: moto's server, serialised as the local stack's, with four
costs of moto's own taken out. `python -m bench.bench_moto PORT`.

moto's CPU is not what production pays: in the latency model a DynamoDB call costs its 6 ms, not
a share of the benchmark machine's two cores, which the sync under test needs. So:
- DynamoDB's request parameters are the parsed JSON body itself. moto otherwise walks the parsed
  body again along botocore's shape of the operation, which for DynamoDB's JSON protocol returns
  the same dict (strings stay strings, numbers travel as strings inside `N`): about a third of
  its CPU for a large sync. Nothing the sync sends has a blob or a timestamp, the two shapes the
  walk would convert.
- An item's size (DynamoDB's 400 KB limit) is added up once per attribute, not re-measured over
  every attribute already set each time one more is set.
- No log line per request, and the garbage collector runs far less often.
- Keep-alive (HTTP/1.1), as DynamoDB's and SQS's endpoints: werkzeug's default HTTP/1.0 closed
  every connection after one call, so each call paid a new connection and a new server thread.
Each benchmark run checks that the table holds exactly the activities Argyle serves, through
`GET /_bench/activity-ids?table=T&account=A&region=R`: the account's live activity ids, read from
moto's store directly (a paginated Query of 100,000 items costs moto minutes: it sorts the whole
partition again for every page).
"""

from __future__ import annotations

import gc
import json
import logging
import signal
import sys
import threading
from typing import Any
from urllib.parse import parse_qs


def plain_json_parameters() -> None:
    from moto.dynamodb.responses import DynamoHandler

    def parse_parameters(self: Any, request: Any) -> None:
        self.params = json.loads(request.data or b"{}")

    DynamoHandler.parse_parameters = parse_parameters  # type: ignore[method-assign]


def item_size_added_up() -> None:
    from moto.dynamodb.exceptions import ItemSizeTooLarge
    from moto.dynamodb.models import dynamo_type
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.utilities import bytesize

    def size_of(key: str, value: Any) -> int:
        return bytesize(key) + (value.size() if type(value) is DynamoType else bytesize(str(value)))

    def setitem(self: Any, key: str, value: Any) -> None:
        total = self.__dict__.get("_size")
        if total is None:  # first set (the constructor's update() sets no size): measure what is there
            total = sum(size_of(k, v) for k, v in self.items())
        if key in self:
            total -= size_of(key, dict.__getitem__(self, key))
        total += size_of(key, value)
        if total > 405000:  # moto's own limit (DynamoDB refuses between 409 and 410 KB)
            raise ItemSizeTooLarge
        self.__dict__["_size"] = total
        dict.__setitem__(self, key, value)

    dynamo_type.LimitedSizeDict.__setitem__ = setitem  # type: ignore[method-assign]


def live_activity_ids(table_name: str, account: str, region: str) -> list[str]:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends

    table = dynamodb_backends[DEFAULT_ACCOUNT_ID][region].get_table(table_name)
    for hash_key, items in table.items.items():
        if hash_key.value == account:
            return [range_key.value for range_key, item in items.items() if "removed_at" not in item.attrs]
    return []


def with_inspection(app: Any) -> Any:
    """moto's WSGI app, plus the benchmark's read of an account's stored ids."""
    def inspecting(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") != "/_bench/activity-ids":
            return app(environ, start_response)
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        body = json.dumps(live_activity_ids(query["table"], query["account"], query["region"])).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    return inspecting


def main(argv: list[str]) -> int:
    from moto.server import MotoRequestHandler, ThreadedMotoServer

    from local_stack.serialized_moto import serialize_requests

    port = int(argv[0])
    # moto keeps every stored item as objects, and each full collection walks them all: collect
    # once per 100,000 allocations instead of 700 (the garbage here is per request, and small).
    gc.freeze()
    gc.set_threshold(100_000, 100, 100)
    plain_json_parameters()
    item_size_added_up()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    # Keep-alive, as AWS's endpoints (see the docstring).
    MotoRequestHandler.protocol_version = "HTTP/1.1"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    assert server._server is not None
    server._server.app = with_inspection(server._server.app)
    serialize_requests(server._server)  # moto's backends are not safe for concurrent requests
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    stopped.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
