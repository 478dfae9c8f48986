"""Accuracy-versus-compute plots of evaluation runs (matplotlib, written to PNG)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from reason.core.errors import ReasonError
from tasks.evaluation import read_records
from tasks.metrics import bootstrap_ci, by_budget


def plot_runs(paths: Sequence[Path], out: Path, title: str | None = None) -> Path:
    """Draw accuracy against budget and against mean generated tokens per problem, one line per
    strategy label (runs of one label across files are pooled), with 95% bootstrap bands."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ReasonError("plot", "matplotlib is not installed", "pip install 'reason[plot]'") from None
    by_label: dict[str, list] = defaultdict(list)
    for path in paths:
        records = read_records(path)
        if not records:
            raise ReasonError("runs", f"{path} holds no eval records", "give files written by reason eval --out")
        for r in records:
            by_label[r.label].append(r)
    fig, (ax_budget, ax_tokens) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, records in sorted(by_label.items()):
        xs, toks, ys, lows, highs = [], [], [], [], []
        for budget, group in by_budget(records).items():
            acc = [float(r.correct) for r in group]
            lo, hi = bootstrap_ci(acc)
            xs.append(budget)
            toks.append(sum(r.ledger.get("generated_tokens", 0) for r in group) / len(group))
            ys.append(sum(acc) / len(acc))
            lows.append(lo)
            highs.append(hi)
        for ax, x in ((ax_budget, xs), (ax_tokens, toks)):
            line, = ax.plot(x, ys, marker="o", label=label)
            ax.fill_between(x, lows, highs, alpha=0.2, color=line.get_color())
    for ax, name in ((ax_budget, "budget (full-solution equivalents)"), (ax_tokens, "generated tokens per problem")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel(name)
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
    ax_budget.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
