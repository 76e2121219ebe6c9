"""The mutants of one source file: each changes one operator, constant, condition or statement.

Positions come from the AST, replacements from `ast.unparse` of the changed node, spliced into the
original bytes (AST columns count UTF-8 bytes). What cannot change behaviour that a user notices is
not mutated: docstrings, annotations, f-strings, and calls that only log or count.
"""

from __future__ import annotations

import ast
import copy
import hashlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace

NO_MUTATE = "pragma: no mutate"
_QUIET_CALLERS = frozenset({"logger", "log", "_log", "LOG", "metrics", "tracer"})
_QUIET_METHODS = frozenset({"debug", "info", "warning", "error", "exception", "critical",
                            "add_metric", "add_dimension", "add_metadata", "put_annotation"})

_COMPARE_SWAPS: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
}
_BINOP_SWAPS: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Mult,
    ast.Mod: ast.FloorDiv, ast.BitOr: ast.BitAnd, ast.BitAnd: ast.BitOr,
}


@dataclass(frozen=True)
class Mutant:
    path: str  # relative to the repository
    line: int
    col: int  # UTF-8 byte offsets, as the AST gives them
    end_line: int
    end_col: int
    original: str
    replacement: str
    twin: bool = False  # another mutant of this line reads the same: its column tells them apart

    @property
    def key(self) -> str:
        digest = hashlib.sha256(self.replacement.encode()).hexdigest()[:10]
        return f"{self.path}:{self.line}:{self.col}:{self.end_line}:{self.end_col}:{digest}"

    def describe(self) -> str:
        where = f"{self.path}:{self.line}" + (f":{self.col + 1}" if self.twin else "")
        return f"{where}: {_one_line(self.original)} -> {_one_line(self.replacement)}"

    def apply(self, source: bytes) -> bytes:
        starts = _line_starts(source)
        begin = starts[self.line - 1] + self.col
        end = starts[self.end_line - 1] + self.end_col
        return source[:begin] + self.replacement.encode() + source[end:]


def _one_line(text: str, width: int = 70) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def _line_starts(source: bytes) -> list[int]:
    starts = [0]
    for index, byte in enumerate(source):
        if byte == 0x0A:
            starts.append(index + 1)
    return starts


def mutants_of(path: str, source: bytes) -> list[Mutant]:
    """Every mutant of `source`, in the order of the file."""
    tree = ast.parse(source)
    text = source.decode()
    lines = text.splitlines()
    skipped = {number for number, line in enumerate(lines, start=1) if NO_MUTATE in line}
    found: dict[str, Mutant] = {}
    for node, replacement in _Finder(tree).changes():
        if not isinstance(node, ast.expr | ast.stmt) or node.lineno in skipped:
            continue
        original = ast.get_source_segment(text, node) or ast.unparse(node)
        if replacement == original:
            continue
        mutant = Mutant(path, node.lineno, node.col_offset, node.end_lineno or node.lineno,
                        node.end_col_offset or node.col_offset, original, replacement)
        found.setdefault(mutant.key, mutant)
    readings = Counter(m.describe() for m in found.values())
    return sorted((replace(m, twin=True) if readings[m.describe()] > 1 else m for m in found.values()),
                  key=lambda m: (m.line, m.col, m.replacement))


def _expression(node: ast.expr) -> str:
    return f"({ast.unparse(node)})"


class _Finder:
    def __init__(self, tree: ast.Module) -> None:
        self.tree = tree
        self.quiet: set[int] = set()
        self._mark_quiet(tree)

    def _mark_quiet(self, tree: ast.Module) -> None:
        def hush(node: ast.AST | None) -> None:
            if node is not None:
                self.quiet.update(id(inner) for inner in ast.walk(node))

        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                hush(node.returns)
                for arg in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs,
                            node.args.vararg, node.args.kwarg):
                    if arg is not None:
                        hush(arg.annotation)
                for decorator in node.decorator_list:
                    hush(decorator)
            if isinstance(node, ast.AnnAssign):
                hush(node.annotation)
            if isinstance(node, ast.JoinedStr):
                hush(node)
            if isinstance(node, ast.Call) and _is_quiet_call(node):
                hush(node)
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and _is_quiet_call(node.value):
                hush(node)
            if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
                hush(node)
            body = getattr(node, "body", None)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and body:
                first = body[0]
                if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                        and isinstance(first.value.value, str):
                    hush(first)

    def changes(self) -> Iterator[tuple[ast.AST, str]]:
        for node in ast.walk(self.tree):
            if id(node) in self.quiet:
                continue
            yield from self._changes_of(node)

    def _changes_of(self, node: ast.AST) -> Iterator[tuple[ast.AST, str]]:
        if isinstance(node, ast.Compare):
            for index, op in enumerate(node.ops):
                swap = _COMPARE_SWAPS.get(type(op))
                if swap is not None:
                    changed = copy.deepcopy(node)
                    changed.ops[index] = swap()
                    yield node, _expression(changed)
            for operand in (node.left, *node.comparators):
                if isinstance(operand, ast.Constant) and isinstance(operand.value, str):
                    yield operand, repr(f"XX{operand.value}XX")
        elif isinstance(node, ast.BinOp):
            swap_op = _BINOP_SWAPS.get(type(node.op))
            if swap_op is not None:
                arithmetic = copy.deepcopy(node)
                arithmetic.op = swap_op()
                yield node, _expression(arithmetic)
        elif isinstance(node, ast.BoolOp):
            logic = copy.deepcopy(node)
            logic.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
            yield node, _expression(logic)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            yield node, _expression(node.operand)
        elif isinstance(node, ast.Constant) and not isinstance(node.value, str | bytes):
            yield from self._constant(node)
        elif isinstance(node, ast.AugAssign):
            yield node, ast.unparse(ast.Assign(targets=[node.target], value=node.value, lineno=0))
            swap_op = _BINOP_SWAPS.get(type(node.op))
            if swap_op is not None:
                assignment = copy.deepcopy(node)
                assignment.op = swap_op()
                yield node, ast.unparse(assignment)
        elif isinstance(node, ast.Return) and node.value is not None:
            if not (isinstance(node.value, ast.Constant) and node.value.value is None):
                yield node, "return None"
        elif isinstance(node, ast.If | ast.While | ast.IfExp) and not isinstance(node.test, ast.Compare | ast.UnaryOp):
            yield node.test, f"(not {_expression(node.test)})"
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            yield node, "None"
        elif isinstance(node, ast.Break):
            yield node, "continue"
        elif isinstance(node, ast.Continue):
            yield node, "break"

    @staticmethod
    def _constant(node: ast.Constant) -> Iterator[tuple[ast.AST, str]]:
        value = node.value
        if isinstance(value, bool):
            yield node, repr(not value)
        elif isinstance(value, int | float):
            yield node, repr(value + 1)
            if value not in (0, 1):
                yield node, "0"


def _is_quiet_call(node: ast.Call) -> bool:
    func = node.func
    if not isinstance(func, ast.Attribute):
        return False
    if isinstance(func.value, ast.Name) and func.value.id in _QUIET_CALLERS:
        return True
    return func.attr in _QUIET_METHODS and isinstance(func.value, ast.Name) and func.value.id.endswith("logger")
