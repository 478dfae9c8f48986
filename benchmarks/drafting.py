"""Speculative tree drafting, measured side by side in one process.

Three sections (``--sections search,lookup,shape``):

* ``search``: best-of-16 (majority vote) and particle filtering (arith PRM) at budget 16 on held-out
  level-3 arith problems, drafting off versus each drafter. ``--concurrency`` problems are searched
  at once (1: latency; equal to ``--n``: throughput). Each configuration runs ``--repeat`` times,
  interleaved with the others so drift on a shared machine hits all alike, and the median wall time
  is reported, with the process's CPU time beside it (steadier than wall time when other jobs share
  the cores; with ``--threads 1`` it is the time the run would take alone). Columns: mean tokens per verification step per sequence (generated tokens over
  verifications), forward passes, median wall time and its ratio to drafting off, the drafter's
  memory, and whether every tree is token-identical to drafting off.
* ``lookup``: one greedy sequence per problem prompt: HF ``generate`` plain, HF ``generate`` with
  prompt-lookup decoding (``prompt_lookup_num_tokens``), and this engine with drafting off and with
  each drafter. Tokens per forward, forwards, wall ratio against plain HF ``generate``, and whether
  the tokens equal plain HF ``generate``'s.
* ``shape``: the cost of verifying a draft on a model of realistic shape (Qwen2.5-0.5B's config,
  random weights; acceptance there would be meaningless): one forward of ``k`` tokens per sequence
  after a 256-token prefix, against ``k = 1``, at batch 1 and 16. The ratio is the number of tokens
  a verification must yield to break even.

Configurations: ``off``, ``default`` (the engine's default: ``draft=True``, the default drafter behind
the measured per-step gate), a drafter name (``spine``, ``suffix``, ``recycle``), and any of them with
``+pack`` (siblings' drafts packed into one tree-masked row).

Run: ``python benchmarks/drafting.py [--n 100 --concurrency 1 --repeat 3 --drafters default,default+pack,spine,suffix]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from reason.core.engine.base import Sampling, Stop
from reason.core.engine.hf import HFEngine
from reason.shortcuts import generate as engine_generate
from tasks.registry import resolve_model
from rewards.catalog import load_prm
from reason.shortcuts import solve_many
from tasks.arith.problems import generate as arith_problems


def new_engine(name: str) -> HFEngine:
    """``off``: no drafting; ``default``: the engine's default (``draft=True``: the default drafter
    behind the measured per-step gate); else a drafter name. ``+pack``: siblings packed in one row."""
    drafter, _, pack = name.partition("+")
    draft: str | bool | None = None if drafter == "off" else True if drafter == "default" else drafter
    return HFEngine.from_pretrained(resolve_model("arith"), dtype="float32", device="cpu", draft=draft,
                                    pack_siblings=pack == "pack")


def search_section(args: argparse.Namespace, questions: list[str]) -> None:
    workloads = [("best-of-16", "best_of_n", {"select": "majority"}), ("particle", "particle", {"prm": load_prm("arith")})]
    names = ["off"] + args.drafters
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for _ in range(args.repeat):
        for name in names:
            for label, strategy, options in workloads:
                engine = new_engine(name)  # fresh each run: drafters learn, so every run starts cold
                start, cpu = time.perf_counter(), time.process_time()
                results = []
                for i in range(0, len(questions), args.concurrency):
                    results += solve_many(engine, questions[i : i + args.concurrency], strategy=strategy, budget=16,
                                          seed=args.seed, **options)
                wall = time.perf_counter() - start
                led = engine.ledger
                runs.setdefault((name, label), []).append({
                    "wall": wall,
                    "cpu": time.process_time() - cpu,
                    "trees": [[(n.id, tuple(n.token_ids)) for n in r.tree] for r in results],
                    "tpv": led.generated_tokens / max(1, led.generated_tokens - led.draft_accepted),
                    "forwards": led.forward_passes,
                    "mb": engine.drafter.memory_bytes() / 1e6 if engine.drafter else 0.0,
                })
    print(f"\n### search: arith level 3, {len(questions)} problems, budget 16, {args.concurrency} at a time, "
          f"median of {args.repeat}\n")
    print("| drafter | workload | tokens / verification | forward passes | wall s | wall ratio vs off | CPU s | CPU ratio vs off "
          "| drafter MB | identical |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, _, _ in workloads:
        ref = runs[("off", label)]
        base = statistics.median(r["wall"] for r in ref)
        base_cpu = statistics.median(r["cpu"] for r in ref)
        for name in names:
            rs = runs[(name, label)]
            wall = statistics.median(r["wall"] for r in rs)
            cpu = statistics.median(r["cpu"] for r in rs)
            same = all(r["trees"] == ref[0]["trees"] for r in rs)
            last = rs[-1]
            print(f"| {name} | {label} | {last['tpv']:.2f} | {last['forwards']} | {wall:.1f} | {base / wall:.2f}x | "
                  f"{cpu:.1f} | {base_cpu / cpu:.2f}x | {last['mb']:.1f} | {same} |", flush=True)


class _ForwardCounter:
    def __init__(self, model: torch.nn.Module) -> None:
        self.calls = 0
        model.register_forward_pre_hook(self._hook)

    def _hook(self, *_: Any) -> None:
        self.calls += 1


def lookup_section(args: argparse.Namespace, prompts: list[str]) -> None:
    engine = new_engine("off")
    model, tok = engine.model, engine.tokenizer
    counter = _ForwardCounter(model)
    eos = sorted(engine.eos_ids)
    rows: dict[str, dict[str, Any]] = {}

    def hf(lookup: int | None) -> tuple[list[list[int]], int]:
        outs, before = [], counter.calls
        for p in prompts:
            ids = torch.tensor([tok(p)["input_ids"]])
            extra = {"prompt_lookup_num_tokens": lookup} if lookup else {}
            with torch.inference_mode():
                out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=args.max_tokens,
                                     eos_token_id=eos, pad_token_id=eos[0], **extra)
            outs.append(out[0, ids.shape[1]:].tolist())
        return outs, counter.calls - before

    def ours(name: str) -> tuple[list[list[int]], int]:
        eng = new_engine(name)
        outs = [engine_generate(eng, p, sampling=Sampling(temperature=0.0), stop=Stop(max_tokens=args.max_tokens)).samples[0].token_ids
                for p in prompts]
        return outs, eng.ledger.forward_passes

    configs: list[tuple[str, Any]] = [("HF generate", lambda: hf(None)),
                                      (f"HF prompt lookup ({args.lookup})", lambda: hf(args.lookup)),
                                      ("engine, drafting off", lambda: ours("off"))]
    configs += [(f"engine, {d}", lambda d=d: ours(d)) for d in args.drafters]
    for _ in range(args.repeat):
        for label, run in configs:
            start, cpu = time.perf_counter(), time.process_time()
            outs, forwards = run()
            wall = time.perf_counter() - start
            r = rows.setdefault(label, {"walls": [], "cpus": [], "outs": outs, "forwards": forwards})
            r["walls"].append(wall)
            r["cpus"].append(time.process_time() - cpu)
    ref = rows["HF generate"]
    base = statistics.median(ref["walls"])
    base_cpu = statistics.median(ref["cpus"])
    print(f"\n### lookup: one greedy sequence per prompt, {len(prompts)} arith prompts, at most {args.max_tokens} tokens, "
          f"median of {args.repeat}\n")
    print("| decoder | tokens / forward | forward passes | wall s | wall ratio vs HF generate | CPU s | CPU ratio vs HF generate "
          "| same tokens as HF generate |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, r in rows.items():
        n_tokens = sum(len(o) for o in r["outs"])
        same = sum(_strip(o, eos) == _strip(g, eos) for o, g in zip(r["outs"], ref["outs"]))
        wall = statistics.median(r["walls"])
        cpu = statistics.median(r["cpus"])
        print(f"| {label} | {n_tokens / r['forwards']:.2f} | {r['forwards']} | {wall:.2f} | {base / wall:.2f}x | "
              f"{cpu:.2f} | {base_cpu / cpu:.2f}x | {same}/{len(prompts)} |", flush=True)


def _strip(ids: list[int], eos: list[int]) -> list[int]:
    return [t for t in ids if t not in eos]


def shape_section(args: argparse.Namespace) -> None:
    from transformers import AutoModelForCausalLM, Qwen2Config

    cfg = Qwen2Config(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                      num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, tie_word_embeddings=True,
                      attn_implementation="sdpa")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    print(f"\n### shape: Qwen2.5-0.5B config, random weights, float32, {torch.get_num_threads()} threads; one forward "
          f"of k tokens per sequence after a 256-token prefix (median of {args.repeat}); ratio = cost against k = 1, "
          f"the tokens a verification must yield to break even\n")
    print("| batch | logits at | k = 1 ms | " + " | ".join(f"k = {k}" for k in args.shape_k[1:]) + " |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in args.shape_k[1:]) + " |")
    for batch in (1, 16):
        prefix = torch.randint(0, cfg.vocab_size, (batch, 256))
        with torch.inference_mode():
            cache = model(prefix, use_cache=True).past_key_values
            # "all k": what verification computes now; "last": the output layer on one position only,
            # the floor for verification that computes logits only where it needs them.
            for label, keep in (("all k", 0), ("last", 1)):
                costs = []
                for k in args.shape_k:
                    times = []
                    for _ in range(args.repeat):
                        ids = torch.randint(0, cfg.vocab_size, (batch, k))
                        start = time.perf_counter()
                        model(ids, past_key_values=cache, use_cache=True, logits_to_keep=keep)
                        times.append(time.perf_counter() - start)
                        cache.crop(-k)
                    costs.append(statistics.median(times))
                print(f"| {batch} | {label} | {costs[0] * 1e3:.0f} | " + " | ".join(f"{c / costs[0]:.2f}x" for c in costs[1:])
                      + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--drafters", default="default,default+pack,spine,suffix",
                        help="configurations beside off: default (draft=True), a drafter name, NAME+pack")
    parser.add_argument("--sections", default="search,lookup,shape")
    parser.add_argument("--lookup", type=int, default=10, help="HF prompt_lookup_num_tokens")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--shape-k", default="1,3,5,9,17")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.drafters = args.drafters.split(",")
    args.shape_k = [int(k) for k in args.shape_k.split(",")]
    problems = arith_problems(3, args.n, seed=11)
    sections = args.sections.split(",")
    if "search" in sections:
        search_section(args, [p.question for p in problems])
    if "lookup" in sections:
        lookup_section(args, [p.prompt for p in problems])
    if "shape" in sections:
        shape_section(args)


if __name__ == "__main__":
    main()
