"""A long-lived server stays fast: prompt placement and throughput, fresh versus holding ~2M tokens.

Part 1, placement (``PromptIndex.place``, what every completion request does first, in the engine's
thread): served trees are grown the way clients grow them (``--problems`` prompts reused run after
run, each request re-sending a whole path and adding ``--n`` children of ``--child`` tokens), with
the bundled arith model's tokenizer and vocabulary but no forward passes, to each size in
``--levels``; at each size the time to place (a) a path down a hot tree, through a node with every
child the earlier runs left there, and (b) a new problem's prompt is the median of ``--probes``
placements. ``--index-file PATH`` measures another ``tree_index.py`` (e.g. the previous version,
``git show HEAD~1:reason/serve/tree_index.py > /tmp/old.py``) for comparison.

Part 2, throughput (``--throughput``): two in-process ``reason serve`` apps (arith model, CPU, each
over a real socket), one fresh and one whose index was first filled as above to the largest level,
run the same workloads alternately (``--rounds`` rounds; each round ``--clients`` particle-filtering
searches at once through the ``openai`` backend, new problems each round, the same on both servers),
so load from elsewhere on the machine hits both alike; prints generated tokens per second of each
and the engine thread's CPU time per generated token (less sensitive to other load), and their
ratios per round, then the median ratios.

Run: ``nice -n 19 python benchmarks/serve_placement.py [--levels 0,500000,1000000,2000000] [--throughput]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import statistics
import sys
import time
from typing import Any

from reason.core.engine.hf import HFEngine
from tasks.registry import resolve_model


def load_index_class(path: str | None) -> Any:
    if path is None:
        from reason.serve.tree_index import PromptIndex

        return PromptIndex
    spec = importlib.util.spec_from_file_location("other_tree_index", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.PromptIndex


def place(index: Any, ids: list[int]) -> tuple[Any, Any]:
    return index.locate(ids)


class Grower:
    """Grows served trees the way path-resending clients do (see the module docstring)."""

    def __init__(self, index: Any, vocab: int, problems: int, n: int, child: int, seed: int = 0) -> None:
        self.index, self.vocab, self.n, self.child = index, vocab, n, child
        self.rng = random.Random(seed)
        self.prompts = [self.tokens(40) for _ in range(problems)]
        self.paths: list[list[int]] = []  # paths of nodes made so far, to extend later

    def tokens(self, k: int) -> list[int]:
        return [self.rng.randrange(3, self.vocab) for _ in range(k)]

    def request(self, ids: list[int]) -> None:
        tree, node = place(self.index, ids)
        added = 0
        kids = []
        for _ in range(self.n):
            toks = self.tokens(self.child)
            kids.append(tree.add_child(node, toks, ""))
            added += len(toks)
            self.paths.append(ids + toks)
        try:
            self.index.done(tree, added, kids)
        except TypeError:  # an index whose done() takes no children
            self.index.done(tree, added)

    def grow_to(self, tokens: int) -> None:
        while self.index.tokens < tokens:
            # a run: every problem's root expanded, then a few steps down random paths (particle-like)
            for prompt in self.prompts:
                self.request(prompt)
            for _ in range(3 * len(self.prompts)):
                path = self.rng.choice(self.paths[-4 * len(self.prompts):])
                self.request(path)
            if len(self.paths) > 100_000:
                del self.paths[: len(self.paths) - 50_000]


def time_place(index: Any, ids_list: list[list[int]]) -> float:
    """Median microseconds of placing each of ``ids_list`` (each placement then marked done)."""
    out = []
    for ids in ids_list:
        t0 = time.perf_counter()
        tree, _ = place(index, ids)
        out.append(time.perf_counter() - t0)
        try:
            index.done(tree, 0, ())
        except TypeError:
            index.done(tree, 0)
    return statistics.median(out) * 1e6


def placement(args: argparse.Namespace, engine: HFEngine) -> None:
    cls = load_index_class(args.index_file)
    index = cls(engine, max_tokens=args.max_tree_tokens)
    grower = Grower(index, len(engine.tokenizer), args.problems, args.n, args.child)
    print(f"index: {args.index_file or 'reason.serve.tree_index'}; problems {args.problems}, n {args.n}, "
          f"child {args.child} tokens")
    print(f"{'tokens held':>12} {'trees':>6} {'root kids':>9} {'hot path us':>12} {'new prompt us':>14}")
    for level in args.levels:
        grower.grow_to(min(level, int(0.99 * args.max_tree_tokens)))
        hot_root = grower.prompts[0]
        tree, _ = place(index, hot_root)
        index.done(tree, 0, ()) if _takes_children(index) else index.done(tree, 0)
        kids = len(tree.root.children)
        # hot: the newest child of the hot root, one node further (a path a client re-sends); misses at the end
        newest = tree.root.children[-1] if tree.root.children else None
        deep = hot_root + (newest.token_ids if newest else []) + grower.tokens(5)
        hot = [list(deep) for _ in range(args.probes)]
        fresh = [grower.tokens(40) for _ in range(args.probes)]
        print(f"{index.tokens:>12,} {len(index):>6} {kids:>9} {time_place(index, hot):>12.1f} "
              f"{time_place(index, fresh):>14.1f}", flush=True)


def _takes_children(index: Any) -> bool:
    import inspect

    return "children" in inspect.signature(index.done).parameters


def throughput(args: argparse.Namespace) -> None:
    from reason.core.engine.openai import OpenAIEngine
    from reason.serve import create_app
    from reason.serve.thread import ServerThread
    from reason.shortcuts import solve_many
    from rewards.catalog import load_prm
    from tasks.arith.problems import generate

    prm = load_prm("arith")
    apps = {}
    for name in ("fresh", "full"):
        engine = HFEngine.from_pretrained(resolve_model("arith"), dtype="float32", device="cpu", cache_tokens=65536)
        apps[name] = create_app(engine, model_name="arith", max_tree_tokens=args.max_tree_tokens)
    full = apps["full"].state.server
    target = min(max(args.levels), int(0.99 * args.max_tree_tokens))
    full.worker.call(lambda: Grower(full.index, len(full.engine.tokenizer), args.problems, args.n, args.child,
                                    seed=7).grow_to(target)).result()
    with ServerThread(apps["fresh"]) as fresh_srv, ServerThread(apps["full"]) as full_srv:
        urls = {"fresh": fresh_srv.url, "full": full_srv.url}

        def workload(name: str, seed: int) -> tuple[int, float, float]:
            server = apps[name].state.server
            client = OpenAIEngine(urls[name], server.engine.tokenizer, max_concurrency=args.clients)
            questions = [p.question for p in generate(3, args.clients, seed=100 + seed)]
            before = server.engine.ledger.generated_tokens
            cpu0 = server.worker.call(time.thread_time).result()
            t0 = time.perf_counter()
            solve_many(client, questions, strategy="particle", budget=args.budget, seed=seed, prm=prm)
            wall = time.perf_counter() - t0
            cpu = server.worker.call(time.thread_time).result() - cpu0
            client.close()
            return server.engine.ledger.generated_tokens - before, wall, cpu

        print(f"the same workloads, alternately on a fresh server and on one holding {full.index.tokens:,} tokens "
              f"in {len(full.index)} trees ({args.clients} clients, particle budget {args.budget}):")
        ratios, cpu_ratios = [], []
        for r in range(args.rounds):
            made_a, wall_a, cpu_a = workload("fresh", r)
            made_b, wall_b, cpu_b = workload("full", r)
            ratios.append((made_b / wall_b) / (made_a / wall_a))
            cpu_ratios.append((cpu_b / made_b) / (cpu_a / made_a))
            print(f"  round {r + 1}: fresh {made_a} tokens {made_a / wall_a:7.1f} tok/s, engine thread "
                  f"{1e3 * cpu_a / made_a:.2f} ms CPU/token | full {made_b} tokens {made_b / wall_b:7.1f} tok/s, "
                  f"{1e3 * cpu_b / made_b:.2f} ms CPU/token (holds {full.index.tokens:,}) | full/fresh throughput "
                  f"{ratios[-1]:.3f}, CPU per token {cpu_ratios[-1]:.3f}", flush=True)
        print(f"median full/fresh: throughput {statistics.median(ratios):.3f}, "
              f"engine-thread CPU per token {statistics.median(cpu_ratios):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="0,250000,500000,1000000,2000000",
                        type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--problems", type=int, default=40)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--child", type=int, default=24)
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--max-tree-tokens", type=int, default=2_000_000)
    parser.add_argument("--index-file", default=None)
    parser.add_argument("--throughput", action="store_true")
    parser.add_argument("--no-placement", action="store_true", help="skip part 1")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--budget", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not args.no_placement:
        placement(args, HFEngine.from_pretrained(resolve_model("arith"), dtype="float32", device="cpu"))
    if args.throughput:
        throughput(args)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
