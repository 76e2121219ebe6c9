"""What each Lambda function's code can ask of AWS, read from the code itself (no list kept by hand),
and what its role in template.yaml grants: the two are compared by test_iam_least_privilege.py.

How the code is read (Python's `ast`, nothing is imported or run):

1. The function's modules: its handler (template.yaml's CodeUri and Handler) and every
   first-party module it imports, at the top or inside a function, transitively.
2. What runs: a call graph by name, from the handler and every module's top-level code. A name
   that is called or merely referenced (a callback, `record_handler=handle_record`) reaches every
   function or method of that name in those modules: this over-approximates.
3. The adapters: a class whose body makes a boto3 client (`.client("dynamodb")`) is an adapter of
   that service; calls `self.<client>.<operation>(...)` in its methods are AWS calls. An adapter's
   method counts when code outside the class calls a method of that name (`x.accounts()`; a
   method named like a dict or list method, `get`, `count`, counts whenever the adapter is built);
   a bound method handed over uncalled (`map(store.x, ids)`) is not seen: call it instead. Its own
   helpers (`self._query`) are followed inside the class, carrying the `IndexName` its caller
   names. Powertools' idempotency layer is such an adapter too, read from the installed package:
   every AWS call it has is made on Powertools' own schedule. Powertools Parameters' `get_secret`
   is GetSecretValue.
4. The resource: the environment variable each adapter is built from (ADAPTER_RESOURCE_ENV), as
   template.yaml sets it for that function; a secret read is on every `*_SECRET_ID` it sets.
5. What the platform needs of the role, from template.yaml: its log group (LoggingConfig), X-Ray
   (Tracing), Lambda's SQS poller (an SQS event), and the customer key for SQS and Secrets Manager.

An AWS call outside an adapter (a client made in a handler, say) has no known resource: it is
reported, so that it is moved into argyle_pipeline/aws where the rest of AWS lives.
"""

from __future__ import annotations

import ast
import importlib.util
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SOURCE_ROOTS = [ROOT / "layers" / "shared", ROOT / "functions" / "receiver", ROOT / "functions" / "sync",
                ROOT / "functions" / "reconcile"]
FIRST_PARTY = ("argyle_pipeline", "receiver_handler", "sync_handler", "reconcile_handler")
SERVICES = ("dynamodb", "sqs", "secretsmanager", "events")

# Which environment variable names the resource an adapter works on. Each handler builds the
# adapter from it (sync/settings.py, receiving/settings.py, reconcile_handler.py).
ADAPTER_RESOURCE_ENV = {
    "ActivityStore": "ACTIVITIES_TABLE",
    "SyncStateStore": "SYNC_STATE_TABLE",
    "ArgyleBudgetStore": "SYNC_STATE_TABLE",
    "EventQueue": "EVENTS_QUEUE_URL",
    "DynamoDBPersistenceLayer": "IDEMPOTENCY_TABLE",
    "ChangeEventBus": "CHANGE_EVENT_BUS",
}
# Library classes that call AWS themselves once our code hands them a resource: the module to read.
LIBRARY_ADAPTERS = {
    "DynamoDBPersistenceLayer": "aws_lambda_powertools.utilities.idempotency.persistence.dynamodb",
}
# Library functions our code calls that make one AWS call each.
LIBRARY_CALLS = {"get_secret": ("secretsmanager", "GetSecretValue")}

# IAM authorizes some API operations as another action (Service Authorization Reference).
ACTION_OF_OPERATION = {
    ("sqs", "SendMessageBatch"): "SendMessage",
    ("sqs", "DeleteMessageBatch"): "DeleteMessage",
    ("sqs", "ChangeMessageVisibilityBatch"): "ChangeMessageVisibility",
}
# TransactWriteItems / TransactGetItems are authorized per item.
TRANSACT_ITEM_ACTION = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem",
                        "ConditionCheck": "ConditionCheckItem", "Get": "GetItem"}
# What Lambda's SQS poller does with the function's role (Lambda developer guide, "Using Lambda with SQS").
SQS_POLLER_ACTIONS = ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes")
TRACING_ACTIONS = ("xray:PutTraceSegments", "xray:PutTelemetryRecords")
LOG_ACTIONS = ("logs:CreateLogStream", "logs:PutLogEvents")
# The resource key of !If [HasKmsKeyArn, !Ref KmsKeyArn, !GetAtt CustomerKey.Arn]
CUSTOMER_KEY = "KmsKeyArn|CustomerKey"


@dataclass(frozen=True, order=True)
class Grant:
    action: str
    resource: str  # a logical id ("ActivitiesTable"), an index ("ActivitiesTable/index/ByStartKey"), "*"


@dataclass
class Need:
    """Why a function needs a grant: where in the code (or template) it comes from."""

    grant: Grant
    why: list[str] = field(default_factory=list)


@cache
def operations(service: str) -> dict[str, str]:
    """boto3 method name -> API operation name, from botocore's model of the service."""
    import botocore.session
    from botocore import xform_name

    model = botocore.session.get_session().get_service_model(service)
    return {xform_name(name): name for name in model.operation_names}


# --- reading modules ------------------------------------------------------------------------------

class Code:
    """Module sources by name, from disk unless `overrides` gives a module's text (to test the test)."""

    def __init__(self, overrides: Mapping[str, str] | None = None) -> None:
        self.overrides = dict(overrides or {})

    def path(self, module: str) -> Path | None:
        if module in LIBRARY_ADAPTERS.values():
            spec = importlib.util.find_spec(module)
            return Path(spec.origin) if spec and spec.origin else None
        parts = module.split(".")
        for root in SOURCE_ROOTS:
            for candidate in (root.joinpath(*parts).with_suffix(".py"), root.joinpath(*parts, "__init__.py")):
                if candidate.exists():
                    return candidate
        return None

    def exists(self, module: str) -> bool:
        return module in self.overrides or self.path(module) is not None

    @cache  # noqa: B019 - one Code per derivation; the cache dies with it
    def tree(self, module: str) -> ast.Module:
        if module in self.overrides:
            return ast.parse(self.overrides[module])
        path = self.path(module)
        assert path is not None, module
        return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))

    def where(self, module: str, node: ast.AST) -> str:
        path = self.path(module)
        shown = path.relative_to(ROOT) if path and path.is_relative_to(ROOT) else (path.name if path else module)
        return f"{shown}:{getattr(node, 'lineno', 0)}"


def import_closure(code: Code, handler_module: str) -> list[str]:
    """The handler's module and every first-party module it imports (anywhere in a module), plus the
    library adapters it names."""
    seen: list[str] = []
    pending = [handler_module]
    while pending:
        module = pending.pop()
        if module in seen or not code.exists(module):
            continue
        seen.append(module)
        for node in ast.walk(code.tree(module)):
            if isinstance(node, ast.Import):
                pending += [a.name for a in node.names if a.name.startswith(FIRST_PARTY)]
            elif isinstance(node, ast.ImportFrom) and node.module:
                if node.module.startswith(FIRST_PARTY):
                    pending.append(node.module)
                    pending += [f"{node.module}.{a.name}" for a in node.names
                                if code.exists(f"{node.module}.{a.name}")]
                pending += [LIBRARY_ADAPTERS[a.name] for a in node.names if a.name in LIBRARY_ADAPTERS]
    return seen


def _names_used(nodes: Iterable[ast.AST]) -> tuple[set[str], set[str]]:
    """Every name called or referenced in these nodes: bare names as they are, attribute names as
    ".name" (a method is only ever reached as an attribute); and, apart, the attribute names that
    are called (`store.accounts()`: what reaches an adapter's method, not a `data.accounts` read)."""
    names: set[str] = set()
    called: set[str] = set()
    for top in nodes:
        for node in ast.walk(top):
            if isinstance(node, ast.Name):
                names.add(node.id)
            elif isinstance(node, ast.Attribute):
                names.add("." + node.attr)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                called.add("." + node.func.attr)
    return names, called


# Methods of Python's own containers: a call `x.get(...)` may be any dict's, so an adapter method of
# such a name counts whenever its adapter is built (name adapter methods apart from these).
CONTAINER_METHODS = frozenset(name for kind in (dict, list, str, set, bytes, tuple) for name in dir(kind)
                              if not name.startswith("_"))


def _client_service(cls: ast.ClassDef) -> str | None:
    for node in ast.walk(cls):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "client"
                and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value in SERVICES):
            return str(node.args[0].value)
    return None


def _module_constants(tree: ast.Module) -> dict[str, str]:
    """Top-level `NAME = "text"` assignments (an index name kept in a constant)."""
    return {node.targets[0].id: node.value.value for node in tree.body
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)}


def _index_names(node: ast.AST, constants: Mapping[str, str]) -> set[str]:
    """The IndexName values named in `node`: literals, or the module's constants."""
    def text(value: ast.expr) -> str | None:
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            return value.value
        if isinstance(value, ast.Name) and value.id in constants:
            return constants[value.id]
        return None

    found: set[str] = set()
    for child in ast.walk(node):
        if isinstance(child, ast.keyword) and child.arg == "IndexName" and (name := text(child.value)):
            found.add(name)
        elif isinstance(child, ast.Dict):
            for key, value in zip(child.keys, child.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "IndexName" and (name := text(value)):
                    found.add(name)
    return found


@dataclass
class AwsCall:
    """One AWS call in the code: IAM actions (without resource yet), and where it is."""

    actions: list[str]
    index: set[str]  # IndexName constants at the call (or named by the calling method)
    where: str


def _actions(service: str, method: str, call: ast.Call) -> list[str]:
    operation = operations(service)[method]
    if operation in ("TransactWriteItems", "TransactGetItems"):
        kinds = {str(k.value) for node in ast.walk(call) if isinstance(node, ast.Dict)
                 for k in node.keys if isinstance(k, ast.Constant) and k.value in TRANSACT_ITEM_ACTION}
        return sorted(f"{service}:{TRANSACT_ITEM_ACTION[k]}" for k in kinds)
    return [f"{service}:{ACTION_OF_OPERATION.get((service, operation), operation)}"]


@dataclass
class Adapter:
    name: str
    module: str
    service: str
    methods: dict[str, ast.FunctionDef]
    library: bool
    constants: dict[str, str] = field(default_factory=dict)

    def calls_of(self, code: Code, method: str, index: set[str] | None = None,
                 seen: frozenset[str] = frozenset()) -> list[AwsCall]:
        """The AWS calls `method` makes, directly or through the adapter's own methods."""
        node = self.methods[method]
        own_index = _index_names(node, self.constants) or (index or set())
        calls: list[AwsCall] = []
        for child in ast.walk(node):
            if isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute):
                receiver, name = child.func.value, child.func.attr
                on_client = isinstance(receiver, ast.Attribute) and isinstance(receiver.value, ast.Name) \
                    and receiver.value.id == "self"
                if on_client and name in operations(self.service):
                    at_call = _index_names(child, self.constants) or own_index
                    calls.append(AwsCall(_actions(self.service, name, child), at_call,
                                         f"{self.name}.{method} at {code.where(self.module, child)}"))
            elif isinstance(child, ast.Attribute) and isinstance(child.value, ast.Name) and child.value.id == "self" \
                    and child.attr in self.methods and child.attr not in seen:
                # One of the adapter's own methods, called here or handed on to be called (a callback).
                calls += self.calls_of(code, child.attr, own_index, seen | {method})
        return calls


def adapters(code: Code, modules: list[str]) -> dict[str, Adapter]:
    found: dict[str, Adapter] = {}
    for module in modules:
        for node in code.tree(module).body:
            if isinstance(node, ast.ClassDef) and (service := _client_service(node)):
                methods = {f.name: f for f in node.body if isinstance(f, ast.FunctionDef)}
                found[node.name] = Adapter(node.name, module, service, methods,
                                           library=module in LIBRARY_ADAPTERS.values(),
                                           constants=_module_constants(code.tree(module)))
    return found


# --- what a function's code calls -----------------------------------------------------------------

@dataclass
class CodeNeeds:
    calls: dict[str, list[AwsCall]]  # by adapter (or "secrets" for LIBRARY_CALLS)
    outside_adapters: list[str]  # AWS calls with no adapter, hence no known resource


def code_needs(code: Code, handler: str) -> CodeNeeds:
    module, _, entry = handler.rpartition(".")
    modules = import_closure(code, module)
    found = adapters(code, modules)
    adapter_nodes = {id(a.methods[m]) for a in found.values() for m in a.methods}
    # Every function and class of our modules by name, every method by ".name" (module functions
    # too: `parameters.get_secret`); an adapter's methods are only reached from outside it.
    ours = [m for m in modules if m not in LIBRARY_ADAPTERS.values()]
    callables: dict[str, list[tuple[str, ast.AST]]] = {}
    for mod in ours:
        for node in ast.walk(code.tree(mod)):
            if isinstance(node, ast.ClassDef):
                callables.setdefault(node.name, []).append((mod, node))
                for item in node.body:
                    if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                        callables.setdefault("." + item.name, []).append((mod, item))
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not _is_method(code.tree(mod), node):
                callables.setdefault(node.name, []).append((mod, node))
                callables.setdefault("." + node.name, []).append((mod, node))
    roots: list[tuple[str, ast.AST]] = list(callables.get(entry, []))
    for mod in ours:  # top-level code runs at import
        roots += [(mod, n) for n in code.tree(mod).body
                  if not isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)]
    reached_names: set[str] = {entry}
    called_attributes: set[str] = set()
    visited: set[int] = set()
    pending = list(roots)
    while pending:
        mod, node = pending.pop()
        if id(node) in visited or id(node) in adapter_nodes:
            continue  # an adapter's own methods are followed inside it, with its index context
        visited.add(id(node))
        if isinstance(node, ast.ClassDef):
            # A class reached by name: its class body and __init__ run; its methods go by their names
            body: list[ast.AST] = [n for n in node.body if not isinstance(n, ast.FunctionDef)
                                   or n.name == "__init__"]
        else:
            body = [node]
        names, called = _names_used(body)
        called_attributes |= called
        for name in names - reached_names:
            reached_names.add(name)
            pending += callables.get(name, [])

    calls: dict[str, list[AwsCall]] = {}
    for adapter in found.values():
        if adapter.name not in reached_names:
            continue  # never built
        methods = adapter.methods if adapter.library else \
            {m for m in adapter.methods if not m.startswith("__")
             and ("." + m in called_attributes or m in CONTAINER_METHODS)}
        for method in methods:
            calls.setdefault(adapter.name, []).extend(adapter.calls_of(code, method))
    outside: list[str] = []
    all_operations = {op: service for service in SERVICES for op in operations(service)}
    for mod in ours:
        for owner, node in _calls_by_owner(code.tree(mod)):
            if owner is not None and (id(owner) not in visited or id(owner) in adapter_nodes):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in LIBRARY_CALLS:
                service, operation = LIBRARY_CALLS[name]
                calls.setdefault("secrets", []).append(
                    AwsCall([f"{service}:{operation}"], set(), f"{name}() at {code.where(mod, node)}"))
            elif (name in all_operations and isinstance(node.func, ast.Attribute)
                  and _looks_like_client(node.func.value)):
                outside.append(f"{all_operations[name]}.{name} at {code.where(mod, node)}")
    return CodeNeeds(calls, outside)


def _is_method(tree: ast.Module, function: ast.AST) -> bool:
    return any(function in node.body for node in ast.walk(tree) if isinstance(node, ast.ClassDef))


def _calls_by_owner(tree: ast.Module) -> Iterator[tuple[ast.FunctionDef | ast.AsyncFunctionDef | None, ast.Call]]:
    """Every call in the module with the top-level function or method it sits in (None: it runs at
    import, or in a class body)."""
    functions = (ast.FunctionDef, ast.AsyncFunctionDef)
    for top in tree.body:
        owned = [(top, top)] if isinstance(top, functions) else \
            [(item if isinstance(item, functions) else None, item) for item in top.body] \
            if isinstance(top, ast.ClassDef) else [(None, top)]
        for owner, part in owned:
            yield from ((owner, n) for n in ast.walk(part) if isinstance(n, ast.Call))


def _looks_like_client(receiver: ast.expr) -> bool:
    """`client.x(...)`, `self._client.x(...)`, `sqs.x(...)`, `boto3.client("sqs").x(...)`: a name
    that says client or a service, not any object with a method called `query`."""
    text = ast.unparse(receiver).lower()
    return "client" in text or any(service in text for service in SERVICES)


# --- template.yaml --------------------------------------------------------------------------------

def resource_key(expression: Any) -> str | None:
    """The logical id(s) an expression names: !Ref X / !GetAtt X.Arn -> X; ${X.Arn}/index/Y ->
    X/index/Y; !If [c, A, B] -> "A|B"; "*" -> "*"."""
    if expression == "*":
        return "*"
    if not isinstance(expression, dict) or len(expression) != 1:
        return None
    (function, argument), = expression.items()
    if function == "Ref":
        return str(argument)
    if function == "Fn::GetAtt":
        return str(argument[0] if isinstance(argument, list) else argument.split(".")[0])
    if function == "Fn::If":
        branches = [resource_key(b) for b in argument[1:]]
        return "|".join(b for b in branches if b) or None
    if function == "Fn::Sub" and isinstance(argument, str) and argument.startswith("${"):
        logical, _, rest = argument[2:].partition("}")
        return logical.split(".")[0] + rest
    return None


def function_properties(template: dict[str, Any], function: str) -> dict[str, Any]:
    props: dict[str, Any] = template["Resources"][function]["Properties"]
    return props


def environment_resources(template: dict[str, Any], function: str) -> dict[str, str]:
    variables = (function_properties(template, function).get("Environment") or {}).get("Variables") or {}
    return {name: key for name, value in variables.items() if (key := resource_key(value))}


@dataclass
class RoleGrant:
    grant: Grant
    sid: str
    resource_expression: Any
    conditional: bool  # inside !If (e.g. only with a customer key)


def role_of(template: dict[str, Any], function: str) -> str:
    role = function_properties(template, function).get("Role")
    assert isinstance(role, dict) and "Fn::GetAtt" in role, f"{function} has no explicit Role"
    return str(role["Fn::GetAtt"][0])


def role_grants(template: dict[str, Any], role: str) -> list[RoleGrant]:
    grants: list[RoleGrant] = []
    for policy in template["Resources"][role]["Properties"].get("Policies") or []:
        for statement in policy["PolicyDocument"]["Statement"]:
            conditional = isinstance(statement, dict) and set(statement) == {"Fn::If"}
            branches = statement["Fn::If"][1:] if conditional else [statement]
            for branch in branches:
                if not isinstance(branch, dict) or branch.get("Effect") != "Allow":
                    continue
                actions = branch["Action"] if isinstance(branch["Action"], list) else [branch["Action"]]
                resources = branch["Resource"] if isinstance(branch["Resource"], list) else [branch["Resource"]]
                for action in actions:
                    for resource in resources:
                        grants.append(RoleGrant(Grant(action, resource_key(resource) or json.dumps(resource)),
                                                branch.get("Sid", ""), resource, conditional))
    return grants


def platform_needs(template: dict[str, Any], function: str) -> Iterator[Need]:
    props = function_properties(template, function)
    group = resource_key((props.get("LoggingConfig") or {}).get("LogGroup"))
    for action in LOG_ACTIONS:
        yield Need(Grant(action, group or "(no LoggingConfig.LogGroup)"), ["Lambda writes the function's logs"])
    tracing = props.get("Tracing", template.get("Globals", {}).get("Function", {}).get("Tracing"))
    if tracing == "Active":
        for action in TRACING_ACTIONS:
            yield Need(Grant(action, "*"), ["Tracing: Active (X-Ray has no resource-level permissions)"])
    for name, event in (props.get("Events") or {}).items():
        if event.get("Type") == "SQS":
            queue = resource_key(event["Properties"]["Queue"]) or "?"
            for action in SQS_POLLER_ACTIONS:
                yield Need(Grant(action, queue), [f"Lambda's SQS poller (event {name})"])


def needs(template: dict[str, Any], function: str, code: Code | None = None) -> tuple[list[Need], list[str]]:
    """Every grant the function needs, with why; and the problems that stop a need being known."""
    code = code or Code()
    props = function_properties(template, function)
    found = code_needs(code, props["Handler"])
    env = environment_resources(template, function)
    by_grant: dict[Grant, Need] = {}
    problems = [f"{function} calls {c} outside argyle_pipeline/aws: move it into an adapter there, so that "
                f"its resource is known and its role can be checked" for c in found.outside_adapters]

    def add(grant: Grant, why: str) -> None:
        by_grant.setdefault(grant, Need(grant)).why.append(why)

    for adapter, calls in found.calls.items():
        if adapter == "secrets":
            resources = [key for name, key in env.items() if name.endswith("_SECRET_ID")]
            if not resources:
                problems.append(f"{function} reads a secret ({calls[0].where}) but its environment names none "
                                f"(*_SECRET_ID)")
        else:
            variable = ADAPTER_RESOURCE_ENV.get(adapter)
            if variable is None or variable not in env:
                problems.append(f"{function} builds {adapter}, whose resource its environment does not name "
                                f"(ADAPTER_RESOURCE_ENV: {variable}); name it there and in template.yaml")
                continue
            resources = [env[variable]]
        for call in calls:
            for resource in resources:
                targets = [f"{resource}/index/{i}" for i in sorted(call.index)] or [resource]
                for target in targets:
                    for action in call.actions:
                        add(Grant(action, target), call.where)
    for need in platform_needs(template, function):
        for why in need.why:
            add(need.grant, why)
    return sorted(by_grant.values(), key=lambda n: n.grant), problems


def customer_key_needs(code_grants: Iterable[Grant]) -> list[Grant]:
    """With a customer key, SQS and Secrets Manager use it on the caller's behalf: Decrypt to read
    (and to send: SQS checks the data key), GenerateDataKey to send."""
    grants = list(code_grants)
    services = {g.action.split(":")[0] for g in grants}
    wanted = []
    if services & {"sqs", "secretsmanager"}:
        wanted.append(Grant("kms:Decrypt", CUSTOMER_KEY))
    if any(g.action == "sqs:SendMessage" for g in grants):
        wanted.append(Grant("kms:GenerateDataKey", CUSTOMER_KEY))
    return wanted
