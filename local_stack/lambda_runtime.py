"""Runs the template's functions in this process, as Lambda would: the handler and the environment
are read from template.yaml, and the context object has the methods Powertools and the sync use.
This is what `make invoke` and the local stack use instead of `sam local invoke` (which needs Docker).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from local_stack.template_resources import TEMPLATE_PATH, StackResources, load_template

ROOT = TEMPLATE_PATH.parent


class LambdaContext:
    """The parts of Lambda's context object that handlers read."""

    def __init__(self, function_name: str, timeout_seconds: int = 900, memory_mb: int = 512) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = memory_mb
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class _Resolver:
    """Evaluates the intrinsic functions template.yaml uses in function environments."""

    def __init__(self, template: dict[str, Any], resources: StackResources, overrides: dict[str, str]) -> None:
        self.template = template
        self.resources = resources
        self.params = {name: str(p.get("Default", "")) for name, p in template.get("Parameters", {}).items()}
        self.params.update(overrides)

    def condition(self, name: str) -> bool:
        return bool(self.value(self.template["Conditions"][name]))

    def physical(self, logical: str) -> str:
        r = self.resources
        for mapping in (r.queue_urls, r.tables, r.secrets):
            if logical in mapping:
                return mapping[logical]
        return logical

    def value(self, node: Any) -> Any:
        if not isinstance(node, dict) or len(node) != 1:
            return node
        (fn, arg), = node.items()
        if fn == "Ref":
            return self.params[arg] if arg in self.params else self.physical(arg)
        if fn == "Fn::GetAtt":
            logical, attribute = arg
            if attribute == "Arn":
                return self.resources.queue_arns.get(logical, logical)
            if attribute == "QueueName":
                return self.resources.queue_urls[logical].rsplit("/", 1)[-1]
            return logical
        if fn == "Fn::If":
            cond, yes, no = arg
            return self.value(yes if self.condition(cond) else no)
        if fn == "Fn::Equals":
            return str(self.value(arg[0])) == str(self.value(arg[1]))
        if fn == "Fn::FindInMap":
            m, k1, k2 = (self.value(a) for a in arg)
            return self.template["Mappings"][m][k1][k2]
        if fn == "Fn::Sub":
            text = arg if isinstance(arg, str) else arg[0]
            for name, val in self.params.items():
                text = text.replace("${" + name + "}", val)
            return text
        return node


def function_definition(logical_id: str, template: dict[str, Any] | None = None) -> dict[str, Any]:
    template = template or load_template()
    resource = template["Resources"].get(logical_id)
    if not resource or resource["Type"] != "AWS::Serverless::Function":
        names = [n for n, r in template["Resources"].items() if r["Type"] == "AWS::Serverless::Function"]
        raise SystemExit(f"no function {logical_id!r} in template.yaml; functions: {', '.join(names)}")
    return dict(resource["Properties"])


def function_environment(logical_id: str, resources: StackResources, *, parameters: dict[str, str] | None = None,
                         template: dict[str, Any] | None = None) -> dict[str, str]:
    template = template or load_template()
    resolver = _Resolver(template, resources, parameters or {})
    env: dict[str, Any] = {}
    env.update(template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {}))
    env.update(function_definition(logical_id, template).get("Environment", {}).get("Variables", {}))
    return {name: str(resolver.value(value)) for name, value in env.items()}


def load_handler(logical_id: str, template: dict[str, Any] | None = None, *,
                 container: int = 0) -> Callable[[dict[str, Any], Any], Any]:
    """Import the function's handler from its CodeUri, as a new Lambda container would: module
    state (clients, caches) from an earlier load is dropped, so a new endpoint or table is used.
    `container` > 0 loads another copy of the module (its own name, its own state), for
    invocations that run at the same time, as Lambda runs them in separate containers."""
    props = function_definition(logical_id, template)
    code_dir = (ROOT / props["CodeUri"]).resolve()
    if str(code_dir) not in sys.path:
        sys.path.insert(0, str(code_dir))
    module_name, _, attr = props["Handler"].rpartition(".")
    if container:
        name = f"{module_name}__container{container}"
        sys.modules.pop(name, None)
        spec = importlib.util.spec_from_file_location(name, code_dir / f"{module_name.replace('.', '/')}.py")
        assert spec is not None and spec.loader is not None, f"cannot load {module_name} from {code_dir}"
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses and Powertools look their module up by name
        spec.loader.exec_module(module)
        copy: Callable[[dict[str, Any], Any], Any] = getattr(module, attr)
        return copy
    _forget_container_state(module_name)
    handler: Callable[[dict[str, Any], Any], Any] = getattr(importlib.import_module(module_name), attr)
    return handler


def sync_sends_through(sync_handler: Callable[..., Any], sqs: Any) -> None:
    """Build the loaded sync function's container with this SQS client for what it sends (its
    continuations): the local stack's carries SQS's deduplication window."""
    from argyle_pipeline.sync.settings import sync_settings

    module = sys.modules[sync_handler.__module__]
    module.set_runtime(module.build_runtime(sync_settings(), sqs=sqs))


def _forget_container_state(module_name: str) -> None:
    from aws_lambda_powertools.utilities import parameters
    from aws_lambda_powertools.utilities.parameters import base

    from argyle_pipeline.receiving.settings import receiver_settings
    from argyle_pipeline.sync.settings import sync_settings

    parameters.clear_caches()
    base.DEFAULT_PROVIDERS.clear()
    receiver_settings.cache_clear()
    sync_settings.cache_clear()
    sys.modules.pop(module_name, None)


def function_timeout(logical_id: str, template: dict[str, Any] | None = None) -> int:
    template = template or load_template()
    default = template.get("Globals", {}).get("Function", {}).get("Timeout", 3)
    return int(function_definition(logical_id, template).get("Timeout", default))


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def project_path(relative: str) -> Path:
    return (ROOT / relative).resolve()
