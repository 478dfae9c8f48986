"""The async layer: many strategy coroutines over one engine, their requests batched together."""

from __future__ import annotations

import asyncio

from reason.core.context import Runner
from reason.core.engine.base import ExpandRequest, Sampling, Stop
from reason.core.engine.hf import HFEngine

STOP = Stop(strings=("\n",), max_tokens=5)


async def chain_then_branch(ctx, depth=3, width=2):
    """A toy strategy: walk down `depth` steps, then branch `width` ways at every level's child."""
    node = ctx.tree.root
    for _ in range(depth):
        kids = await ctx.expand(node, width, STOP, Sampling(temperature=1.0))
        deeper = await asyncio.gather(*(ctx.expand(k, 1, STOP, Sampling(temperature=1.0)) for k in kids))
        node = deeper[0][0]
    return node


def tokens(tree):
    return [(n.id, n.parent.id if n.parent else None, tuple(n.token_ids)) for n in tree]


def test_many_problems_batch_together_and_are_deterministic(llama, tokenizer):
    prompts = [f"Problem {i}: compute {i} + {2 * i}.\n" for i in range(6)]

    engine = HFEngine(llama, tokenizer)
    runner = Runner(engine)
    ctxs = [runner.context(p, seed=i) for i, p in enumerate(prompts)]
    ends = runner.run([chain_then_branch(c) for c in ctxs])
    assert all(e.depth == 6 for e in ends)
    batched_forwards = engine.ledger.forward_passes

    solo_engine = HFEngine(llama, tokenizer)
    solo_trees = []
    for i, p in enumerate(prompts):
        r = Runner(solo_engine)
        c = r.context(p, seed=i)
        r.run([chain_then_branch(c)])
        solo_trees.append(c.tree)
    assert [tokens(c.tree) for c in ctxs] == [tokens(t) for t in solo_trees]
    # Six problems in one loop take far fewer forwards than six loops one after another.
    assert batched_forwards * 3 < solo_engine.ledger.forward_passes
    for c in ctxs:
        assert c.tree.ledger.prefill_tokens == c.tree.ledger.prompt_tokens
        assert c.tree.ledger.wall_seconds > 0


def test_errors_reach_the_awaiting_strategy(llama, tokenizer):
    runner = Runner(HFEngine(llama, tokenizer))
    ctx = runner.context("Problem: 1 + 1.\n")

    async def bad(ctx):
        await ctx.expand(ctx.tree.root, 0)

    async def good(ctx):
        return await ctx.expand(ctx.tree.root, 2, STOP)

    out = runner.run([bad(ctx), good(ctx)], return_exceptions=True)
    assert str(out[0]).startswith("n: ")
    assert len(out[1]) == 2


def test_run_inside_a_running_loop(llama, tokenizer):
    runner = Runner(HFEngine(llama, tokenizer))
    ctx = runner.context("Problem: 2 + 2.\n")

    async def outer():
        return runner.run([ctx.expand(ctx.tree.root, 1, STOP)])

    [[child]] = asyncio.run(outer())
    assert child.parent is ctx.tree.root


def test_finished_request_frees_its_slot_for_a_waiting_one(llama, tokenizer):
    engine = HFEngine(llama, tokenizer, max_running=2)
    tree = engine.new_tree("Problem: 3 + 4.\n")
    lengths = [2, 8, 3]
    tickets = [
        engine.submit(ExpandRequest(tree, tree.root, 1, Stop(segment_tokens=k, eos=False), Sampling(temperature=0)))
        for k in lengths
    ]
    finished_at: dict[int, int] = {}
    admitted_at: dict[int, int] = {}
    step = 0
    while engine.has_work():
        for outcome in engine.step():
            finished_at[outcome.ticket] = step
        for job in engine.scheduler.running:
            admitted_at.setdefault(job.ticket, step)
        step += 1
    assert admitted_at[tickets[2]] > 0
    # The third request joins right after the first one finishes, while the second still runs.
    assert admitted_at[tickets[2]] == finished_at[tickets[0]] + 1
    assert finished_at[tickets[1]] > admitted_at[tickets[2]]
    assert sorted(finished_at) == sorted(tickets)


def test_gathered_requests_share_a_token_budget(engine):
    """Requests issued together under a token budget each reserve their whole cap; the ones that
    find it all reserved wait for the others to give back what they did not use, so every request
    gets children (before, the first took the whole reservation and the rest got none), and the
    tree stays within the budget. The same seed gives the same children."""

    def grow() -> list[list]:
        runner = Runner(engine)
        ctx = runner.context("12+3*4-5\n", seed=4, token_budget=120)
        step = Stop(strings=("\n",), max_tokens=60)

        async def together():
            return await asyncio.gather(*(ctx.expand(ctx.tree.root, 2, step, Sampling(temperature=1.0))
                                          for _ in range(4)))

        [kids] = runner.run([together()])
        assert ctx.tree.ledger.generated_tokens <= 120
        return kids

    kids = grow()
    assert all(len(k) == 2 for k in kids)
    assert [[c.token_ids for c in k] for k in kids] == [[c.token_ids for c in k] for k in grow()]
