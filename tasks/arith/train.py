"""Train the bundled arith policy: ``python -m tasks.arith.train --out tasks/arith/model``.

The shipped model is exactly the defaults (3000-step schedule stopped at step 1250, seed 0): about
7 minutes on the 2-core dev machine.

A tiny Llama (character tokenizer) learns the canonical step-by-step solutions of train-split
problems of every level, with the loss on the solution only. Seeded: the same seed and settings give
the same weights. The shipped model was made with the defaults (see ``--help``; the run time is
printed at the end and recorded in the README).
"""

from __future__ import annotations

import argparse
import math
import random
import time
from pathlib import Path

import torch

from tasks.arith.problems import generate
from tasks.arith.tokenizer import build_char_tokenizer

LEVEL_MIX = {1: 0.05, 2: 0.20, 3: 0.30, 4: 0.27, 5: 0.18}


def policy_config(vocab_size: int, hidden: int, layers: int, heads: int):
    """The policy's Llama config."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 3,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        rope_theta=10000.0,
    )


def training_texts(n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` (prompt, solution) pairs from the train split, mixed over levels."""
    out: list[tuple[str, str]] = []
    for level, share in LEVEL_MIX.items():
        for p in generate(level, int(n * share), seed=seed, split="train"):
            out.append((p.prompt, p.solution))
    random.Random(seed).shuffle(out)
    return out


def encode(tokenizer, pairs: list[tuple[str, str]]) -> list[tuple[list[int], int]]:
    """Token ids of prompt + solution + EOS, and where the solution starts."""
    out = []
    for prompt, solution in pairs:
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        s = tokenizer(solution, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        out.append((p + s, len(p)))
    return out


def batches(data, batch_size: int, pad_id: int, rng: random.Random):
    """Endless shuffled batches of (input_ids, labels) with the prompt and padding masked out."""
    order = list(range(len(data)))
    while True:
        rng.shuffle(order)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            chunk = [data[i] for i in order[start : start + batch_size]]
            width = max(len(ids) for ids, _ in chunk)
            x = torch.full((batch_size, width), pad_id, dtype=torch.long)
            y = torch.full((batch_size, width), -100, dtype=torch.long)
            for row, (ids, start_at) in enumerate(chunk):
                x[row, : len(ids)] = torch.tensor(ids)
                y[row, start_at : len(ids)] = torch.tensor(ids[start_at:])
            yield x, y


def train(
    out: Path | None,
    *,
    steps: int = 3000,
    batch_size: int = 48,
    lr: float = 3e-3,
    hidden: int = 128,
    layers: int = 4,
    heads: int = 4,
    problems: int = 60000,
    seed: int = 0,
    log_every: int = 100,
    snapshot_dir: Path | None = None,
    snapshot_every: int = 0,
    stop_at: int | None = None,
):
    """Train and (when ``out`` is given) save the model and tokenizer; returns the model.

    The learning-rate schedule spans ``steps``; ``stop_at`` ends training early on that schedule
    (the shipped model stops part-way: trained to the end it solves level 3 too reliably for
    search to have anything to do)."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    tokenizer = build_char_tokenizer()
    model = LlamaForCausalLM(policy_config(len(tokenizer), hidden, layers, heads))
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.bos_token_id = None
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    data = encode(tokenizer, training_texts(problems, seed))
    stream = batches(data, batch_size, tokenizer.pad_token_id, random.Random(seed))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))
    )
    model.train()
    started = time.time()
    for step in range(1, (stop_at or steps) + 1):
        x, y = next(stream)
        loss = model(input_ids=x, labels=y).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if log_every and step % log_every == 0:
            print(f"step {step}/{steps} loss {loss.item():.4f} ({time.time() - started:.0f}s)", flush=True)
        if snapshot_dir is not None and snapshot_every and step % snapshot_every == 0:
            model.save_pretrained(snapshot_dir / f"step{step}")
            tokenizer.save_pretrained(snapshot_dir / f"step{step}")
    model.eval()
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    print(f"trained {stop_at or steps} steps in {time.time() - started:.0f}s", flush=True)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "model")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=48)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--problems", type=int, default=60000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--snapshot-dir", type=Path, default=None, help="also save every --snapshot-every steps here")
    parser.add_argument("--snapshot-every", type=int, default=0)
    parser.add_argument("--stop-at", type=int, default=1250, help="stop at this step of the --steps schedule")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    train(
        args.out,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        hidden=args.hidden,
        layers=args.layers,
        heads=args.heads,
        problems=args.problems,
        seed=args.seed,
        snapshot_dir=args.snapshot_dir,
        snapshot_every=args.snapshot_every,
        stop_at=args.stop_at,
    )


if __name__ == "__main__":
    main()
