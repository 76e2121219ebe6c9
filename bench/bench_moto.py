"""The benchmarks' DynamoDB and SQS: moto's server, serialised as the local stack's, with one cost
of moto's own taken out. `python -m bench.bench_moto PORT`.

moto reads every DynamoDB request twice over: `json.loads`, then a walk of the result along
botocore's shape of the operation (for DynamoDB's JSON protocol the walk returns the same dict:
strings stay strings, numbers travel as strings inside `N`). For a sync of 10,000 activities
that walk is about a third of moto's CPU, and moto's CPU is not what production pays: in the
latency model a DynamoDB call costs its 6 ms, not a share of the benchmark machine's two cores.
So here DynamoDB's request parameters are the parsed JSON body itself. Nothing the sync sends
has a blob or a timestamp (the two shapes the walk would convert), and each benchmark run checks
that the table holds exactly the activities Argyle serves.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from typing import Any


def plain_json_parameters() -> None:
    from moto.dynamodb.responses import DynamoHandler

    def parse_parameters(self: Any, request: Any) -> None:
        self.params = json.loads(request.data or b"{}")

    DynamoHandler.parse_parameters = parse_parameters  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    from moto.server import ThreadedMotoServer

    from local_stack.serialized_moto import serialize_requests

    port = int(argv[0])
    plain_json_parameters()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    serialize_requests(server._server)  # moto's backends are not safe for concurrent requests
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    stopped.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
