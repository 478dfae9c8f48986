"""What vLLM's sampling extensions cost in the hf engine's token choice, and that the defaults cost nothing.

Starts one expansion of ``--rows`` children of an arith prompt (seed 1, so each row has a real
sequence with a history of path and generated tokens), decodes a few steps, then times
``ModelRunner.choose`` on those rows with fixed random logits of the arith vocabulary (99) and of
``--vocab`` (a large-model vocabulary), best of ``--reps`` rounds of 20 calls, CPU time, one thread.
Settings: the defaults, ``min_p``, the three penalties, ``min_tokens`` (masking on), greedy and at
temperature 0.8. To compare the defaults with the code before the extensions, run the same script
with ``PYTHONPATH`` pointing at an export of the earlier commit (``--only-defaults``: that code has
no extension fields).

Run: ``python benchmarks/sampling_extensions.py [--rows 256] [--vocab 32000] [--reps 10] [--only-defaults]``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from reason.core.engine.base import ExpandRequest, Sampling, Stop
from reason.core.engine.hf import HFEngine
from tasks.registry import resolve_model

SETTINGS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "defaults": ({}, {}),
    "min_p 0.05": ({"min_p": 0.05}, {}),
    "penalties (rep 1.2, presence 0.5, frequency 0.5)": (
        {"repetition_penalty": 1.2, "presence_penalty": 0.5, "frequency_penalty": 0.5}, {}),
    "min_tokens 30": ({}, {"min_tokens": 30}),
}


def time_choose(engine: HFEngine, rows: int, sampling: dict[str, Any], stop: dict[str, Any], vocabs: list[int],
                reps: int) -> dict[int, float]:
    """Best CPU milliseconds of one ``choose`` call over ``rows`` live rows, per vocabulary size."""
    tree = engine.new_tree("((23+20)*5-17)*3")
    engine.submit(ExpandRequest(tree, tree.root, rows, Stop(max_tokens=40, **stop), Sampling(seed=1, **sampling)))
    for _ in range(3):
        engine.step()
    seqs = list(engine.scheduler.running[0].seqs)
    out = {}
    for vocab in vocabs:
        logits = torch.randn(rows, vocab, generator=torch.Generator().manual_seed(0))
        best = float("inf")
        for _ in range(reps):
            copies = [logits.clone() for _ in range(20)]
            began = time.process_time()
            for c in copies:
                engine.runner.choose(c, seqs, [0] * rows)
            best = min(best, (time.process_time() - began) / 20)
        out[vocab] = best * 1e3
    while engine.has_work():
        engine.step()
    return out


def main() -> None:
    """Print a markdown table: ms of ``choose`` per step for each setting, temperature and vocabulary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--only-defaults", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    engine = HFEngine.from_pretrained(resolve_model("arith"), dtype="float32", device="cpu")
    vocabs = [engine.runner.vocab_size, args.vocab]
    print(f"| setting | T | ms / step, vocab {vocabs[0]} | ms / step, vocab {vocabs[1]} |")
    print("| --- | --- | --- | --- |")
    for name, (sampling, stop) in SETTINGS.items():
        if args.only_defaults and name != "defaults":
            continue
        for temperature in (0.0, 0.8):
            ms = time_choose(engine, args.rows, {"temperature": temperature, **sampling}, stop, vocabs, args.reps)
            print(f"| {name} | {temperature} | {ms[vocabs[0]]:.2f} | {ms[vocabs[1]]:.2f} |")


if __name__ == "__main__":
    main()
