"""Monte Carlo tree search over steps on the merged tree: PUCT with progressive widening, leaves
evaluated by a value model, a PRM, or a rollout to the end.

Nodes are steps (text up to the step delimiter). The context merges identical samples of one
parent into one node whose ``count`` is how many samples produced it, so a node's children are
distinct states. Every node the search made carries ``node.extra["mcts"]``:

* ``N``: visits, ``W``: the sum of the values backed up through the node, ``Q = W / N``;
* ``P``: the prior among its siblings;
* ``E``: 1 when the node itself was evaluated as a leaf (``V`` is that value), else 0;
* ``M``: how many step samples were drawn from the node (the sum of its step children's counts).

**Priors** (``prior``). ``counts``: a child drawn ``k`` of the ``m`` times its parent was sampled
has ``P = k / m``. ``policy``: ``P(c) = exp(S(c)) / sum_c' exp(S(c'))`` over the distinct
children, ``S(c)`` the summed token logprobs of ``c`` (the policy at temperature 1). Identical
samples are one node, so they never split a prior, and how often a step was sampled enters once
(``counts``) or not at all (``policy``).

**A simulation.**

1. *Selection.* From the root, at each node ``s`` that has been expanded, take the arm with the
   best PUCT score among its open children ``c``,
   ``U(c) = Q(c) + c_puct * P(c) * sqrt(N(s)) / (1 + N(c))``, and, while progressive widening
   lets ``s`` grow (``M(s) < children * N(s) ** widen_alpha``: on samples drawn, not on distinct
   children), a *new arm*: one more step sample from ``s``, scored
   ``U_new = V(s) + c_puct * P_new(s) * sqrt(N(s))``. ``V(s)`` is what ``s`` itself was valued
   at (its ``Q`` when it has no value of its own, as the root), i.e. what a fresh sample from
   ``s`` is expected to be worth; ``P_new(s) = (n1 + 1) / (m + 1)`` is the add-one Good-Turing
   estimate of the chance that a fresh sample is a state not seen yet (``n1`` children of count 1,
   ``m`` the children's summed counts). Ties go to the new arm, then to the older child. With
   ``widen_alpha=None`` there is no new arm. A node is closed when it is finished (EOS), a
   rollout leaf, or its path holds ``final.max_tokens`` tokens, or when it has been expanded, may
   not widen and its children are all closed.
2. *Expansion.* A node not expanded yet gets ``children`` step samples in one request.
3. *The samples drawn.* Each new distinct child is evaluated once: all new children of one draw
   in one batched scorer call (``E = 1, N = 1, W = V``). A further sample of a closed leaf is a
   revisit: its value is exact, so ``N += 1, W += V`` (a finished step's ``N`` is its ``count``).
   A further sample of an open child only raises its count, i.e. its prior: a repeated sample is
   evidence for an existing child, not a new node. When a new arm's draw only did that, the
   simulation goes on at ``s`` by PUCT over its open children, with the raised prior.
4. *Backup.* Each evaluation and revisit adds 1 to ``N`` and its value to ``W`` of every node on
   the path from the root. Every visit is so counted once: at every node after the search,
   ``N(s) = E(s) + sum over children c of N(c)``.

**Leaf evaluation** (``evaluate``, default ``value`` with a value model, else ``prm``). A finished
step is valued by the PRM's aggregated score in every mode. An open one by:

* ``value``: the value model's estimate of its prefix;
* ``prm``: the PRM's aggregated score of its steps;
* ``rollout``: one sampled completion ``r`` from it to the end, valued by the PRM; the rollouts of
  one expansion are requested together. ``r`` becomes the child's child, a closed leaf holding
  the evaluation (``E(r) = 1``; the child itself has ``E = 0`` and ``N = N(r) = 1``), and a
  finished ``r`` is a complete solution, so an answer candidate.

**Budget.** ``budget.n`` counts full-solution equivalents of generated tokens, as for the other
strategies: the search stops once the tree has generated ``n * L`` tokens, ``L`` the mean length
in tokens of the complete solutions found so far (each finished node's path, weighted by its
count; before the first, the longest path so far). ``simulations`` instead stops after that many
simulations. The search also stops at the budget's caps, when the context's token budget is spent
(``ctx.expand`` returns nothing) and when the root is closed (nothing left to sample).

**Answer** (``choose``). Candidates are the finished nodes of the search (finished steps and
finished rollouts), each standing for its count of samples. ``prm``: the candidate with the best
PRM score (ties: more visits, then older). ``visits`` / ``value``: from the root, follow the
child with the most visits (ties: higher ``Q``) / the highest ``Q`` (ties: more visits) to a leaf;
when that leaf is not finished, the candidate with the best PRM score. With no candidate at all,
the reached leaf is completed greedily (when the token budget allows).

Every random choice is an engine sample seeded from the context, and ties go to older nodes, so
the same seed gives the same tree (``policy`` priors read logprobs, whose last bits can depend on
how the engine batched a request).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Annotated, Literal

from pydantic import Field

from reason.core.context import SearchContext
from reason.core.engine.base import Sampling, Stop
from reason.core.errors import ReasonError
from reason.core.tree import Node
from search import strategies
from search.basic import finish
from search.budget import Budget
from search.options import Delimiter, Positive, PositiveFloat, StrategyOptions, Temperature

Evaluation = Literal["value", "prm", "rollout"]
Choice = Literal["prm", "visits", "value"]
Prior = Literal["counts", "policy"]


class MCTSOptions(StrategyOptions):
    """``mcts``: the step delimiter, the leaf evaluation (default: ``value`` with a value model,
    else ``prm``), a cap on simulations (default: the budget's token equivalent decides), step
    samples per expansion, progressive widening's exponent (``None``: no widening), the PUCT
    constant, the priors, temperature, the final choice and the token cap per step."""

    delimiter: Delimiter = "\n\n"
    evaluate: Evaluation | None = None
    simulations: Positive | None = None
    children: Positive = 3
    widen_alpha: PositiveFloat | None = 1.0
    c_puct: Annotated[float, Field(ge=0.0, strict=True)] = 1.0
    prior: Prior = "counts"
    temperature: Temperature = 0.8
    choose: Choice = "prm"
    step_tokens: Positive = 256


def stats(node: Node) -> dict:
    """The node's MCTS statistics (see the module docstring), made empty on first use."""
    return node.extra.setdefault("mcts", {"N": 0, "W": 0.0, "P": 1.0, "E": 0, "V": None, "M": 0})


def q_value(node: Node, default: float) -> float:
    """``W / N``, or ``default`` for an unvisited node."""
    s = stats(node)
    return s["W"] / s["N"] if s["N"] else default


def priors(children: list[Node], mode: Prior) -> list[float]:
    """Priors of distinct sibling nodes: their share of the samples (``counts``) or their policy
    probability renormalised over them (``policy``)."""
    if not children:
        return []
    if mode == "counts":
        total = sum(c.count for c in children)
        return [c.count / total for c in children]
    logs = [sum(c.logprobs) for c in children]
    top = max(logs)
    weights = [math.exp(x - top) for x in logs]
    total = sum(weights)
    return [w / total for w in weights]


class _Search:
    """One MCTS run over a context (the algorithm of the module docstring)."""

    def __init__(self, ctx: SearchContext, budget: Budget, final: Stop, *, evaluate: Evaluation, step: Stop,
                 sample: Sampling, children: int, widen_alpha: float | None, c_puct: float, prior: Prior) -> None:
        self.ctx, self.budget, self.final, self.step, self.sample = ctx, budget, final, step, sample
        self.evaluate, self.children, self.widen_alpha, self.c_puct, self.prior = (
            evaluate, children, widen_alpha, c_puct, prior)
        self.root = ctx.tree.root
        self.length: dict[Node, int] = {self.root: 0}  # generated tokens on the path to a node
        self.out_of_tokens = False
        self.evaluations = 0
        stats(self.root)

    # -- structure ------------------------------------------------------------------------------

    def kids(self, node: Node) -> list[Node]:
        """The node's children made by the search (step children and its rollout leaf)."""
        return [c for c in node.children if "mcts" in c.extra]

    def path_tokens(self, node: Node) -> int:
        """Generated tokens from the root to ``node``."""
        if node not in self.length:
            self.length[node] = self.path_tokens(node.parent) + len(node.token_ids)
        return self.length[node]

    def leaf_closed(self, node: Node) -> bool:
        """A leaf that is never extended: finished, a rollout's end, or at the token cap."""
        if node.finished or "rollout_of" in node.extra:
            return True
        cap = self.final.max_tokens
        return cap is not None and self.path_tokens(node) >= cap

    def closed(self, node: Node) -> bool:
        """Nothing is left to do below ``node``: a closed leaf, or an expanded node that may not
        draw and whose children are all closed."""
        if self.leaf_closed(node):
            return True
        if not stats(node)["M"] or self.may_draw(node):
            return False
        return all(self.closed(c) for c in self.kids(node))

    def may_draw(self, node: Node) -> bool:
        """Progressive widening: whether the expanded ``node`` may get one more step sample."""
        if self.widen_alpha is None:
            return False
        s = stats(node)
        return s["M"] < self.children * max(1, s["N"]) ** self.widen_alpha

    def first_value(self, node: Node) -> float:
        """What a fresh sample from ``node`` is worth before it is evaluated: the node's own
        evaluation (or its rollout's), else its ``Q``."""
        s = stats(node)
        return s["V"] if s["V"] is not None else q_value(node, 0.0)

    def unseen(self, node: Node) -> float:
        """The new arm's prior: add-one Good-Turing odds that a fresh sample from ``node`` is a
        state not seen yet, ``(n1 + 1) / (m + 1)`` (``n1`` children seen once, ``m`` samples)."""
        counts = [c.count for c in self.kids(node)]
        return (sum(k == 1 for k in counts) + 1) / (sum(counts) + 1)

    def puct(self, node: Node, open_kids: list[Node], new_arm: bool) -> Node | None:
        """The arm with the best PUCT score: an open child, or ``None`` for a fresh sample (the
        new arm, when ``new_arm``); ties to the new arm, then the older child."""
        root_n = math.sqrt(max(1, stats(node)["N"]))
        fpu = self.first_value(node)

        def score(c: Node) -> float:
            s = stats(c)
            return q_value(c, fpu) + self.c_puct * s["P"] * root_n / (1 + s["N"])

        best = max(open_kids, key=lambda c: (score(c), -c.id), default=None)
        if new_arm and (best is None or fpu + self.c_puct * self.unseen(node) * root_n >= score(best)):
            return None
        return best

    def set_priors(self, node: Node) -> None:
        """Refresh the priors of ``node``'s children after its samples changed."""
        kids = self.kids(node)
        for c, p in zip(kids, priors(kids, self.prior)):
            stats(c)["P"] = p

    # -- budget ---------------------------------------------------------------------------------

    def solution_tokens(self) -> int:
        """``L`` of the module docstring: mean tokens of a complete solution found so far
        (count-weighted), else the longest path so far."""
        done = [n for n in self.ctx.tree if "mcts" in n.extra and n.finished]
        if done:
            total = sum(n.count for n in done)
            return max(1, round(sum(self.path_tokens(n) * n.count for n in done) / total))
        return max(1, max(self.path_tokens(n) for n in self.ctx.tree if "mcts" in n.extra))

    def spent(self) -> bool:
        """True once the tree generated ``budget.n`` full-solution equivalents of tokens."""
        return self.ctx.tree.ledger.generated_tokens >= self.budget.n * self.solution_tokens()

    # -- one simulation -------------------------------------------------------------------------

    async def simulate(self) -> None:
        """Select, expand or widen, evaluate the new nodes and back every value up the path."""
        node, path = self.root, [self.root]
        while True:
            if not stats(node)["M"]:
                await self.draw(node, path, self.children)
                return
            open_kids = [c for c in self.kids(node) if not self.closed(c)]
            pick = self.puct(node, open_kids, self.may_draw(node))
            if pick is None:
                if not open_kids and not self.may_draw(node):
                    return  # closed; the caller stops before selecting a closed root
                if not await self.draw(node, path, 1):
                    return
                open_kids = [c for c in self.kids(node) if not self.closed(c)]
                pick = self.puct(node, open_kids, False)
                if pick is None:
                    return
            node = pick
            path.append(node)

    async def draw(self, node: Node, path: list[Node], n: int) -> bool:
        """Draw ``n`` step samples from ``node`` and settle them (step 3 of the module docstring).
        Returns True when only the counts of existing open children grew (nothing to back up), so
        the simulation goes on from ``node`` by PUCT."""
        before = set(node.children)
        entries = await self.ctx.expand(node, n, self.step, self.sample)
        if not entries:
            self.out_of_tokens = True
            return False
        s = stats(node)
        s["M"] += len(entries)
        fresh = [c for c in dict.fromkeys(entries) if c not in before]
        for c in fresh:
            stats(c)
        self.set_priors(node)
        values = await self.leaf_values(fresh)
        n_up, w_up = 0, 0.0
        for c, v in zip(fresh, values):
            if v is not None:
                n_up, w_up = n_up + 1, w_up + v
        seen: set[Node] = set()
        for c in entries:
            first = c in fresh and c not in seen
            seen.add(c)
            if first:
                continue
            cs = stats(c)
            if self.leaf_closed(c) and cs["E"]:  # a revisit of an exactly valued leaf
                cs["N"] += 1
                cs["W"] += cs["V"]
                n_up, w_up = n_up + 1, w_up + cs["V"]
        self.backup(path, n_up, w_up)
        return n_up == 0 and not fresh

    async def leaf_values(self, nodes: list[Node]) -> list[float | None]:
        """Evaluate each new node once (one batched call per scorer) and record the result in its
        statistics (and its rollout leaf's); ``None`` for a node left unevaluated because the token
        budget ran out before its rollout."""
        done = [c for c in nodes if self.leaf_closed(c)]
        open_ = [c for c in nodes if not self.leaf_closed(c)]
        values: dict[Node, float | None] = {}
        if self.evaluate == "rollout" and open_:
            ends = await asyncio.gather(*(self.ctx.expand(c, 1, self.final, self.sample) for c in open_))
            pairs = [(c, e[0]) for c, e in zip(open_, ends) if e]
            self.out_of_tokens |= len(pairs) < len(open_)
            for c, end in pairs:
                end.extra["rollout_of"] = c.id
                stats(end)
            scored = done + [end for _, end in pairs]
            scores = list(await self.ctx.score(scored)) if scored else []
            values.update(zip(done, scores))
            for (c, end), v in zip(pairs, scores[len(done):]):
                self.record(end, v)
                values[c] = v
                cs = stats(c)
                cs["N"], cs["W"], cs["V"] = 1, v, v
            for c in open_:
                values.setdefault(c, None)
            for c in done:
                self.record(c, values[c])
            self.evaluations += len(done) + len(pairs)
            return [values[c] for c in nodes]
        if self.evaluate == "value" and open_:
            if done:
                prm, val = await asyncio.gather(self.ctx.score(done), self.ctx.values(open_))
                values.update(zip(done, prm))
            else:
                val = await self.ctx.values(open_)
            values.update(zip(open_, val))
        elif nodes:
            values.update(zip(nodes, await self.ctx.score(nodes)))
        for c in nodes:
            self.record(c, values[c])
        self.evaluations += len(nodes)
        return [values[c] for c in nodes]

    def record(self, node: Node, value: float) -> None:
        """``node`` was evaluated as a leaf: one visit with its own value."""
        s = stats(node)
        s["E"], s["V"], s["N"], s["W"] = 1, value, 1, value

    def backup(self, path: list[Node], visits: int, value: float) -> None:
        """Add ``visits`` and their summed ``value`` to every node of ``path``."""
        for p in path:
            s = stats(p)
            s["N"] += visits
            s["W"] += value

    # -- the loop and the answer ----------------------------------------------------------------

    async def run(self, simulations: int | None) -> tuple[int, str]:
        """Simulate until a stopping rule of the module docstring holds; returns how many
        simulations ran and which rule stopped them."""
        ran = 0
        while True:
            if self.out_of_tokens:
                return ran, "token_budget"
            if self.closed(self.root):
                return ran, "closed"
            if simulations is not None and ran >= simulations:
                return ran, "simulations"
            if simulations is None and ran and self.spent():
                return ran, "tokens"
            if self.budget.exhausted(self.ctx.tree, self.ctx.started):
                return ran, "budget"
            await self.simulate()
            ran += 1

    def candidates(self) -> list[Node]:
        """The finished nodes of the search, oldest first."""
        return [n for n in self.ctx.tree if "mcts" in n.extra and n.finished]

    def walk(self, choose: Choice) -> Node:
        """From the root, the most visited (``visits``) or highest-Q (``value``) child to a leaf."""
        def key(c: Node) -> tuple:
            n, q = stats(c)["N"], q_value(c, -1.0)
            return (n, q, -c.id) if choose == "visits" else (q, n, -c.id)

        node = self.root
        while kids := self.kids(node):
            node = max(kids, key=key)
        return node

    async def answer(self, choose: Choice) -> tuple[list[Node], list[float], Node | None]:
        """The candidates (each repeated by its count), their PRM scores and the pick (None when
        the search made nothing to answer with)."""
        pool = self.candidates()
        scores = list(await self.ctx.score(pool)) if pool else []
        best = max(range(len(pool)), key=lambda i: (scores[i], stats(pool[i])["N"], -pool[i].id)) if pool else None
        if best is not None and choose == "prm":
            pick = pool[best]
        else:
            reached = self.walk("value" if choose == "value" else "visits")
            pick = reached if reached.finished or best is None else pool[best]
        if not pool:  # nothing finished: complete the reached leaf greedily, if tokens are left
            if pick is not self.root:
                pool = [pick]
            done = await self.ctx.expand(pick, 1, self.final, Sampling(temperature=0.0))
            if done:
                pick, pool = done[0], [done[0]]
            if not pool:
                return [], [], None
            scores = list(await self.ctx.score(pool))
        nodes = [n for n in pool for _ in range(n.count)]
        node_scores = [s for n, s in zip(pool, scores) for _ in range(n.count)]
        return nodes, node_scores, pick


@strategies.register("mcts", options=MCTSOptions)
async def mcts(
    ctx: SearchContext,
    budget: Budget,
    *,
    extract: Callable[[str], str | None],
    final: Stop,
    delimiter: str = "\n\n",
    evaluate: Evaluation | None = None,
    simulations: int | None = None,
    children: int = 3,
    widen_alpha: float | None = 1.0,
    c_puct: float = 1.0,
    prior: Prior = "counts",
    temperature: float = 0.8,
    choose: Choice = "prm",
    step_tokens: int = 256,
):
    """PUCT search over the merged tree (see the module docstring)."""
    evaluate = evaluate or ("value" if ctx.value is not None else "prm")
    if ctx.prm is None:
        raise ReasonError("prm", "mcts scores finished steps with a PRM", "pass --prm NAME[=PATH]")
    if evaluate == "value" and ctx.value is None:
        raise ReasonError("value", "evaluate='value' needs a value model", "pass --value NAME[=PATH]")
    step = Stop(strings=(delimiter,), max_tokens=min(step_tokens, final.max_tokens or step_tokens))
    search = _Search(ctx, budget, final, evaluate=evaluate, step=step, sample=Sampling(temperature=temperature),
                     children=children, widen_alpha=widen_alpha, c_puct=c_puct, prior=prior)
    ran, stop = await search.run(simulations)
    nodes, scores, pick = await search.answer(choose)
    chosen = nodes.index(pick) if pick is not None else 0
    return finish(ctx, "mcts", nodes, scores, chosen, extract, simulations=ran, evaluations=search.evaluations,
                  evaluate=evaluate, prior=prior, stop=stop)
