"""A long-lived process per worker: heavy imports once, then one forked child per mutant.

Starting `python -m pytest` for every mutant pays, before the first test runs, for the interpreter,
pytest and its plugins, boto3/botocore, moto, pydantic, Powertools and hypothesis. This server pays
for them once: it imports them (and no module from the worker's copy, so each child imports the
project fresh, mutated), then for each request forks a child that runs `pytest.main` in the copy and
exits with pytest's code. The server starts no thread: a forked child inherits every lock as it was.

Run as a script (`python fork_server.py --copy DIR`), so that nothing is imported from a package.
Protocol, one JSON object a line: the server prints {"ready": ...} once it has imported, then reads
{"args": [...], "timeout": seconds, "output": path} and answers {"code": int | null} (null: the
child ran out of time and its process group was killed). End of input stops the server.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import os
import select
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import NoReturn

# Third-party modules the suite imports, heaviest first in practice (hypothesis alone is over a second).
PRELOAD = (
    "pytest", "_pytest.config", "_hypothesis_pytestplugin", "hypothesis", "hypothesis.strategies",
    "boto3", "boto3.dynamodb.conditions", "boto3.dynamodb.types", "botocore.session", "botocore.client",
    "botocore.config", "botocore.exceptions", "botocore.awsrequest", "botocore.endpoint",
    "moto", "moto.core.models", "moto.backends", "moto.server", "moto.dynamodb.models", "moto.sqs.models",
    "moto.secretsmanager.models", "moto.events.models", "moto.cloudformation.models",
    "pydantic", "aws_lambda_powertools", "aws_lambda_powertools.logging", "aws_lambda_powertools.metrics",
    "aws_lambda_powertools.tracing", "aws_lambda_powertools.utilities.batch",
    "aws_lambda_powertools.utilities.idempotency", "aws_lambda_powertools.utilities.parameters",
    "aws_lambda_powertools.utilities.data_classes.sqs_event", "aws_xray_sdk.core",
    "requests", "urllib3", "yaml", "cryptography", "werkzeug", "flask", "jinja2",
)
CHILD_FAILED = 70  # the child could not run pytest at all (its traceback is in the output file)


def preload(modules: list[str], copy: Path) -> list[str]:
    """Imports `modules` and pytest's own plugins; refuses a module from the copy or a started thread."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)  # an optional extra: the child imports what it needs
    if "pytest" in sys.modules:
        from _pytest.config import default_plugins

        for plugin in default_plugins:
            importlib.import_module(f"_pytest.{plugin}")
    installed = Path(sys.prefix).resolve()  # a virtual environment inside the repository is not the project
    itself = Path(__file__).resolve()
    inside = sorted(name for name, file in ((name, getattr(module, "__file__", None))
                                            for name, module in list(sys.modules.items()))
                    if _is_under(file, copy) and not _is_under(file, installed) and Path(str(file)).resolve() != itself)
    if inside:
        raise SystemExit(f"fork server: preloading imported the project's own modules {inside}: "
                         "a child would run them unmutated")
    if threading.active_count() > 1:
        raise SystemExit(f"fork server: preloading started threads {threading.enumerate()}: forking would copy "
                         "their locks in whatever state they were")
    return missing


def _is_under(file: str | None, directory: Path) -> bool:
    return file is not None and Path(file).resolve().is_relative_to(directory)


def run_child(args: list[str], output: str, copy: Path) -> NoReturn:
    """In the forked child: its own process group, output to a file, pytest in the copy; never returns."""
    code = CHILD_FAILED
    try:
        os.setpgid(0, 0)
        written = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(written, 1)
        os.dup2(written, 2)
        os.close(written)
        nothing = os.open(os.devnull, os.O_RDONLY)
        os.dup2(nothing, 0)
        os.close(nothing)
        os.chdir(copy)
        sys.path.insert(0, str(copy))  # as `python -m pytest` run in the copy would have it
        import pytest

        # pytest.main returns after the session's fixtures are finalised (moto servers stopped).
        code = int(pytest.main(args))
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)  # not the server's exit handlers, not its buffers a second time


def run_one(args: list[str], timeout: float, output: str, copy: Path) -> int | None:
    """Forks a child for one pytest run; its exit code, or None when it ran out of time."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        run_child(args, output, copy)
    with contextlib.suppress(OSError):  # it has, or it already ran and exited
        os.setpgid(pid, pid)  # also here: the child may not have done it yet when we kill it
    try:
        status = _wait(pid, timeout)
    finally:
        _kill_group(pid)  # whatever the tests started and left behind; every run on a timeout
    if status is None:
        os.waitpid(pid, 0)
        return None
    return os.waitstatus_to_exitcode(status)


def _wait(pid: int, timeout: float) -> int | None:
    """The child's wait status, or None at the deadline. End of the server's input stops the server."""
    deadline = time.monotonic() + timeout
    watched = os.pidfd_open(pid) if hasattr(os, "pidfd_open") else None
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            # Input while a child runs can only be its end: the runner is gone.
            ready, _, _ = select.select([sys.stdin.fileno(), *([watched] if watched is not None else [])], [], [],
                                        min(remaining, 0.05) if watched is None else remaining)
            if sys.stdin.fileno() in ready:
                _kill_group(pid)
                os.waitpid(pid, 0)
                raise SystemExit(0)
    finally:
        if watched is not None:
            os.close(watched)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # nothing left in the group
        os.killpg(pid, signal.SIGKILL)


def _reply(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copy", required=True, type=Path, help="the worker's copy of the repository")
    parser.add_argument("--preload", default=",".join(PRELOAD), help="comma-separated modules to import once")
    options = parser.parse_args()
    copy = options.copy.resolve()
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        del sys.path[0]  # this script's folder: its neighbours are not the tests' modules
    missing = preload([name for name in options.preload.split(",") if name], copy)
    # The preloaded objects live as long as the server: out of every collection, so that a child's
    # gc.collect (pytest runs five at the end of a session) scans only what the child made.
    gc.freeze()
    _reply({"ready": True, "pid": os.getpid(), "not_installed": missing})
    while True:
        line = sys.stdin.readline()
        if not line:
            return 0
        request = json.loads(line)
        code = run_one(list(request["args"]), float(request["timeout"]), str(request["output"]), copy)
        _reply({"code": code})


if __name__ == "__main__":
    sys.exit(main())
