"""Parsing an autoscale formula: the grammar of the Batch document "Create an
automatic scaling formula for scaling compute nodes in a Batch pool" (statements,
expressions, comments), its size limits (8 KB, 100 statements; and ours, the
nesting depth), and syntax errors shaped as Batch's ``InvalidAutoScaleFormula``.
:func:`parse_formula` ends with the static checks of
:mod:`hpcbatch.batch.autoscale.checker`.

The lark parser is built on first use (:func:`_parser`), not on import.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from lark.tree import Meta

from hpcbatch.batch.autoscale.checker import Checker
from hpcbatch.batch.autoscale.syntax import Assign, Binary, Call, Cond, Member, Method, Node, Num, Ref, Str, Unary
from hpcbatch.batch.autoscale.values import MAX_FORMULA_BYTES, MAX_NESTING, MAX_STATEMENTS, FormulaError

# -- grammar and syntax tree ----------------------------------------------------------

GRAMMAR = r"""
formula: _item*
_item: statement | SEMI
?statement: assign | call

assign: (VARIABLE | NAME) "=" expr

?expr: ternary
?ternary: or_expr
        | or_expr "?" ternary ":" ternary              -> ternary
?or_expr: and_expr | or_expr OR and_expr               -> binop
?and_expr: eq_expr | and_expr AND eq_expr              -> binop
?eq_expr: rel_expr | eq_expr (EQ | NE) rel_expr        -> binop
?rel_expr: add_expr | rel_expr (LT | LE | GT | GE) add_expr -> binop
?add_expr: mul_expr | add_expr (PLUS | MINUS) mul_expr -> binop
?mul_expr: unary | mul_expr (STAR | SLASH) unary       -> binop
?unary: postfix | (MINUS | BANG) unary                 -> unop
?postfix: atom
        | postfix "." NAME "(" args ")"                -> method
        | postfix "." NAME                             -> member
?atom: NUMBER                                          -> number
     | STRING                                          -> string
     | VARIABLE                                        -> var
     | NAME                                            -> var
     | call
     | "(" expr ")"
call: NAME "(" args ")"
args: (expr ("," expr)*)?

SEMI: ";"
OR: "||"
AND: "&&"
EQ: "=="
NE: "!="
LT: "<"
LE: "<="
GT: ">"
GE: ">="
PLUS: "+"
MINUS: "-"
STAR: "*"
SLASH: "/"
BANG: "!"
NUMBER: /(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?/
STRING: /"[^"\n]*"|'[^'\n]*'/
VARIABLE: /\$[A-Za-z_]\w*/
NAME: /[A-Za-z_]\w*/
COMMENT: /\/\/[^\n]*/ | /\/\*[\s\S]*?\*\//
%ignore COMMENT
%ignore /\s+/
"""


@functools.cache
def _parser() -> Lark:
    """The formula parser, built on first use (node processes import this package for
    :class:`MetricsSnapshot` only and never parse a formula)."""
    return Lark(GRAMMAR, start="formula", parser="lalr", propagate_positions=True)


def _where(token: Token) -> tuple[int, int]:
    """A token's line and column (lark sets both on every token it lexes)."""
    assert token.line is not None and token.column is not None
    return token.line, token.column


class _ToAst(Transformer[Token, list[Any]]):
    """Turns lark's parse tree into the small syntax tree the checker and evaluator walk.

    Each method gets the node's children: tokens, nodes already turned, and
    argument lists (lark types them ``Any``).
    """

    def number(self, c: list[Token]) -> Num:
        return Num(*_where(c[0]), float(c[0]))

    def string(self, c: list[Token]) -> Str:
        return Str(*_where(c[0]), str(c[0])[1:-1])

    def var(self, c: list[Token]) -> Ref:
        return Ref(*_where(c[0]), str(c[0]))

    def args(self, c: list[Node]) -> list[Node]:
        return list(c)

    def binop(self, c: list[Any]) -> Binary:
        left, op, right = c
        return Binary(op.line, op.column, str(op), left, right)

    def unop(self, c: list[Any]) -> Unary:
        op, operand = c
        return Unary(op.line, op.column, str(op), operand)

    def ternary(self, c: list[Node]) -> Cond:
        return Cond(c[0].line, c[0].column, *c)

    def method(self, c: list[Any]) -> Method:
        target, name, args = c
        return Method(name.line, name.column, target, str(name), args)

    def member(self, c: list[Any]) -> Member:
        obj, name = c
        return Member(name.line, name.column, obj, str(name))

    @v_args(meta=True)
    def call(self, meta: Meta, c: list[Any]) -> Call:
        return Call(c[0].line, c[0].column, str(c[0]), c[1], end_line=meta.end_line)

    @v_args(meta=True)
    def assign(self, meta: Meta, c: list[Any]) -> Assign:
        return Assign(c[0].line, c[0].column, str(c[0]), c[1], end_line=meta.end_line)

    def formula(self, c: list[Node | Token]) -> list[Node | Token]:
        return list(c)


@dataclass(frozen=True)
class Formula:
    """A parsed, checked autoscale formula; evaluate it any number of times.

    Attributes
    ----------
    text
        The formula as written.
    statements
        Its statements (syntax tree nodes), in order.
    """

    text: str
    statements: tuple[Node, ...]

    def __str__(self) -> str:
        return self.text


# -- parsing --------------------------------------------------------------------------

@functools.cache
def _terminal_names() -> dict[str, str]:
    names = {"NUMBER": "a number", "STRING": "a string", "VARIABLE": "a $variable", "NAME": "a name"}
    names |= {t.name: f"'{t.pattern.value}'" for t in _parser().terminals if t.pattern.type == "str"}
    names["$END"] = "end of formula"
    return names


def _position(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def _one_of(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _syntax_error(text: str, exc: UnexpectedInput) -> FormulaError:
    if isinstance(exc, UnexpectedCharacters):
        char = text[exc.pos_in_stream] if exc.pos_in_stream is not None else ""
        return FormulaError(f"unexpected character {char!r}", exc.line, exc.column)
    assert isinstance(exc, UnexpectedToken)
    token = exc.token
    expected = sorted({_terminal_names().get(name, name) for name in exc.expected})
    hint = f"; expected {_one_of(expected)}" if expected else ""
    if token.type == "$END":
        line, column = _position(text, len(text.rstrip()))
        return FormulaError(f"unexpected end of formula{hint}", line, column)
    return FormulaError(f"unexpected token '{token.value}'{hint}", token.line, token.column)


def _check_nesting(tree: Tree) -> None:
    stack = [(statement, 0) for statement in tree.children if isinstance(statement, Tree)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NESTING:
            raise FormulaError(
                f"the expression nests more than {MAX_NESTING} levels deep", node.meta.line, node.meta.column
            )
        stack.extend((child, depth + 1) for child in node.children if isinstance(child, Tree))


def parse_formula(text: str) -> Formula:
    """Parse and check an autoscale formula.

    Parameters
    ----------
    text
        The formula (a pool's ``autoScaleFormula``).

    Returns
    -------
    Formula
        Ready for :func:`evaluate`.

    Raises
    ------
    FormulaError
        For a syntax error, an unknown function, method or variable, an assignment
        to a read-only variable, a type error the operations table rules out, a
        formula over 8 KB or over 100 statements, or an expression nested more
        than :data:`MAX_NESTING` levels deep. The message reads
        ``"line 2, column 17: unexpected token ')'; expected ..."``.
    """
    if not isinstance(text, str):
        raise FormulaError("the formula must be a string", 1, 1)
    encoded = text.encode("utf-8")
    if len(encoded) > MAX_FORMULA_BYTES:
        index = len(encoded[:MAX_FORMULA_BYTES].decode("utf-8", errors="ignore"))
        line, column = _position(text, index)
        raise FormulaError(
            f"the formula is {len(encoded)} bytes long; a formula cannot exceed {MAX_FORMULA_BYTES} bytes (8 KB)",
            line,
            column,
        )
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(text, exc) from None
    _check_nesting(tree)
    items = _ToAst().transform(tree)
    statements: list[Node] = []
    separated, previous_end = True, 0
    for item in items:
        if isinstance(item, Token):  # a ';'
            separated = True
            continue
        assert isinstance(item, (Assign, Call))  # the grammar's two statements
        first = item.target if isinstance(item, Assign) else item.name
        if not separated and item.line == previous_end:
            raise FormulaError(
                f"unexpected token '{first}'; expected ';' or a line break between statements",
                item.line,
                item.column,
            )
        if len(statements) == MAX_STATEMENTS:
            raise FormulaError(
                f"a formula can include at most {MAX_STATEMENTS} statements", item.line, item.column
            )
        statements.append(item)
        separated, previous_end = False, item.end_line
    if not statements:
        raise FormulaError("the formula contains no statements", 1, 1)
    Checker().check(statements)
    return Formula(text, tuple(statements))
