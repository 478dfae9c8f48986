"""`reason eval` on a math suite: --levels / --subjects filters, the per-level and per-subject
summary tables, and the default qwen-math prompt as the engine receives it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import tasks.evaluation
from reason.cli import main
from reason.cli.eval import print_summary
from tasks.evaluation import CandidateRecord, EvalRecord, read_records

DATA = Path(__file__).resolve().parent.parent / "tasks" / "data" / "math500" / "test.jsonl"
LEVELS, SUBJECTS, LIMIT = (1, 2), ("Precalculus", "Geometry"), 4
# The documented qwen-math prompt (tasks/prompts.py), through a Qwen-style ChatML template.
QWEN_MATH = ("<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
             "<|im_start|>user\n{problem}<|im_end|>\n<|im_start|>assistant\n")


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def table(output: str, title: str) -> list[list[str]]:
    """The body rows (cells stripped) of the rich table titled ``title`` in ``output``."""
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == title), None)
    assert start is not None, f"no table {title!r} in:\n{output}"
    rows = []
    for line in lines[start + 1:]:
        if line.startswith("└"):
            break
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if line.startswith("│") and cells[0].isdigit():
            rows.append(cells)
    return rows


@pytest.fixture(scope="module")
def filtered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One math500 eval with --levels and --subjects on a tiny Qwen2 checkpoint (ChatML template), the
    default prompt template, and a spy on the search that records each tree's root tokens."""
    tmp = tmp_path_factory.mktemp("math")
    ckpt = tmp / "tiny"
    assert run("tiny-model", str(ckpt), "--arch", "qwen2").exit_code == 0
    out = tmp / "run.jsonl"
    roots: dict[str, list[int]] = {}
    real = tasks.evaluation.solve_problems

    def spy(engine: Any, problems: Any, *, on_result: Any, **kwargs: Any) -> Any:
        def seen(k: int, result: Any) -> None:
            roots[problems[k].id] = list(result.tree.root.token_ids)
            on_result(k, result)

        return real(engine, problems, on_result=seen, **kwargs)

    args = ["eval", "--suite", "math500", "--model", str(ckpt), "--budget", "1", "--max-tokens", "4",
            "-o", "select=majority", "--limit", str(LIMIT), "--levels", ",".join(map(str, LEVELS)),
            "--subjects", ",".join(SUBJECTS), "--out", str(out)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tasks.evaluation, "solve_problems", spy)  # what evaluate() calls
        res = run(*args)
    assert res.exit_code == 0, res.output
    return {"ckpt": ckpt, "out": out, "args": args, "output": res.output, "roots": roots,
            "records": sorted(read_records(out), key=lambda r: r.index)}


def expected_rows() -> list[dict[str, Any]]:
    """The suite's rows that pass the filters, read straight from the data file, first LIMIT kept."""
    rows = [json.loads(line) for line in DATA.read_text().splitlines()]
    return [r for r in rows if r["level"] in LEVELS and r["subject"] in SUBJECTS][:LIMIT]


def test_levels_and_subjects_filter_the_suite(filtered):
    want = expected_rows()
    records = filtered["records"]
    assert [r.id for r in records] == [w["unique_id"] for w in want]
    assert [r.index for r in records] == list(range(LIMIT))  # positions in the filtered suite
    assert [(r.level, r.subject) for r in records] == [(w["level"], w["subject"]) for w in want]
    assert {r.level for r in records} == set(LEVELS) and {r.subject for r in records} == set(SUBJECTS)
    # The filters are part of the run's config: a run with other filters may not resume into the file.
    args = filtered["args"]
    other = run(*args[: args.index("--levels") + 1], "1", *args[args.index("--levels") + 2:])
    assert other.exit_code == 2 and "different config" in other.output, other.output
    none = run("eval", "--suite", "math500", "--subjects", "Astrology", "--budget", "1")
    assert none.exit_code == 2 and none.output.startswith("error: subjects:") and "Algebra" in none.output
    arith = run("eval", "--suite", "arith:1", "--levels", "1", "--budget", "1")
    assert arith.exit_code == 2 and arith.output.startswith("error: suite:"), arith.output


def test_summary_breaks_accuracy_down_by_level_and_subject(filtered):
    records = filtered["records"]
    for field in ("level", "subject"):
        rows = table(filtered["output"], f"accuracy by {field}")
        got = {(int(row[0]), row[1]): (int(row[2]), float(row[3])) for row in rows}
        want: dict[tuple[int, str], list[bool]] = {}
        for r in records:
            want.setdefault((r.budget, str(getattr(r, field))), []).append(r.correct)
        assert got == {k: (len(v), round(sum(v) / len(v), 3)) for k, v in want.items()}
        assert len(got) == 2


def test_summary_breakdown_accuracy_per_subject(capsys):
    """Accuracies that differ per subject and level come out in their own rows."""
    def rec(i: int, subject: str, level: int, correct: bool) -> EvalRecord:
        return EvalRecord(id=str(i), index=i, budget=2, label="x", answer="1", gold="1", correct=correct,
                          candidates=[CandidateRecord(answer="1", score=None, correct=correct)] * 2,
                          ledger={"generated_tokens": 5}, seed=0, config_hash="h", level=level, subject=subject)

    print_summary([rec(0, "Algebra", 1, True), rec(1, "Algebra", 2, False), rec(2, "Geometry", 2, False),
                   rec(3, "Algebra", 1, True)])
    out = capsys.readouterr().out
    by_subject = {row[1]: (row[2], row[3]) for row in table(out, "accuracy by subject")}
    assert by_subject == {"Algebra": ("3", "0.667"), "Geometry": ("1", "0.000")}
    by_level = {row[1]: (row[2], row[3]) for row in table(out, "accuracy by level")}
    assert by_level == {"1": ("2", "1.000"), "2": ("2", "0.000")}


def test_default_math_prompt_is_qwen_math(filtered):
    """What the engine tokenised at each tree's root is the qwen-math system message and the problem
    as the user turn, through the checkpoint's chat template."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(filtered["ckpt"])
    roots = filtered["roots"]
    want = expected_rows()
    assert sorted(roots) == sorted(w["unique_id"] for w in want)
    for w in want:
        text = tok.decode(roots[w["unique_id"]], clean_up_tokenization_spaces=False)
        assert text == QWEN_MATH.replace("{problem}", w["problem"])
