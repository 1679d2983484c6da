"""The syntax tree of an autoscale formula: the statements and expressions of the
Batch document "Create an automatic scaling formula for scaling compute nodes in a
Batch pool", as :mod:`hpcbatch.batch.autoscale.parser` builds them,
:mod:`hpcbatch.batch.autoscale.checker` resolves and types them and
:mod:`hpcbatch.batch.autoscale.evaluator` walks them.
"""

from __future__ import annotations

from dataclasses import dataclass

from hpcbatch.batch.autoscale.values import Value


@dataclass
class Node:
    """A statement or an expression, at the 1-based line and column of its first token."""

    line: int
    column: int


@dataclass
class Num(Node):
    value: float


@dataclass
class Str(Node):
    value: str


@dataclass
class Ref(Node):
    text: str  # as written: "$x", "x", "$CPUPercent", "TimeInterval_Minute"
    kind: str = ""  # set by the checker: user | rw | ro | metric | const
    key: str = ""  # user: "$x"; rw: the name written; ro: snapshot attribute; const: ""
    const: Value | None = None


@dataclass
class Unary(Node):
    op: str
    operand: Node


@dataclass
class Binary(Node):
    op: str
    left: Node
    right: Node


@dataclass
class Cond(Node):
    test: Node
    then: Node
    other: Node


@dataclass
class Call(Node):
    name: str
    args: list[Node]
    end_line: int = 0


@dataclass
class Method(Node):
    target: Node
    name: str
    args: list[Node]


@dataclass
class Member(Node):
    obj: Node
    name: str


@dataclass
class Assign(Node):
    target: str
    value: Node
    end_line: int = 0
    key: str = ""  # set by the checker
