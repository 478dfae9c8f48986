"""Engine throughput against its baselines, side by side in one process.

1. Sampling: N completions for each of P prompts (a system prompt plus a MATH-500 problem) with our
   engine versus ``model.generate(num_return_sequences=N, do_sample=True)``: tokens/s ratio.
2. Branching: every node gets W children, to depth D, for P prompts (steps of S tokens), with our
   engine versus the same engine with prefix caching off (``NoPrefixCacheEngine``: every expansion
   prefills its whole path again): ratio of tokens fed to the model and of wall time.

The model is a random-weight model of a realistic shape (Qwen2.5-0.5B's config; 8 of its 24 layers
by default, ``--layers 24`` for all), float32 on CPU. Run: ``python benchmarks/engine.py`` (``--help`` for sizes).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, Qwen2Config

from reason.core.engine.base import ExpandRequest, Sampling, Stop
from reason.core.engine.hf import HFEngine
from reason.core.engine.hf.nocache import NoPrefixCacheEngine
from reason.core.tiny import build_tokenizer

SYSTEM = (
    "You are a careful competition mathematician. Solve the problem step by step, separating steps "
    "with a blank line, justify each computation, check the result, and put the final answer in "
    "\\boxed{}."
)
DATA = Path(__file__).resolve().parents[1] / "tasks" / "data" / "math500" / "test.jsonl"


def qwen25_05b(layers: int) -> Qwen2Config:
    """Qwen2.5-0.5B's published shape, with ``layers`` decoder layers."""
    return Qwen2Config(
        vocab_size=151936,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=layers,
        num_attention_heads=14,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        rope_theta=1000000.0,
        tie_word_embeddings=True,
        rms_norm_eps=1e-6,
    )


def prompts(tokenizer, count: int, lo: int = 200, hi: int = 400) -> list[list[int]]:
    """Token ids of ``count`` chat prompts (system + MATH-500 problem) of ``lo``..``hi`` tokens."""
    out = []
    for line in DATA.read_text().splitlines():
        problem = json.loads(line)["problem"]
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": problem}]
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if lo <= len(ids) <= hi:
            out.append(ids)
        if len(out) == count:
            return out
    raise SystemExit("not enough prompts of the requested length")


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def bench_sampling(model, tokenizer, ids: list[list[int]], n: int, new: int) -> dict:
    pad = tokenizer.pad_token_id
    width = max(len(x) for x in ids)
    input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids])
    attention = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])

    def hf():
        with torch.inference_mode():
            return model.generate(
                input_ids,
                attention_mask=attention,
                do_sample=True,
                num_return_sequences=n,
                max_new_tokens=new,
                min_new_tokens=new,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                pad_token_id=pad,
            )

    def ours():
        engine = HFEngine(model, tokenizer)
        trees = [engine.new_tree(x) for x in ids]
        stop = Stop(max_tokens=new, eos=False)
        engine.expand_many([ExpandRequest(t, t.root, n, stop, Sampling(temperature=1.0, seed=i)) for i, t in enumerate(trees)])
        return engine

    out, t_hf = timed(hf)
    hf_tokens = (out.shape[1] - width) * out.shape[0]
    engine, t_ours = timed(ours)
    our_tokens = engine.ledger.generated_tokens
    return {
        "prompts": len(ids),
        "n": n,
        "new_tokens": new,
        "hf_generate_tok_s": hf_tokens / t_hf,
        "ours_tok_s": our_tokens / t_ours,
        "ratio": (our_tokens / t_ours) / (hf_tokens / t_hf),
        "hf_seconds": t_hf,
        "ours_seconds": t_ours,
        "ours_prefill_tokens": engine.ledger.prefill_tokens,
        "ours_forwards": engine.ledger.forward_passes,
    }


def grow(engine: HFEngine, ids: list[list[int]], width: int, depth: int, segment: int) -> int:
    trees = [engine.new_tree(x) for x in ids]
    frontier = [(i, t, t.root) for i, t in enumerate(trees)]
    stop = Stop(segment_tokens=segment, eos=False)
    for _ in range(depth):
        reqs = [ExpandRequest(t, node, width, stop, Sampling(temperature=1.0, seed=1000 * i + node.id)) for i, t, node in frontier]
        kids = engine.expand_many(reqs)
        frontier = [(i, r.tree, c) for (i, _, _), r, cs in zip(frontier, reqs, kids) for c in cs]
    return sum(len(t) for t in trees)


def bench_branching(model, tokenizer, ids: list[list[int]], width: int, depth: int, segment: int) -> dict:
    results = {}
    for name, engine_class in (("cached", HFEngine), ("no_cache", NoPrefixCacheEngine)):
        engine = engine_class(model, tokenizer, draft=None)  # prefix caching alone
        nodes, seconds = timed(lambda: grow(engine, ids, width, depth, segment))
        led = engine.ledger
        results[name] = {
            "nodes": nodes,
            "seconds": seconds,
            "model_tokens": led.prefill_tokens + led.generated_tokens,
            "prefill_tokens": led.prefill_tokens,
            "generated_tokens": led.generated_tokens,
            "forwards": led.forward_passes,
        }
    c, b = results["cached"], results["no_cache"]
    results["model_token_ratio"] = b["model_tokens"] / c["model_tokens"]
    results["speedup"] = b["seconds"] / c["seconds"]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--width", type=int, default=4)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--segment", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--only", choices=["sampling", "branching"], default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    model = AutoModelForCausalLM.from_config(qwen25_05b(args.layers), attn_implementation="sdpa", dtype=torch.float32).eval()
    ids = prompts(tokenizer, args.prompts)
    print(f"model: Qwen2.5-0.5B shape, {args.layers} layers, fp32, {torch.get_num_threads()} threads; "
          f"prompt tokens {min(map(len, ids))}..{max(map(len, ids))}")
    if args.only in (None, "sampling"):
        s = bench_sampling(model, tokenizer, ids, args.n, args.new_tokens)
        print(f"(1) sampling {s['prompts']}x{s['n']} x {s['new_tokens']} tokens: HF generate {s['hf_generate_tok_s']:.1f} tok/s "
              f"({s['hf_seconds']:.1f}s), ours {s['ours_tok_s']:.1f} tok/s ({s['ours_seconds']:.1f}s) -> {s['ratio']:.2f}x")
    if args.only in (None, "branching"):
        b = bench_branching(model, tokenizer, ids, args.width, args.depth, args.segment)
        c, n = b["cached"], b["no_cache"]
        print(f"(2) branching width {args.width} depth {args.depth} segments {args.segment}: {c['nodes']} nodes")
        print(f"    cached:   {c['model_tokens']} model tokens ({c['prefill_tokens']} prefill), {c['seconds']:.1f}s, {c['forwards']} forwards")
        print(f"    no cache: {n['model_tokens']} model tokens ({n['prefill_tokens']} prefill), {n['seconds']:.1f}s, {n['forwards']} forwards")
        print(f"    -> {b['model_token_ratio']:.2f}x fewer model tokens, {b['speedup']:.2f}x faster")


if __name__ == "__main__":
    main()
