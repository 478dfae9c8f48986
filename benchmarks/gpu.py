"""The engine on one GPU, in one script that finishes in under 8 minutes.

Sections (each prints a table; ``--sections`` picks some):

* ``identity``: the bundled arith model in float32: greedy tokens of this engine against HF
  ``generate`` on the same device, prompt by prompt; seeded sampling (16 samples a prompt) equal
  with drafting on and off, and equal run to run.
* ``throughput``: a random-weight model of Qwen2.5-1.5B's shape (``--layers`` of its 28 decoder
  layers; bfloat16 on a GPU), this engine against HF ``generate`` on three workloads: one greedy
  sequence at a time, 16 samples of one 1,000-token prompt, and 64 sequences at once (64 prompts,
  one sample each). Tokens per second and their ratio.
* ``branching``: the same model; every node gets ``--width`` children of 16-token steps to
  ``--depth``: this engine against itself with prefix caching off (model tokens fed and wall time).
* ``drafting``: the arith model, best-of-16 and particle filtering one problem at a time, and one
  greedy sequence per prompt: drafting off against the default drafter (wall ratio, tokens per
  verification, identical trees).

Run on a GPU machine: ``python benchmarks/gpu.py`` (``--device cuda``, the default when CUDA is
there). On CPU, ``python benchmarks/gpu.py --device cpu --quick`` runs every section on small sizes
in about a minute (the test suite does, so the script cannot rot).

A GPU machine without this project's dependencies and no network: on a machine with the network,
``pip download -d wheels pydantic sympy networkx math-verify click rich`` (matching the GPU
machine's Python), carry ``wheels/`` and the checkout over, and there run
``pip install --no-index --find-links wheels -e . --no-deps && pip install --no-index --find-links wheels
pydantic sympy networkx math-verify click rich`` (torch and transformers are already there).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from transformers import AutoModelForCausalLM, Qwen2Config

from engine import grow  # benchmarks/engine.py: the branching workload, shared with the CPU benchmark
from reason.core.engine.base import ExpandRequest, Sampling, Stop
from reason.core.engine.hf import HFEngine
from reason.core.engine.hf.nocache import NoPrefixCacheEngine
from reason.core.tiny import build_tokenizer
from reason.shortcuts import generate as engine_generate
from reason.shortcuts import solve_many
from rewards.catalog import load_prm
from tasks.arith.problems import generate as arith_problems
from tasks.registry import resolve_model

DEFAULT_DRAFTER = "suffix"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    """``fn()`` and its wall time, the device's queued work included."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


QWEN_VOCAB = 151936


def qwen25_15b(layers: int, vocab: int) -> Qwen2Config:
    """Qwen2.5-1.5B's published shape with ``layers`` decoder layers and ``vocab`` rows (151,936
    in the real model; prompts are random token ids, and the project's small tokenizer only
    decodes the ids it knows, which the engine's text needs and the timing does not)."""
    return Qwen2Config(vocab_size=vocab, hidden_size=1536, intermediate_size=8960, num_hidden_layers=layers,
                       num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=32768,
                       rope_theta=1000000.0, tie_word_embeddings=True, rms_norm_eps=1e-6)


def arith_engine(device: torch.device, draft: str | None) -> HFEngine:
    return HFEngine.from_pretrained(resolve_model("arith"), dtype="float32", device=str(device), draft=draft)


# -- identity -------------------------------------------------------------------------------------

def identity_section(args: argparse.Namespace, device: torch.device) -> None:
    problems = arith_problems(3, args.prompts, seed=11)
    plain = arith_engine(device, None)
    drafted = arith_engine(device, DEFAULT_DRAFTER)
    model, tok = plain.model, plain.tokenizer
    eos = sorted(plain.eos_ids)
    greedy_same = 0
    for p in problems:
        ids = torch.tensor([tok(p.prompt)["input_ids"]], device=device)
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=args.max_tokens,
                                 eos_token_id=eos, pad_token_id=eos[0])
        theirs = [t for t in out[0, ids.shape[1]:].tolist() if t not in eos]
        ours = engine_generate(plain, p.prompt, sampling=Sampling(temperature=0.0), stop=Stop(max_tokens=args.max_tokens))
        greedy_same += [t for t in ours.samples[0].token_ids if t not in eos] == theirs

    def samples(engine: HFEngine) -> list[list[tuple[int, ...]]]:
        return [[tuple(s.token_ids) for s in engine_generate(engine, p.prompt, n=16, stop=Stop(max_tokens=args.max_tokens),
                                                             sampling=Sampling(temperature=1.0, seed=i)).samples]
                for i, p in enumerate(problems)]

    first, again, with_draft = samples(plain), samples(plain), samples(drafted)
    n = len(problems)
    print(f"\n### identity: arith model, float32, {device}, {n} prompts\n")
    print("| check | equal |")
    print("| --- | --- |")
    print(f"| greedy tokens, engine vs HF generate | {greedy_same}/{n} |")
    print(f"| 16 seeded samples, run vs rerun | {sum(a == b for a, b in zip(first, again))}/{n} |")
    print(f"| 16 seeded samples, drafting off vs {DEFAULT_DRAFTER} | {sum(a == b for a, b in zip(first, with_draft))}/{n} |")


# -- throughput -----------------------------------------------------------------------------------

def random_prompts(vocab: int, count: int, length: int, seed: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(4, vocab, (count, length), generator=gen).tolist()


def hf_generate(model: Any, ids: list[list[int]], n: int, new: int, sample: bool, device: torch.device) -> int:
    """HF ``generate`` on equal-length prompts; the tokens it generated."""
    x = torch.tensor(ids, device=device)
    extra = {"temperature": 1.0, "top_k": 0, "top_p": 1.0} if sample else {}
    with torch.inference_mode():
        out = model.generate(x, attention_mask=torch.ones_like(x), do_sample=sample, num_return_sequences=n,
                             max_new_tokens=new, min_new_tokens=new, pad_token_id=0, **extra)
    return (out.shape[1] - x.shape[1]) * out.shape[0]


def ours_generate(engine: HFEngine, ids: list[list[int]], n: int, new: int, sample: bool) -> int:
    trees = [engine.new_tree(x) for x in ids]
    stop = Stop(max_tokens=new, eos=False)
    made = engine.ledger.generated_tokens
    sampling = [Sampling(temperature=1.0, seed=i) if sample else Sampling(temperature=0.0) for i in range(len(ids))]
    engine.expand_many([ExpandRequest(t, t.root, n, stop, s) for t, s in zip(trees, sampling)])
    for t in trees:
        engine.release(t)
    return engine.ledger.generated_tokens - made


def big_model(args: argparse.Namespace, device: torch.device, vocab: int) -> Any:
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    cfg = qwen25_15b(args.layers, vocab)
    if args.quick:  # the same architecture, small enough for a smoke run on CPU
        cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads = 128, 256, 4
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa", dtype=dtype).to(device).eval()


def throughput_section(args: argparse.Namespace, device: torch.device) -> None:
    tok = build_tokenizer()
    vocab = args.vocab
    model = big_model(args, device, vocab)
    engine = HFEngine(model, tok)
    workloads = [
        ("one greedy sequence at a time", [random_prompts(vocab, 1, 128, s) for s in range(args.singles)], 1, False),
        (f"16 samples of one {args.long_prompt}-token prompt", [random_prompts(vocab, 1, args.long_prompt, 7)], 16, True),
        (f"{args.batch} sequences at once", [random_prompts(vocab, args.batch, 128, 9)], 1, True),
    ]
    dtype = next(model.parameters()).dtype
    print(f"\n### throughput: Qwen2.5-1.5B shape ({args.layers} layers, random weights), {dtype}, {device}, "
          f"{args.new_tokens} new tokens a sequence, median of {args.repeat}\n")
    print("| workload | HF generate tok/s | engine tok/s | ratio |")
    print("| --- | --- | --- | --- |")
    for label, groups, n, sample in workloads:
        hf_runs, our_runs = [], []
        for r in range(args.repeat + 1):  # the first round warms up
            hf_tokens, hf_s = timed(lambda: sum(hf_generate(model, g, n, args.new_tokens, sample, device) for g in groups), device)
            our_tokens, our_s = timed(lambda: sum(ours_generate(engine, g, n, args.new_tokens, sample) for g in groups), device)
            if r:
                hf_runs.append(hf_tokens / hf_s)
                our_runs.append(our_tokens / our_s)
        hf_rate, our_rate = statistics.median(hf_runs), statistics.median(our_runs)
        print(f"| {label} | {hf_rate:.1f} | {our_rate:.1f} | {our_rate / hf_rate:.2f}x |", flush=True)


# -- branching ------------------------------------------------------------------------------------

def branching_section(args: argparse.Namespace, device: torch.device) -> None:
    tok = build_tokenizer()
    model = big_model(args, device, args.vocab)
    ids = random_prompts(args.vocab, args.branch_prompts, 256, 3)
    print(f"\n### branching: {args.branch_prompts} prompts of 256 tokens, width {args.width}, depth {args.depth}, "
          f"16-token steps, {device}\n")
    print("| engine | nodes | model tokens fed | forwards | wall s |")
    print("| --- | --- | --- | --- | --- |")
    rows = {}
    for name, cls in (("prefix cache", HFEngine), ("no prefix cache", NoPrefixCacheEngine)):
        engine = cls(model, tok)
        grow(engine, ids[:1], 2, 1, 4)  # warm-up
        led = engine.ledger
        before = (led.prefill_tokens + led.generated_tokens, led.forward_passes)
        nodes, seconds = timed(lambda: grow(engine, ids, args.width, args.depth, 16), device)
        fed, forwards = led.prefill_tokens + led.generated_tokens - before[0], led.forward_passes - before[1]
        rows[name] = (fed, seconds)
        print(f"| {name} | {nodes} | {fed} | {forwards} | {seconds:.2f} |")
    (fed_c, s_c), (fed_n, s_n) = rows["prefix cache"], rows["no prefix cache"]
    print(f"\nprefix cache: {fed_n / fed_c:.2f}x fewer model tokens, {s_n / s_c:.2f}x faster")


# -- drafting -------------------------------------------------------------------------------------

def drafting_section(args: argparse.Namespace, device: torch.device) -> None:
    questions = [p.question for p in arith_problems(3, args.search_problems, seed=11)]
    prompts = [p.prompt for p in arith_problems(3, args.prompts, seed=11)]
    prm = load_prm("arith")
    print(f"\n### drafting: arith model, float32, {device}, off vs {DEFAULT_DRAFTER} (median of {args.repeat})\n")
    print("| workload | off s | drafted s | ratio | tokens / verification | identical |")
    print("| --- | --- | --- | --- | --- | --- |")
    workloads: list[tuple[str, Callable[[HFEngine], Any]]] = [
        (f"best-of-16, {len(questions)} problems one at a time",
         lambda e: [solve_many(e, [q], strategy="best_of_n", budget=16, seed=0, select="majority")[0].tree for q in questions]),
        (f"particle, {len(questions)} problems one at a time",
         lambda e: [solve_many(e, [q], strategy="particle", budget=16, seed=0, prm=prm)[0].tree for q in questions]),
        (f"one greedy sequence, {len(prompts)} prompts",
         lambda e: [engine_generate(e, p, sampling=Sampling(temperature=0.0), stop=Stop(max_tokens=args.max_tokens)).samples[0].token_ids
                    for p in prompts]),
    ]
    for label, run in workloads:
        walls: dict[str, list[float]] = {"off": [], "on": []}
        outs: dict[str, Any] = {}
        tpv = 0.0
        for _ in range(args.repeat):
            for mode in ("off", "on"):
                engine = arith_engine(device, DEFAULT_DRAFTER if mode == "on" else None)
                out, seconds = timed(lambda: run(engine), device)
                walls[mode].append(seconds)
                outs[mode] = [[tuple(n.token_ids) for n in t] for t in out] if not isinstance(out[0], list) else out
                if mode == "on":
                    led = engine.ledger
                    tpv = led.generated_tokens / max(1, led.generated_tokens - led.draft_accepted)
        off, on = statistics.median(walls["off"]), statistics.median(walls["on"])
        print(f"| {label} | {off:.2f} | {on:.2f} | {off / on:.2f}x | {tpv:.2f} | {outs['off'] == outs['on']} |", flush=True)


SECTIONS = {"identity": identity_section, "throughput": throughput_section, "branching": branching_section,
            "drafting": drafting_section}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="small sizes everywhere (a smoke run)")
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--layers", type=int, default=28, help="decoder layers of the 1.5B-shaped model (28: all)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here; use --device cpu --quick")
    quick = args.quick
    args.prompts = 4 if quick else 50
    args.max_tokens = 24 if quick else 128
    args.singles = 1 if quick else 4
    args.long_prompt = 64 if quick else 1000
    args.batch = 4 if quick else 64
    args.new_tokens = 8 if quick else 256
    args.branch_prompts = 2 if quick else 8
    args.width, args.depth = (2, 2) if quick else (4, 3)
    args.search_problems = 2 if quick else 20
    args.vocab = 512 if quick else QWEN_VOCAB
    if quick:
        args.layers, args.repeat = 1, 1
    print(f"torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    for name in args.sections.split(","):
        if name not in SECTIONS:
            raise SystemExit(f"--sections: unknown {name!r}; use {', '.join(SECTIONS)}")
        SECTIONS[name](args, device)


if __name__ == "__main__":
    main()
