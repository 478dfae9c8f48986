"""Train the arith value model on the bundled policy's own rollouts:
``python -m tasks.arith.train_value --out tasks/arith/value``.

The policy samples solutions of train-split problems (levels 2-5, temperature 0.8); every prefix
of a rollout at a step boundary (the empty one included) is labelled with whether that rollout's
final answer was correct. A tiny Llama with a one-label token-classification head learns
P(correct | question, prefix) from the last token. Held-out rollouts of test-split problems give the
AUC printed at the end. Seeded.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch

from reason.core.engine.hf import HFEngine
from rewards.learn.metrics import auc
from rewards.value import LMValueModel
from tasks.arith.problems import STEP_DELIMITER, VALUE_PROMPT, generate
from tasks.arith.solutions import SampledSolution, sample_solutions
from tasks.arith.tokenizer import build_char_tokenizer
from tasks.arith.train import policy_config
from tasks.registry import resolve_model

__all__ = ["auc", "collect", "prefixes", "train_value", "value_config"]


def prefixes(rollout: SampledSolution) -> list[tuple[str, str, float]]:
    """(question, partial solution, label) for every step boundary of ``rollout``."""
    steps = rollout.steps
    label = 1.0 if rollout.correct else 0.0
    return [(rollout.problem.question, "".join(s + STEP_DELIMITER for s in steps[:k]), label) for k in range(len(steps) + 1)]


def collect(engine: HFEngine, split: str, per_level: int, samples: int, seed: int) -> dict[int, list[tuple[str, str, float]]]:
    """Labelled prefixes of the policy's rollouts on ``split`` problems, by level (2-5)."""
    out: dict[int, list[tuple[str, str, float]]] = {}
    for level in (2, 3, 4, 5):
        problems = generate(level, per_level, seed=seed + 17, split=split)
        out[level] = [x for rollouts in sample_solutions(engine, problems, samples, 0.8, seed + level) for r in rollouts for x in prefixes(r)]
    return out


def value_config(vocab_size: int, hidden: int, layers: int, heads: int):
    """The value model's config (for ``--scratch``): the policy's shape with one output label."""
    cfg = policy_config(vocab_size, hidden, layers, heads)
    cfg.num_labels = 1
    cfg.tie_word_embeddings = False
    return cfg


def train_value(
    data: list[tuple[str, str, float]], *, steps: int, batch_size: int, lr: float, hidden: int, layers: int,
    heads: int, seed: int, init_from: str | None = None
):
    """A trained token-classification value model and its tokenizer. With ``init_from`` (the
    policy's directory) the backbone starts from the policy's weights, which already do the
    arithmetic a value model must check; only the one-label head starts fresh."""
    from transformers import LlamaForTokenClassification

    torch.manual_seed(seed)
    tok = build_char_tokenizer()
    if init_from:
        model = LlamaForTokenClassification.from_pretrained(init_from, num_labels=1, dtype=torch.float32)
    else:
        model = LlamaForTokenClassification(value_config(len(tok), hidden, layers, heads))
    model.config.pad_token_id = tok.pad_token_id
    encoded = [(tok(VALUE_PROMPT.format(question=q, partial=p))["input_ids"], y) for q, p, y in data]
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50) * max(0.05, 1 - s / steps))
    model.train()
    for step in range(1, steps + 1):
        chunk = rng.sample(encoded, batch_size)
        width = max(len(ids) for ids, _ in chunk)
        x = torch.full((batch_size, width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((batch_size, width), dtype=torch.long)
        for row, (ids, _) in enumerate(chunk):
            x[row, : len(ids)] = torch.tensor(ids)
            mask[row, : len(ids)] = 1
        last = torch.tensor([len(ids) - 1 for ids, _ in chunk])
        y = torch.tensor([label for _, label in chunk])
        logits = model(input_ids=x, attention_mask=mask).logits[torch.arange(batch_size), last, 0]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 200 == 0:
            print(f"value step {step}/{steps} loss {loss.item():.4f}", flush=True)
    return model.eval(), tok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", default="arith")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "value")
    parser.add_argument("--per-level", type=int, default=250)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--hidden", type=int, default=96)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scratch", action="store_true", help="do not start from the policy's weights")
    args = parser.parse_args()
    started = time.time()
    engine = HFEngine.from_pretrained(resolve_model(args.policy), dtype="float32", device="cpu")
    train_data = [x for rows in collect(engine, "train", args.per_level, args.samples, args.seed).values() for x in rows]
    held_by_level = collect(engine, "test", max(20, args.per_level // 3), args.samples, args.seed + 1)
    held_out = [x for rows in held_by_level.values() for x in rows]
    print(f"{len(train_data)} training prefixes ({sum(y for *_, y in train_data) / len(train_data):.2f} positive), "
          f"{len(held_out)} held-out ({time.time() - started:.0f}s)", flush=True)
    policy_dir = None if args.scratch else resolve_model(args.policy)
    model, tok = train_value(train_data, steps=args.steps, batch_size=args.batch_size, lr=args.lr, hidden=args.hidden,
                             layers=args.layers, heads=args.heads, seed=args.seed, init_from=policy_dir)
    valuer = LMValueModel(model, tok, prompt_format=VALUE_PROMPT)
    scores = valuer.value_batch([(q, p) for q, p, _ in held_out]).values
    labels = [y for *_, y in held_out]
    print(f"held-out AUC {auc(scores, labels):.3f} on {len(held_out)} prefixes", flush=True)
    at = 0
    for level, rows in held_by_level.items():
        part = slice(at, at + len(rows))
        at += len(rows)
        print(f"  level {level}: AUC {auc(scores[part], labels[part]):.3f} on {len(rows)} prefixes", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    tok.save_pretrained(args.out)
    print(f"done in {time.time() - started:.0f}s", flush=True)


if __name__ == "__main__":
    main()
