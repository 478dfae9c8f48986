"""One sequence decoded alone: the KV pool read as a view of consecutive slots, against the gather.

A sequence decoded by itself from a fresh pool sits in consecutive slots, so its forward can read
its keys and values as a slice of the pool and write its new token with one slice copy
(``PoolCache``'s ``span``), where a general batch writes with ``index_copy_`` and gathers every
key with ``index_select`` in every layer, a copy that grows with the context. This decodes
``--tokens`` greedy tokens after prompts of each length in ``--contexts`` on a random model of
``--arch`` (``--layers``, ``--hidden``, grouped-query attention), with the span path and with it
turned off, interleaved ``--repeats`` times in one process, and prints CPU microseconds per token
(medians) and their ratio; the tokens are checked to be the same.

Run: ``OMP_NUM_THREADS=1 python benchmarks/kv_span.py [--contexts 64,512,1536] [--layers 8 --hidden 512]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from reason.core.engine.base import ExpandRequest, Sampling, Stop
from reason.core.engine.hf import HFEngine
from reason.core.engine.hf import batch as batch_module
from reason.core.tiny import build_model, build_tokenizer


def decode(engine: HFEngine, prompt: list[int], tokens: int) -> tuple[list[int], float]:
    """Greedy tokens after ``prompt`` (a fresh tree) and the CPU seconds per token of the decode
    steps alone (the prompt's prefill and first token come from an earlier, untimed request)."""
    tree = engine.new_tree(prompt)
    greedy = Sampling(temperature=0.0)
    [[first]] = engine.expand_many([ExpandRequest(tree, tree.root, 1, Stop(max_tokens=1, eos=False), greedy)])
    made = engine.ledger.generated_tokens
    began = time.process_time()
    [[child]] = engine.expand_many([ExpandRequest(tree, first, 1, Stop(max_tokens=tokens, eos=False), greedy)])
    spent = time.process_time() - began
    return child.token_ids, spent / max(1, engine.ledger.generated_tokens - made)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contexts", default="64,512,1536", help="prompt lengths in tokens")
    parser.add_argument("--tokens", type=int, default=32, help="tokens decoded per run")
    parser.add_argument("--arch", default="qwen2")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tok = build_tokenizer()
    model = build_model(args.arch, tok, num_hidden_layers=args.layers, hidden_size=args.hidden,
                        intermediate_size=2 * args.hidden, num_attention_heads=8, num_key_value_heads=2)
    real = batch_module._consecutive_start
    modes = {"span": real, "gather": lambda read_idx: None}
    print(f"{args.arch}, {args.layers} layers, hidden {args.hidden}, {args.tokens} greedy tokens, CPU time, "
          f"{args.threads} thread(s)")
    print("| context | span (us / token) | gather (us / token) | gather / span |")
    print("| --- | --- | --- | --- |")
    for context in (int(c) for c in args.contexts.split(",")):
        prompt = [(7 * i) % (len(tok) - 10) + 5 for i in range(context)]
        times: dict[str, list[float]] = {m: [] for m in modes}
        outs: dict[str, list[int]] = {}
        for r in range(args.repeats + 1):
            for name in (list(modes) if r % 2 else list(modes)[::-1]):
                batch_module._consecutive_start = modes[name]
                engine = HFEngine(model, tok, draft=None)  # a fresh pool: the sequence's slots are consecutive
                ids, per = decode(engine, prompt, args.tokens)
                outs[name] = ids
                if r:  # the first round warms up
                    times[name].append(per)
        batch_module._consecutive_start = real
        assert outs["span"] == outs["gather"], "the span path changed the tokens"
        span, gather = (statistics.median(times[m]) * 1e6 for m in ("span", "gather"))
        print(f"| {context} | {span:.0f} | {gather:.0f} | {gather / span:.2f}x |")


if __name__ == "__main__":
    main()
