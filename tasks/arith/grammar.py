"""The arith grammar: integer expressions with ``+ - * /`` and parentheses, parsed into a tree,
evaluated exactly, and reduced one operation at a time.

A *step* reduces one operation whose operands are both plain numbers, e.g. ``4*12=48``. The
canonical order (what solutions in the training data follow) is: the innermost parenthesised group
first; inside it, the leftmost ``*`` or ``/``, else the leftmost ``+`` or ``-``. Any operation with
two number operands is a *valid* reduction (it preserves the value); the canonical one is also the
*expected* one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from reason.core.errors import ReasonError

_TOKEN = re.compile(r"\s*(\d+|[-+*/()])")
PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}


@dataclass(frozen=True)
class Num:
    """An integer literal."""

    value: int


@dataclass(frozen=True)
class Op:
    """A binary operation; ``paren`` marks a group written in parentheses."""

    op: str
    left: Expr
    right: Expr
    paren: bool = False


Expr = Num | Op


def _tokens(text: str, field: str) -> list[str]:
    pos, out = 0, []
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            bad = text[pos:].strip()[:1]
            raise ReasonError(field, f"unexpected character {bad!r} in {text!r}", "use digits, + - * / and parentheses")
        out.append(m.group(1))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    if not out:
        raise ReasonError(field, "is empty", "give an expression such as 3+4*5")
    return out


def parse(text: str, field: str = "problem") -> Expr:
    """Parse ``text``; a malformed expression is a one-line :class:`ReasonError` naming ``field``."""
    toks = _tokens(text, field)
    pos = 0

    def peek() -> str | None:
        return toks[pos] if pos < len(toks) else None

    def take() -> str:
        nonlocal pos
        pos += 1
        return toks[pos - 1]

    def atom() -> Expr:
        tok = peek()
        if tok is None:
            raise ReasonError(field, f"{text!r} ends too early", "complete the expression")
        if tok == "(":
            take()
            inner = expr()
            if peek() != ")":
                raise ReasonError(field, f"unbalanced parentheses in {text!r}", "close every '('")
            take()
            return Op(inner.op, inner.left, inner.right, True) if isinstance(inner, Op) else inner
        if tok == "-":
            take()
            nxt = atom()
            if not isinstance(nxt, Num):
                raise ReasonError(field, f"unary minus before a group in {text!r}", "write 0-(...) instead")
            return Num(-nxt.value)
        if tok.isdigit():
            take()
            return Num(int(tok))
        raise ReasonError(field, f"unexpected {tok!r} in {text!r}", "check the operators and parentheses")

    def level(prec: int) -> Expr:
        node = atom() if prec == 2 else level(prec + 1)
        while peek() in PRECEDENCE and PRECEDENCE[peek()] == prec:
            op = take()
            right = atom() if prec == 2 else level(prec + 1)
            node = Op(op, node, right)
        return node

    def expr() -> Expr:
        return level(1)

    tree = expr()
    if pos != len(toks):
        extra = toks[pos]
        raise ReasonError(field, f"unbalanced parentheses in {text!r}" if extra == ")" else f"unexpected {extra!r} in {text!r}",
                          "check the expression")
    evaluate(tree, field)  # division by zero / inexact division surface here
    return tree


def apply(op: str, a: int, b: int, field: str = "problem") -> int:
    """``a op b`` exactly; division must be exact and not by zero."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if b == 0:
        raise ReasonError(field, "division by zero", "change the divisor")
    q = Fraction(a, b)
    if q.denominator != 1:
        raise ReasonError(field, f"{a}/{b} is not an integer", "use exact divisions only")
    return int(q)


def evaluate(node: Expr, field: str = "problem") -> int:
    """The value of ``node``."""
    if isinstance(node, Num):
        return node.value
    return apply(node.op, evaluate(node.left, field), evaluate(node.right, field), field)


def render(node: Expr, top: bool = True) -> str:
    """Text of ``node`` (parentheses where the expression had them)."""
    if isinstance(node, Num):
        return str(node.value)
    body = f"{render(node.left, False)}{node.op}{render(node.right, False)}"
    return f"({body})" if node.paren and not top else body


def reducible(node: Expr) -> list[Op]:
    """Every operation whose two operands are numbers, left to right."""
    if isinstance(node, Num):
        return []
    if isinstance(node.left, Num) and isinstance(node.right, Num):
        return [node]
    return reducible(node.left) + reducible(node.right)


def canonical(node: Expr) -> Op | None:
    """The operation a canonical solution reduces next (see the module docstring)."""

    def depth_first(n: Expr, depth: int) -> list[tuple[int, int, int, Op]]:
        if isinstance(n, Num):
            return []
        out = depth_first(n.left, depth + n.paren) + depth_first(n.right, depth + n.paren)
        if isinstance(n.left, Num) and isinstance(n.right, Num):
            out.append((depth + n.paren, PRECEDENCE[n.op], 0, n))
        return out

    cands = depth_first(node, 0)
    if not cands:
        return None
    # Deepest group, then higher precedence, then leftmost (depth_first lists left to right).
    best = max(cands, key=lambda c: (c[0], c[1]))
    return next(c[3] for c in cands if (c[0], c[1]) == (best[0], best[1]))


def replace(node: Expr, target: Op, value: int) -> Expr:
    """``node`` with the operation ``target`` (by identity) replaced by the number ``value``."""
    if node is target:
        return Num(value)
    if isinstance(node, Num):
        return node
    return Op(node.op, replace(node.left, target, value), replace(node.right, target, value), node.paren)


def solve(node: Expr) -> tuple[list[str], int]:
    """The canonical steps (``"a*b=c"``) and the answer of ``node``."""
    steps = []
    while isinstance(node, Op):
        op = canonical(node)
        assert op is not None
        value = apply(op.op, op.left.value, op.right.value)  # type: ignore[union-attr]
        steps.append(f"{op.left.value}{op.op}{op.right.value}={value}")  # type: ignore[union-attr]
        node = replace(node, op, value)
    return steps, node.value
