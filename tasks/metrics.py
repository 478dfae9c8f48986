"""Metrics from one evaluation run: accuracy of the chosen answers with bootstrap intervals, and
majority@k, PRM-weighted@k and pass@k for k = 1, 2, 4, ... up to the number of candidates, by
subsampling each problem's candidates (whole groups at a time when candidates come in groups, such as
the particles of one resampling lineage), plus breakdowns by level or subject.

Records are :class:`tasks.evaluation.EvalRecord` (anything with ``budget``, ``correct``,
``candidates`` of ``answer``/``score``/``correct`` and a ``ledger`` dict works).

Every figure counts each record key (config hash, budget, problem id) once, so a file that holds a
problem twice (two runs appended to one file) is not counted double, and none depends on the order of
the records: groups are sorted by key, subsamples are seeded per problem, and bootstrap intervals are
seeded by the keys they cover.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k of ``n`` samples with ``c`` correct: ``1 - C(n-c, k) / C(n, k)``."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def samples(candidates: Sequence[Any]) -> list[Any]:
    """The candidates with each repeated by its ``count`` (how many samples it stands for: the tree
    merges identical samples into one candidate), so votes and subsamples count every sample."""
    return [c for c in candidates for _ in range(max(1, int(getattr(c, "count", 1) or 1)))]


def vote(candidates: Sequence[Any], weighted: bool) -> bool:
    """Whether the answer with the most votes (summed scores when ``weighted``) is correct; ties go
    to the answer seen first; candidates without an answer do not vote."""
    tally: dict[str, float] = defaultdict(float)
    right: dict[str, bool] = {}
    for c in candidates:
        if c.answer is None:
            continue
        tally[c.answer] += (c.score or 0.0) if weighted else 1.0
        right.setdefault(c.answer, bool(c.correct))
    if not tally:
        return False
    order = list(tally)
    best = max(order, key=lambda a: (tally[a], -order.index(a)))
    return right[best]


def subsample(candidates: Sequence[Any], k: int, rng: random.Random, groups: Sequence[Any] | None = None) -> list[Any]:
    """``k`` candidates drawn without replacement; with ``groups`` (one id per candidate) whole groups
    are drawn until ``k`` candidates are taken, so a group is never split."""
    if groups is None:
        return rng.sample(list(candidates), k)
    members: dict[Any, list[Any]] = defaultdict(list)
    for c, g in zip(candidates, groups):
        members[g].append(c)
    ids = list(members)
    rng.shuffle(ids)
    out: list[Any] = []
    for g in ids:
        if len(out) >= k:
            break
        out += members[g]
    return out


def ks_up_to(n: int) -> list[int]:
    """1, 2, 4, ... up to ``n`` (``n`` itself included)."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return ks + [n] if n >= 1 else []


def record_key(record: Any) -> tuple[str, int, str] | None:
    """What identifies a record: its config hash, budget and problem id (None without an id)."""
    ident = getattr(record, "id", None)
    if ident is None:
        return None
    return str(getattr(record, "config_hash", "")), int(record.budget), str(ident)


def unique(records: Sequence[Any]) -> list[Any]:
    """``records`` with each key once (the first kept, as a resumed run keeps it); records without
    an id are all kept."""
    seen: set[tuple[str, int, str]] = set()
    out = []
    for r in records:
        key = record_key(r)
        if key is not None:
            if key in seen:
                continue
            seen.add(key)
        out.append(r)
    return out


def keyed_seed(seed: int, records: Sequence[Any]) -> int:
    """A seed from ``seed`` and the records' keys (their order does not matter)."""
    keys = sorted(repr(record_key(r)) for r in records)
    return int(hashlib.sha256(f"{seed}|{'|'.join(keys)}".encode()).hexdigest()[:12], 16)


def at_k(records: Sequence[Any], k: int, draws: int = 32, seed: int = 0,
         groups: Callable[[Any], Sequence[Any] | None] | None = None) -> dict[str, float]:
    """Mean majority@k, weighted@k and pass@k over ``records`` (problems with fewer than ``k``
    candidates use all of theirs). Votes average ``draws`` subsamples per problem, seeded by ``seed``
    and the record's key (by its position for records without one)."""
    maj = wtd = hit = 0.0
    for position, r in enumerate(records):
        key = record_key(r)
        rng = random.Random(f"{seed}|{key if key is not None else position}")
        cands = samples(r.candidates)
        n = len(cands)
        if n == 0:
            continue
        kk = min(k, n)
        hit += pass_at_k(n, sum(bool(c.correct) for c in cands), kk)
        g = groups(r) if groups is not None else None
        if g is not None:
            g = [gid for c, gid in zip(r.candidates, g) for _ in range(max(1, int(getattr(c, "count", 1) or 1)))]
        reps = 1 if kk == n else draws
        for _ in range(reps):
            pick = cands if kk == n else subsample(cands, kk, rng, g)
            maj += vote(pick, weighted=False) / reps
            wtd += vote(pick, weighted=True) / reps
    total = max(len(records), 1)
    return {"majority": maj / total, "weighted": wtd / total, "pass": hit / total}


def bootstrap_ci(values: Sequence[float], reps: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampling problems); the values are
    sorted first, so their order does not matter."""
    vals = sorted(values)
    if not vals:
        return 0.0, 0.0
    rng = random.Random(seed)
    n = len(vals)
    means = sorted(sum(vals[rng.randrange(n)] for _ in range(n)) / n for _ in range(reps))
    lo = means[int((1 - level) / 2 * reps)]
    hi = means[min(reps - 1, int((1 + level) / 2 * reps))]
    return lo, hi


def by_budget(records: Sequence[Any]) -> dict[int, list[Any]]:
    """Records grouped by budget, budgets ascending, each key once (:func:`unique`), each group sorted
    by problem id (records without an id last, in their order)."""
    out: dict[int, list[Any]] = defaultdict(list)
    for r in unique(records):
        out[r.budget].append(r)
    for group in out.values():
        group.sort(key=lambda r: (record_key(r) is None, str(getattr(r, "id", ""))))
    return dict(sorted(out.items()))


def summarize(records: Sequence[Any], seed: int = 0) -> list[dict[str, Any]]:
    """One row per budget: problems, accuracy and its 95% interval, majority/weighted/pass at the
    full candidate count, and mean generated tokens and PRM calls per problem."""
    rows = []
    for budget, group in by_budget(records).items():
        acc = [float(r.correct) for r in group]
        n = max((len(samples(r.candidates)) for r in group), default=1)
        full = at_k(group, n, seed=seed)
        rows.append({
            "budget": budget,
            "problems": len(group),
            "accuracy": sum(acc) / len(acc),
            "ci": bootstrap_ci(acc, seed=keyed_seed(seed, group)),
            **full,
            "tokens": sum(r.ledger.get("generated_tokens", 0) for r in group) / len(group),
            "prm_calls": sum(r.ledger.get("prm_calls", 0) for r in group) / len(group),
        })
    return rows


def curves(records: Sequence[Any], seed: int = 0) -> dict[int, dict[int, dict[str, float]]]:
    """For each budget, majority/weighted/pass at k = 1, 2, 4, ... up to the candidate count."""
    out: dict[int, dict[int, dict[str, float]]] = {}
    for budget, group in by_budget(records).items():
        n = max((len(samples(r.candidates)) for r in group), default=1)
        out[budget] = {k: at_k(group, k, seed=seed) for k in ks_up_to(n)}
    return out


def breakdown(records: Sequence[Any], field: str = "level", seed: int = 0) -> dict[Any, dict[str, Any]]:
    """Accuracy with its 95% interval per value of ``field`` (``level`` or ``subject``), per budget."""
    out: dict[Any, dict[str, Any]] = {}
    for budget, group in by_budget(records).items():
        parts: dict[Any, list[Any]] = defaultdict(list)
        for r in group:
            parts[getattr(r, field, None)].append(r)
        for value, part in sorted(parts.items(), key=lambda kv: str(kv[0])):
            acc = [float(r.correct) for r in part]
            out[(budget, value)] = {"problems": len(acc), "accuracy": sum(acc) / len(acc),
                                    "ci": bootstrap_ci(acc, seed=keyed_seed(seed, part))}
    return out
