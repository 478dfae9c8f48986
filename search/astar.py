"""A*-decoding over steps, anytime: always expand the open node with the lowest ``f = g + h``.

``h(s) = 1 - r(s)`` with ``r`` the PRM's aggregated score of the path ``s``; ``g`` is pluggable and
by default the accumulated score drops along the path, ``g(s') = g(s) + max(0, r(s) - r(s'))``,
the root having ``g = 0`` and ``r = 1``.

**Expansion and closed set.** The state of a node is its whole path, whatever its split into
steps: the token ids from the first generated token to its last (with a domain ``state_key``: that
key of the path's text). Each state is expanded at most once: a child whose state is already open
or closed is not pushed, and a popped node whose state was expanded is skipped. (With merging,
siblings are already distinct; the closed set also holds with ``merge=False`` or when the same
tokens are reached through a different split into steps.) An expansion samples ``k`` next steps
(identical samples are one child). When the PRM judges every new child a mistake, its score
falling by more than one half (``r(child) < r(node) - 1/2`` for all of them), the same expansion
draws ``k`` more, at most ``redraws`` times, and then the node is closed for good; the root, whose
score 1 is a convention, draws once. The successors of a state are so decided in one go, rather
than by popping the state again later: with a policy that fails a hard step most of the time, the
right node gets more tries before the search backs off to paths already judged wrong.

**Anytime.** A popped finished node is a goal. The search does not stop at the first goal: it goes
on popping and expanding to look for a goal with a lower ``f``, and stops when

* no open node can lead to a better goal: the best goal's ``f <= min g(s)`` over the open nodes
  ``s`` (a descendant of ``s`` has ``f >= g(s)``, since ``h >= 0`` and ``g`` never decreases along
  a path, as with the default ``g``; for a ``g`` that may decrease this is only a heuristic);
* or its token allowance is spent. The allowance is counted in solution-equivalents, like every
  strategy's budget: no draw starts once ``generated_tokens >= spend * n * L`` (``spend = 0.5``:
  half of what ``n`` sampled solutions of length ``L`` cost), ``L`` being the generated tokens on
  the first goal's path, or before any goal, on the longest path pushed so far plus one mean step;
* or the open list is empty, ``max_expansions`` expansions were made (default: the budget ``n``),
  the token budget gives no more samples or a budget cap is hit.

The answer is the goal with the lowest ``f`` (ties to the deeper, then the older node: the heap
order); with no goal popped, the finished open node with the lowest ``f``; with none, the
lowest-``f`` open node completed greedily.

``info["popped"]`` holds ``(f popped, lowest f still open)`` for every pop in order (a pop is never
undone), ``info["expanded"]`` the ids of the expanded nodes in order and ``info["draws"]`` the
samples each expansion drew, ``info["goals"]`` the ids of the popped goals.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable

from reason.core.context import SearchContext
from reason.core.engine.base import Sampling, Stop
from reason.core.errors import ReasonError
from reason.core.tree import Node
from search import strategies
from search.basic import finish
from search.budget import Budget
from search.options import Delimiter, NonNegative, Positive, PositiveFloat, StrategyOptions, Temperature

Entry = tuple[float, int, int, Node]  # (f, -depth, id, node): the heap order


def score_drops(parent_g: float, parent_score: float, child_score: float) -> float:
    """The default ``g``: how much the path's score has fallen so far."""
    return parent_g + max(0.0, parent_score - child_score)


class AStarOptions(StrategyOptions):
    """``astar``: the step delimiter, next steps per draw (``k``), temperature, the expansion cap
    (default: the budget ``n``), the path cost ``g(parent_g, parent_score, child_score)``, the
    token cap per step, ``redraws`` (extra draws of ``k`` when the PRM judged every new child a
    mistake) and ``spend``, the share of the budget's ``n`` solution-equivalents of tokens the
    search may use."""

    delimiter: Delimiter = "\n\n"
    k: Positive = 4
    temperature: Temperature = 0.8
    max_expansions: Positive | None = None
    g: Callable[[float, float, float], float] = score_drops
    step_tokens: Positive = 256
    redraws: NonNegative = 16
    spend: PositiveFloat = 0.5


def path_state(ctx: SearchContext, node: Node) -> Hashable:
    """The closed-set key of ``node``: its path's generated token ids, or with the domain's state
    key, that key of the path's text."""
    if ctx.state_key is not None:
        return ctx.state_key(ctx.tree.text(node))
    return tuple(t for n in ctx.tree.path(node)[1:] for t in n.token_ids)


class _Search:
    """The open list, the closed set, the token allowance and the record of one A* search."""

    def __init__(self, ctx: SearchContext, g: Callable[[float, float, float], float], solutions: float) -> None:
        self.ctx, self.g, self.solutions = ctx, g, solutions
        root = ctx.tree.root
        self.cost: dict[Node, tuple[float, float]] = {root: (0.0, 1.0)}  # node -> (g, score)
        self.heap: list[Entry] = [(0.0, 0, root.id, root)]
        self.closed: set[Hashable] = set()  # states expanded (or popped as goals)
        self.seen: set[Hashable] = {path_state(ctx, root)}  # states ever pushed
        self.popped: list[tuple[float, float]] = []
        self.expanded: list[int] = []
        self.draws: list[int] = []
        self.goals: list[Entry] = []
        self.longest = 0  # generated tokens on the longest path pushed
        self.steps = [0, 0]  # tokens and count of the nodes pushed
        self.solution: int | None = None  # generated tokens on the first goal's path

    def f(self, node: Node) -> float:
        """``f = g + h`` of a pushed node."""
        g, score = self.cost[node]
        return g + (1.0 - score)

    def spent(self) -> bool:
        """True once the generated tokens reach ``spend * n`` solution-equivalents."""
        length = self.solution
        if length is None:
            if not self.steps[1]:
                return False
            length = self.longest + self.steps[0] / self.steps[1]
        return self.ctx.tree.ledger.generated_tokens >= self.solutions * length

    def solved(self) -> bool:
        """True when the best goal's ``f`` is at most every open node's ``g`` (see the module doc)."""
        if not self.goals:
            return False
        return not self.heap or min(self.goals)[0] <= min(self.cost[e[3]][0] for e in self.heap)

    def pop(self) -> Entry:
        """Pop the lowest entry, recording it."""
        entry = heapq.heappop(self.heap)
        self.popped.append((entry[0], self.heap[0][0] if self.heap else entry[0]))
        entry[3].extra["astar_f"] = entry[0]
        return entry

    def goal(self, entry: Entry) -> None:
        """Record a popped goal (the first one fixes the solution length)."""
        self.goals.append(entry)
        if self.solution is None:
            self.solution = _path_tokens(self.ctx, entry[3])

    async def expand(self, node: Node, f: float, k: int, redraws: int, step: Stop, temperature: float) -> bool:
        """Expand ``node`` once: ``k`` samples, and ``k`` more (at most ``redraws`` times, within
        the allowance) while every new child scores below ``r(node) - 1/2`` (the root draws once). False when the token budget gave no
        sample at all."""
        drawn = 0
        for _ in range(1 + redraws):
            if drawn and self.spent():
                break
            children = await self.ctx.expand(node, k, step, Sampling(temperature=temperature))
            if not children:
                break
            drawn += len(children)
            fresh = await self.push(node, children)
            if node.is_root or any(self.cost[c][1] >= self.cost[node][1] - 0.5 for c in fresh):
                break
        if drawn:
            self.expanded.append(node.id)
            self.draws.append(drawn)
        return drawn > 0

    async def push(self, node: Node, children: list[Node]) -> list[Node]:
        """Score ``node``'s children of new states and put them on the open list; returns them."""
        fresh = []
        for c in dict.fromkeys(children):
            state = path_state(self.ctx, c)
            if c not in self.cost and state not in self.seen:
                self.seen.add(state)
                fresh.append(c)
        scores = await self.ctx.score(fresh) if fresh else []
        g_parent, s_parent = self.cost[node]
        for child, s in zip(fresh, scores):
            g_child = self.g(g_parent, s_parent, s)
            self.cost[child] = (g_child, s)
            heapq.heappush(self.heap, (self.f(child), -child.depth, child.id, child))
            self.longest = max(self.longest, _path_tokens(self.ctx, child))
            self.steps[0] += len(child.token_ids)
            self.steps[1] += 1
        return fresh


def _path_tokens(ctx: SearchContext, node: Node) -> int:
    return sum(len(n.token_ids) for n in ctx.tree.path(node)[1:])


@strategies.register("astar", options=AStarOptions)
async def astar(ctx: SearchContext, budget: Budget, *, extract: Callable[[str], str | None], final: Stop,
                delimiter: str = "\n\n", k: int = 4, temperature: float = 0.8, max_expansions: int | None = None,
                g: Callable[[float, float, float], float] = score_drops, step_tokens: int = 256,
                redraws: int = 16, spend: float = 0.5):
    """Anytime A*-decoding with a closed set (see the module docstring)."""
    if ctx.prm is None:
        raise ReasonError("prm", "astar needs a PRM for its heuristic", "pass --prm NAME[=PATH]")
    limit = max_expansions or budget.n
    step = Stop(strings=(delimiter,), max_tokens=min(step_tokens, final.max_tokens or step_tokens))
    search = _Search(ctx, g, spend * budget.n)
    while search.heap and len(search.expanded) < limit and not budget.exhausted(ctx.tree, ctx.started):
        if search.solved() or search.spent():
            break
        f, _, _, node = entry = search.pop()
        state = path_state(ctx, node)
        if state in search.closed:
            continue
        search.closed.add(state)
        if node.finished:
            search.goal(entry)
        elif not await search.expand(node, f, k, redraws, step, temperature):  # the token budget is spent
            break
    goal = await _answer(ctx, search, final)
    pool = [n for n in search.cost if n.finished]
    if goal is not None and goal not in pool:
        pool.append(goal)
    scores = await ctx.score(pool) if pool else []
    chosen = pool.index(goal) if goal is not None else 0
    return finish(ctx, "astar", pool, list(scores), chosen, extract, expansions=len(search.expanded),
                  expanded=search.expanded, draws=search.draws, popped=search.popped,
                  goals=[e[3].id for e in search.goals])


async def _answer(ctx: SearchContext, search: _Search, final: Stop) -> Node | None:
    """The best goal popped; else the best finished open node; else the best open node completed
    greedily (itself when the token budget allows no completion)."""
    if search.goals:
        return min(search.goals)[3]
    done = [e for e in search.heap if e[3].finished]
    if done:
        return min(done)[3]
    if not search.heap:
        return None
    best = min(search.heap)[3]
    ends = await ctx.expand(best, 1, final, Sampling(temperature=0.0))
    return ends[0] if ends else best
