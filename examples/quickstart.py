"""Quickstart: grow a small search tree with the library API, offline.

Builds a tiny random Llama checkpoint in a temporary directory (any local checkpoint or hub id
works the same way), loads it through the `hf` engine, and runs two problems' toy strategies
concurrently so their requests batch together. Run: `python examples/quickstart.py`.
"""

from __future__ import annotations

import asyncio
import tempfile

from reason import Sampling, Stop, load_engine
from reason.core.context import Runner
from reason.core.tiny import save_tiny_checkpoint

STEP = Stop(strings=("\n",), max_tokens=24)


async def widen_then_deepen(ctx, width: int = 3, depth: int = 2):
    """Give the root `width` children, then extend each child `depth` more steps."""
    children = await ctx.expand(ctx.tree.root, width, STEP, Sampling(temperature=0.8))

    async def deepen(node):
        for _ in range(depth):
            [node] = await ctx.expand(node, 1, STEP, Sampling(temperature=0.8))
        return node

    return await asyncio.gather(*(deepen(c) for c in children))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = save_tiny_checkpoint(f"{tmp}/tiny-llama", arch="llama", seed=0)
        engine = load_engine(str(path), dtype="float32", device="cpu")
        runner = Runner(engine)
        contexts = [runner.context(p, seed=i) for i, p in enumerate(["What is 12 + 30 * 2?\n", "Find x if 3x + 5 = 20.\n"])]
        runner.run([widen_then_deepen(ctx) for ctx in contexts])
        for ctx in contexts:
            tree = ctx.tree
            print(f"tree of {len(tree)} nodes, {len(tree.leaves())} leaves; ledger: {tree.ledger.model_dump()}")
            assert tree.ledger.prefill_tokens == tree.ledger.prompt_tokens  # every prefix was reused
        print(f"engine: {engine.ledger.forward_passes} forward passes for both problems together")


if __name__ == "__main__":
    main()
