"""The static checks of an autoscale formula, as Batch validates one before any
evaluation (Batch document "Create an automatic scaling formula for scaling
compute nodes in a Batch pool"): every name resolved (service-defined variables,
user variables, constants), no assignment to a read-only variable, and every
operation, function and method call typed by the document's tables
(:mod:`hpcbatch.batch.autoscale.operations`). Errors are :class:`FormulaError`.
"""

from __future__ import annotations

from hpcbatch.batch.autoscale.operations import (
    FIXED_FUNCTIONS,
    FUNCTIONS,
    LIST_FUNCTIONS,
    MEMBERS,
    METHODS,
    UNARY,
    binary_type,
    operator_error,
)
from hpcbatch.batch.autoscale.syntax import Assign, Binary, Call, Cond, Member, Method, Node, Num, Ref, Str, Unary
from hpcbatch.batch.autoscale.values import (
    ANY,
    CONSTANTS,
    DOUBLE,
    METRIC,
    METRIC_VARIABLES,
    NODE_DEALLOCATION,
    NODE_DEALLOCATION_OPTIONS,
    READ_ONLY_VALUES,
    RW_CANONICAL,
    SERVICE_NAMES,
    STRING,
    TIMESTAMP,
    VEC,
    FormulaError,
    deallocation_error,
    type_of,
)


def _matches(types: list[str], signature: tuple[tuple[str, ...], ...]) -> bool:
    return len(types) == len(signature) and all(t == ANY or t in s for t, s in zip(types, signature, strict=True))


class Checker:
    """Resolves names and checks types before any evaluation, as Batch validates a formula."""

    def __init__(self) -> None:
        self.user: dict[str, str] = {}  # "$name" -> type of its latest assignment

    @staticmethod
    def fail(node: Node, reason: str) -> FormulaError:
        return FormulaError(reason, node.line, node.column)

    def check(self, statements: list[Node]) -> None:
        for statement in statements:
            if isinstance(statement, Assign):
                self.assign(statement)
            else:
                self.expr(statement)

    def assign(self, node: Assign) -> None:
        target = node.target
        if target in RW_CANONICAL:
            node.key = target
            kind = self.value(node.value)
            want = STRING if RW_CANONICAL[target] == NODE_DEALLOCATION else DOUBLE
            if kind not in (want, ANY):
                raise self.fail(node.value, f"{target} must be assigned a {want}, not a {kind}")
            literal = node.value
            if isinstance(literal, Str) or (isinstance(literal, Ref) and literal.kind == "const"):
                value = literal.value if isinstance(literal, Str) else literal.const
                if want == STRING and value not in NODE_DEALLOCATION_OPTIONS:
                    raise self.fail(literal, deallocation_error(value))
            return
        if target in SERVICE_NAMES:
            raise self.fail(node, f"cannot assign to the read-only service-defined variable {target}")
        if target in CONSTANTS:
            raise self.fail(node, f"cannot assign to the constant {target}")
        key = _user_key(target)
        if key in SERVICE_NAMES:
            raise self.fail(node, f"{target!r} is the name of a service-defined variable; write {key}")
        self.user[key] = self.value(node.value)
        node.key = key

    def ref(self, node: Ref) -> str:
        text = node.text
        if text in RW_CANONICAL:
            node.kind, node.key = "rw", text
            return STRING if RW_CANONICAL[text] == NODE_DEALLOCATION else DOUBLE
        if text in READ_ONLY_VALUES:
            node.kind, node.key = "ro", READ_ONLY_VALUES[text]
            return DOUBLE
        if text in METRIC_VARIABLES:
            node.kind, node.key = "metric", text
            return METRIC
        if text in CONSTANTS:
            node.kind, node.const = "const", CONSTANTS[text]
            return type_of(node.const)
        key = _user_key(text)
        if key in self.user:
            node.kind, node.key = "user", key
            return self.user[key]
        if key in SERVICE_NAMES:
            raise self.fail(node, f"unknown variable {text!r}; service-defined variables start with '$': {key}")
        raise self.fail(node, f"unknown variable {text!r}")

    def expr(self, node: Node) -> str:
        match node:
            case Num():
                return DOUBLE
            case Str():
                return STRING
            case Ref():
                return self.ref(node)
            case Unary(op=op, operand=operand):
                kind = self.value(operand)
                if kind == ANY:
                    return ANY
                if (op, kind) not in UNARY:
                    raise self.fail(node, f"operator '{op}' cannot be applied to a {kind}")
                return UNARY[op, kind]
            case Binary(op=op, left=left, right=right):
                lt, rt = self.value(left), self.value(right)
                result = binary_type(op, lt, rt)
                if result is None:
                    raise self.fail(node, operator_error(op, lt, rt))
                return result
            case Cond(test=test, then=then, other=other):
                kind = self.value(test)
                if kind not in (DOUBLE, ANY):
                    raise self.fail(test, f"the condition of '?:' must be a double, not a {kind}")
                a, b = self.value(then), self.value(other)
                return a if a == b else ANY
            case Member(obj=obj, name=name):
                kind = self.value(obj)
                if kind not in (TIMESTAMP, ANY):
                    raise self.fail(node, f"a {kind} has no member {name!r}; only timestamps have members")
                if name not in MEMBERS:
                    raise self.fail(node, f"unknown timestamp member {name!r}; members are {', '.join(MEMBERS)}")
                return DOUBLE
            case Method(target=target, name=name, args=args):
                if not (isinstance(target, Ref) and self.ref(target) == METRIC):
                    raise self.fail(node, f"{name}() is a method of metric variables such as $CPUPercent")
                if name not in METHODS:
                    raise self.fail(node, f"unknown method {name!r}; methods are {', '.join(METHODS)}")
                result, signatures, spelled = METHODS[name]
                types = [self.value(a) for a in args]
                if not any(_matches(types, s) for s in signatures):
                    raise self.fail(node, f"{name} takes {spelled}; got ({', '.join(types)})")
                return result
            case Call(name=name, args=args):
                return self.call(node, name, [self.value(a) for a in args])
        raise AssertionError(node)  # pragma: no cover

    def value(self, node: Node) -> str:
        kind = self.expr(node)
        if kind == METRIC:
            raise self.fail(node, _metric_value_error(node))
        return kind

    def call(self, node: Call, name: str, types: list[str]) -> str:
        if name not in FUNCTIONS:
            raise self.fail(node, f"unknown function {name!r}")
        if name in LIST_FUNCTIONS:
            for t in types:
                if t not in (DOUBLE, VEC, ANY):
                    raise self.fail(node, f"{name}() takes a doubleVecList (doubles and doubleVecs), not a {t}")
            if name in ("lg", "ln", "log"):
                return types[0] if len(types) == 1 and types[0] != VEC else VEC
            return DOUBLE
        result, signatures, spelled = FIXED_FUNCTIONS[name]
        if not any(_matches(types, signature) for signature in signatures):
            raise self.fail(node, f"{name}() takes {spelled}; got ({', '.join(types)})")
        return result


def _user_key(text: str) -> str:
    return text if text.startswith("$") else "$" + text


def _metric_value_error(node: Node) -> str:
    name = node.text if isinstance(node, Ref) else "a metric"
    return f"{name} is a metric: read its samples with a method, e.g. {name}.GetSample(TimeInterval_Minute * 5)"
