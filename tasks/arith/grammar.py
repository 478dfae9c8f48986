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

MAX_CHARS = 10_000
"""Characters of an expression, checked before it is read (the bundled levels' problems have ~30)."""

MAX_DIGITS = 1_000
"""Digits of a number: a literal and every value computed from the literals (so no number reaches
Python's 4,300-digit limit on converting integers to text, and products stay cheap)."""

MAX_DEPTH = 100
"""Nesting of operations: how many operations lie on the longest path from the whole expression to
a number (``1+2+3`` has 2, ``(1+(2+(3+4)))`` has 3). The tree's helpers recurse that deep."""

_LIMIT = 10**MAX_DIGITS  # the first number with more than MAX_DIGITS digits


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


def to_int(text: str, field: str = "problem") -> int:
    """The integer written in ``text`` (digits, optionally signed); a one-line :class:`ReasonError`
    naming ``field`` when it has more than :data:`MAX_DIGITS` digits or is not an integer."""
    digits = text.strip().lstrip("+-")
    if len(digits) > MAX_DIGITS:
        raise ReasonError(field, f"a number has {len(digits)} digits, over the limit of {MAX_DIGITS}",
                          "use smaller numbers")
    try:
        return int(text)
    except ValueError:
        raise ReasonError(field, f"{text[:40]!r} is not an integer", "write digits only") from None


def _checked(value: int, field: str) -> int:
    if -_LIMIT < value < _LIMIT:
        return value
    raise ReasonError(field, f"a value has more than {MAX_DIGITS} digits", "use smaller numbers")


def _short(value: int) -> str:
    """``value`` as text, its first digits only when it is long."""
    text = str(value)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} digits)"


def _tokens(text: str, field: str) -> list[str]:
    pos, out = 0, []
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            bad = text[pos:].strip()[:1]
            raise ReasonError(field, f"unexpected character {bad!r} in {_show(text)}", "use digits, + - * / and parentheses")
        out.append(m.group(1))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    if not out:
        raise ReasonError(field, "is empty", "give an expression such as 3+4*5")
    return out


def _show(text: str) -> str:
    """``text`` quoted for an error message, shortened when long."""
    return repr(text) if len(text) <= 80 else repr(text[:60]) + f"... ({len(text)} characters)"


def parse(text: str, field: str = "problem") -> Expr:
    """Parse ``text``; a malformed expression, or one over :data:`MAX_CHARS`, :data:`MAX_DIGITS` or
    :data:`MAX_DEPTH`, is a one-line :class:`ReasonError` naming ``field``.

    The parser is iterative (operator precedence with explicit stacks): ``*`` and ``/`` bind tighter
    than ``+`` and ``-``, all are left-associative, and a unary minus applies to a number (or a
    parenthesised number) only."""
    if len(text) > MAX_CHARS:
        raise ReasonError(field, f"the expression has {len(text)} characters, over the limit of {MAX_CHARS}",
                          "give a shorter expression")
    toks = _tokens(text, field)
    shown = _show(text)
    values: list[tuple[Expr, int]] = []  # operands with their depth (operations on the longest path)
    ops: list[str] = []  # pending binary operators, "(" and "neg" (a unary minus)

    def reduce() -> None:
        op = ops.pop()
        (right, r_depth), (left, l_depth) = values.pop(), values.pop()
        depth = 1 + max(l_depth, r_depth)
        if depth > MAX_DEPTH:
            raise ReasonError(field, f"the expression nests more than {MAX_DEPTH} operations deep",
                              "give a shorter or flatter expression")
        values.append((Op(op, left, right), depth))

    def operand_done() -> None:
        # A finished atom takes the unary minuses written before it.
        while ops and ops[-1] == "neg":
            ops.pop()
            node, depth = values[-1]
            if not isinstance(node, Num):
                raise ReasonError(field, f"unary minus before a group in {shown}", "write 0-(...) instead")
            values[-1] = (Num(-node.value), depth)

    expect_operand = True
    for tok in toks:
        if expect_operand:
            if tok == "(":
                ops.append("(")
            elif tok == "-":
                ops.append("neg")
            elif tok.isdigit():
                values.append((Num(to_int(tok, field)), 0))
                expect_operand = False
                operand_done()
            else:
                raise ReasonError(field, f"unexpected {tok!r} in {shown}", "check the operators and parentheses")
        elif tok in PRECEDENCE:
            while ops and ops[-1] in PRECEDENCE and PRECEDENCE[ops[-1]] >= PRECEDENCE[tok]:
                reduce()
            ops.append(tok)
            expect_operand = True
        elif tok == ")":
            while ops and ops[-1] != "(":
                reduce()
            if not ops:
                raise ReasonError(field, f"unbalanced parentheses in {shown}", "check the expression")
            ops.pop()
            node, depth = values[-1]
            if isinstance(node, Op):
                values[-1] = (Op(node.op, node.left, node.right, True), depth)
            operand_done()
        elif "(" in ops:
            raise ReasonError(field, f"unbalanced parentheses in {shown}", "close every '('")
        else:
            raise ReasonError(field, f"unexpected {tok!r} in {shown}", "check the expression")
    if expect_operand:
        raise ReasonError(field, f"{shown} ends too early", "complete the expression")
    while ops:
        if ops[-1] == "(":
            raise ReasonError(field, f"unbalanced parentheses in {shown}", "close every '('")
        reduce()
    tree = values[0][0]
    evaluate(tree, field)  # division by zero / inexact division / too many digits surface here
    return tree


def apply(op: str, a: int, b: int, field: str = "problem") -> int:
    """``a op b`` exactly; division must be exact and not by zero, and the result must have at most
    :data:`MAX_DIGITS` digits."""
    if op == "+":
        return _checked(a + b, field)
    if op == "-":
        return _checked(a - b, field)
    if op == "*":
        return _checked(a * b, field)
    if b == 0:
        raise ReasonError(field, "division by zero", "change the divisor")
    q = Fraction(a, b)
    if q.denominator != 1:
        raise ReasonError(field, f"{_short(a)}/{_short(b)} is not an integer", "use exact divisions only")
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
