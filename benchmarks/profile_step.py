"""Where the hf engine's decode step spends its time, per generated token.

Runs a workload on the bundled arith model (about 3 ms per forward on CPU) and times each part of
``HFEngine.step`` with wall-clock probes: scheduling (``admit`` + ``schedule``), batch assembly
(``build_batch``: ids, positions, the attention mask and cache indices), the model's forward (the
transformer body, from forward hooks, less the cache), the KV pool's reads and writes inside it
(``PoolCache.update``, once per layer), the LM head, token choice (``sample_tokens``), appends
(``Seq.append``: stop checks and bookkeeping per token), finishing jobs (children written into the
tree) and the rest of ``step``. Prints microseconds per generated token for each part and its share.

Workloads: ``single`` (one greedy sequence at a time), ``samples`` (16 samples of one prompt),
``batch`` (64 prompts, one greedy sequence each). Run:
``python benchmarks/profile_step.py [--workload single,samples,batch] [--tokens 64] [--repeats 3]``.
The first repeat warms up and is not counted.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import torch

from reason.core.engine.base import ExpandRequest, Sampling, Stop
from reason.core.engine.hf import HFEngine
from reason.core.engine.hf import runner as runner_module
from reason.core.engine.hf.kv import PoolCache
from reason.core.engine.hf.scheduler import Seq
from tasks.arith.problems import generate
from tasks.registry import resolve_model

PARTS = ("schedule", "build_batch", "forward", "kv_cache", "lm_head", "choose", "append", "finish_jobs", "other")


class Probes:
    """Accumulated wall time per part of the step."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.on = False

    def wrap(self, part: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` with its wall time added to ``part`` while probing is on."""

        def timed(*args: Any, **kwargs: Any) -> Any:
            if not self.on:
                return fn(*args, **kwargs)
            began = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[part] += time.perf_counter() - began

        return timed


@contextmanager
def probed(engine: HFEngine, probes: Probes):
    """Install the probes on ``engine`` (and the module functions it calls); remove them after."""
    saved: list[tuple[Any, str, Any, bool]] = []

    def patch(owner: Any, name: str, part: str) -> None:
        original = getattr(owner, name)
        saved.append((owner, name, original, name in vars(owner)))
        setattr(owner, name, probes.wrap(part, original))

    sched = engine.scheduler
    patch(sched, "admit", "schedule")
    patch(sched, "schedule", "schedule")
    patch(runner_module, "build_batch", "build_batch")
    patch(engine.runner, "logits", "lm_head")
    patch(runner_module, "sample_tokens", "choose")
    patch(Seq, "append", "append")
    patch(PoolCache, "update", "kv_cache")
    patch(engine, "_finish_jobs", "finish_jobs")
    patch(engine, "step", "step")
    began: list[float] = []
    base = engine.runner.base
    pre = base.register_forward_pre_hook(lambda *_: began.append(time.perf_counter()) if probes.on else None)
    post = base.register_forward_hook(
        lambda *_: probes.seconds.__setitem__("forward", probes.seconds["forward"] + time.perf_counter() - began.pop())
        if probes.on and began else None)
    try:
        yield
    finally:
        pre.remove()
        post.remove()
        for owner, name, original, own in reversed(saved):
            if own:  # a module or class attribute: put it back
                setattr(owner, name, original)
            else:  # an instance's bound method: drop the wrapper, the class's method shows again
                delattr(owner, name)


def workload(engine: HFEngine, kind: str, tokens: int, seed: int) -> list[ExpandRequest]:
    """The requests of one run of ``kind``."""
    stop = Stop(max_tokens=tokens, eos=False)
    problems = generate(3, 64, seed=seed)
    if kind == "single":
        tree = engine.new_tree(problems[0].prompt)
        return [ExpandRequest(tree, tree.root, 1, stop, Sampling(temperature=0.0))]
    if kind == "samples":
        tree = engine.new_tree(problems[0].prompt)
        return [ExpandRequest(tree, tree.root, 16, stop, Sampling(temperature=1.0, seed=seed))]
    if kind == "batch":
        out = []
        for p in problems:
            tree = engine.new_tree(p.prompt)
            out.append(ExpandRequest(tree, tree.root, 1, stop, Sampling(temperature=0.0)))
        return out
    raise SystemExit(f"--workload: unknown {kind!r}; use single, samples or batch")


def profile(kind: str, tokens: int, repeats: int) -> None:
    """Run ``kind`` ``repeats`` times (the first to warm up) and print the per-token breakdown."""
    engine = HFEngine.from_pretrained(resolve_model("arith"), dtype="float32", device="cpu", draft=None)
    probes = Probes()
    generated = 0
    with probed(engine, probes):
        for r in range(repeats):
            probes.on = r > 0
            made = engine.ledger.generated_tokens
            engine.expand_many(workload(engine, kind, tokens, seed=r))
            if probes.on:
                generated += engine.ledger.generated_tokens - made
    step = probes.seconds.pop("step", 0.0)
    probes.seconds["forward"] -= probes.seconds.get("kv_cache", 0.0)  # the cache writes run inside the forward
    measured = sum(probes.seconds.values())
    probes.seconds["other"] = max(0.0, step - measured)
    print(f"\nworkload {kind}: {generated} generated tokens over {repeats - 1} runs, "
          f"{1e6 * step / max(generated, 1):.1f} us per token in step()")
    print("| part | us / token | share |")
    print("| --- | --- | --- |")
    for part in PARTS:
        sec = probes.seconds.get(part, 0.0)
        print(f"| {part} | {1e6 * sec / max(generated, 1):.1f} | {100 * sec / max(step, 1e-12):.0f}% |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", default="single,samples,batch", help="comma-separated: single, samples, batch")
    parser.add_argument("--tokens", type=int, default=64, help="tokens generated per sequence")
    parser.add_argument("--repeats", type=int, default=3, help="runs per workload; the first warms up")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for kind in args.workload.split(","):
        profile(kind.strip(), args.tokens, args.repeats)


if __name__ == "__main__":
    main()
