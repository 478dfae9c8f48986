"""`reason eval`, `reason grade` and `reason plot`: suites, grading, resume, shards, plots."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from reason.cli import main
from rewards.graders import IntegerVerifier
from tasks import load_suite
from tasks.evaluation import EvalRecord, read_records, timing_free

DATA = Path(__file__).resolve().parent.parent / "tasks" / "data"


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_grade_math500_reference_solutions_and_perturbed(tmp_path):
    rows = [json.loads(line) for line in (DATA / "math500" / "test.jsonl").read_text().splitlines()]
    good = write_jsonl(tmp_path / "good.jsonl", [{"id": r["unique_id"], "prediction": r["solution"]} for r in rows])
    res = run("grade", "--suite", "math500", "--predictions", str(good))
    assert res.exit_code == 0, res.output
    assert "500/500 correct" in res.output
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"id": r["unique_id"], "prediction": "\\boxed{" + r["answer"] + "+1}"}
                                               for r in rows[:100]])
    res = run("grade", "--suite", "math500", "--predictions", str(bad))
    assert res.exit_code == 0 and "0/100 correct" in res.output and "400 problem(s) without a prediction" in res.output


def test_aime_answers_compare_as_integers(tmp_path):
    aime = load_suite("aime24")
    assert len(aime) == 30 and all(p.answer == str(int(p.answer)) for p in aime)
    raw = [json.loads(line) for line in (DATA / "aime24" / "test.jsonl").read_text().splitlines()]
    assert any(r["answer"].startswith("0") for r in raw)  # the file is zero-padded
    assert IntegerVerifier().verify("q", "so \\boxed{25}", "025") == 1.0
    assert IntegerVerifier().verify("q", "so \\boxed{250}", "025") == 0.0
    preds = write_jsonl(tmp_path / "p.jsonl", [{"id": r["id"], "prediction": f"\\boxed{{{int(r['answer'])}}}"} for r in raw])
    res = run("grade", "--suite", "aime24", "--predictions", str(preds))
    assert "30/30 correct" in res.output, res.output
    assert [p.id for p in load_suite("aime25")][:2] == ["aime25-0", "aime25-1"]


def test_bad_rows_are_reported_with_line_numbers(tmp_path):
    data = write_jsonl(tmp_path / "suite.jsonl", [
        {"problem": "What is 2+2?", "answer": "4", "unique_id": "a"},
        {"answer": "5", "unique_id": "b"},
        "{not json",
        {"problem": "What is 3+3?", "unique_id": "c"},
        {"problem": "What is 1+1?", "answer": 2, "id": 7, "level": "Level 2"},
    ])
    problems = load_suite("math500", data=str(data))
    assert [p.id for p in problems] == ["a", "7"] and problems[1].meta["level"] == 2
    assert [s.split(": ", 1)[0].rsplit(":", 1)[1] for s in problems.skipped] == ["2", "3", "4"]
    assert "no 'problem'" in problems.skipped[0] and "no 'answer'" in problems.skipped[2]
    preds = write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "prediction": "\\boxed{4}"}, {"id": "zz", "prediction": "1"},
                                               {"prediction": "1"}, {"id": "7", "prediction": "\\boxed{3}"}])
    res = run("grade", "--suite", "math500", "--data", str(data), "--predictions", str(preds))
    assert res.exit_code == 0 and "1/2 correct" in res.output and "2 row(s) skipped" in res.output
    assert "p.jsonl:2: unknown id 'zz'" in res.output and "p.jsonl:3: needs 'id'" in res.output
    for args, field in ((["--suite", "nope"], "suite"), (["--suite", "math500", "--data", str(tmp_path / "x.jsonl")], "data")):
        bad = run("eval", *args, "--budget", "1")
        assert bad.exit_code == 2 and bad.output.startswith(f"error: {field}:"), bad.output


# 8 problems at two budgets in batches of 4: 16 records, enough to kill mid-budget and mid-batch.
ARITH = ["eval", "--suite", "arith:3", "--strategy", "best_of_n", "--budget", "1,4", "--limit", "8", "--batch-size", "4"]
TOTAL = 16
TESTS = Path(__file__).resolve().parent


def by_key(records: list[EvalRecord]) -> list[dict]:
    """Records without timing, in (budget, suite position) order, for comparing runs."""
    return sorted((timing_free(r) for r in records), key=lambda d: (d["budget"], d["index"]))


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted, unsharded run: what resumed and merged runs must equal."""
    out = tmp_path_factory.mktemp("clean") / "clean.jsonl"
    res = run(*ARITH, "--out", str(out))
    assert res.exit_code == 0, res.output
    records = read_records(out)
    assert len(records) == TOTAL and {r.level for r in records} == {3}
    assert [d["id"] for d in by_key(records) if d["budget"] == 1] == [p.id for p in load_suite("arith:3", limit=8)]
    return out


def test_eval_resumes_after_a_kill_without_redoing_or_losing(tmp_path, clean):
    # The process SIGKILLs itself right after its 10th record: budget 1 done, budget 4's first batch half done.
    killed_at = 10
    out = tmp_path / "killed.jsonl"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")])}
    code = "import sys; from hang_helpers import eval_killed_after; eval_killed_after(int(sys.argv.pop(1)))"
    proc = subprocess.run([sys.executable, "-c", code, str(killed_at), *ARITH, "--out", str(out)], env=env,
                          check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    text = out.read_text()
    before = text.splitlines()
    assert len(before) == killed_at and text.endswith("\n")  # every record handed on was whole on disk at the kill
    expected = by_key(read_records(clean))
    assert all(d in expected for d in by_key(read_records(out)))
    res = run(*ARITH, "--out", str(out))
    assert res.exit_code == 0, res.output
    assert out.read_text().splitlines()[:killed_at] == before  # nothing rewritten
    records = read_records(out)
    assert len({r.key() for r in records}) == len(records) == TOTAL  # nothing redone or lost
    assert by_key(records) == expected
    # Another config may not resume into this file.
    other = run(*ARITH, "--seed", "9", "--out", str(out))
    assert other.exit_code == 2 and other.output.startswith("error: out:") and "different config" in other.output


def test_a_torn_last_record_is_redone_once(tmp_path, clean):
    lines = clean.read_text().splitlines(keepends=True)
    torn = tmp_path / "torn.jsonl"
    torn.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # killed mid-write of the last record
    res = run(*ARITH, "--out", str(torn))
    assert res.exit_code == 0, res.output
    after = torn.read_text().splitlines(keepends=True)
    assert after[:-1] == lines[:-1]  # every whole record kept as it was
    records = read_records(torn)
    assert len({r.key() for r in records}) == len(records) == TOTAL  # the torn one redone once, nothing doubled
    assert timing_free(records[-1]) == timing_free(read_records(clean)[-1])
    assert by_key(records) == by_key(read_records(clean))


def test_shards_merge_to_the_unsharded_run_and_plot(tmp_path, clean):
    shards = [tmp_path / f"s{i}.jsonl" for i in range(2)]
    for i, shard in enumerate(shards):
        res = run(*ARITH, "--shard", f"{i}/2", "--out", str(shard))
        assert res.exit_code == 0, res.output
        assert {r.index % 2 for r in read_records(shard)} == {i}
    merged = tmp_path / "merged.jsonl"
    res = run("eval", "--merge", "--out", str(merged), *map(str, shards))
    assert res.exit_code == 0 and f"merged {TOTAL} records" in res.output, res.output
    assert [timing_free(r) for r in read_records(merged)] == by_key(read_records(clean))
    bad = run(*ARITH, "--shard", "2/2")
    assert bad.exit_code == 2 and bad.output.startswith("error: shard:")
    png = tmp_path / "docs" / "acc.png"
    res = run("plot", str(clean), "--out", str(png))
    assert res.exit_code == 0, res.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_math_suite_end_to_end_with_a_tiny_checkpoint(tmp_path):
    ckpt = tmp_path / "tiny"
    assert run("tiny-model", str(ckpt), "--arch", "qwen2").exit_code == 0
    out = tmp_path / "math.jsonl"
    res = run("eval", "--suite", "math500", "--model", str(ckpt), "--budget", "1,2", "--limit", "3", "--max-tokens", "12",
              "-o", "select=majority", "--prompt-template", "step-by-step", "--out", str(out))
    assert res.exit_code == 0, res.output
    records = read_records(out)
    assert len(records) == 6 and {r.budget for r in records} == {1, 2}
    problems = load_suite("math500", limit=3)
    for r in records:
        assert r.gold == next(p.answer for p in problems if p.id == r.id)
        assert sum(c.count for c in r.candidates) == r.budget and r.correct is False
        assert r.ledger["generated_tokens"] <= 12 * r.budget
    aime = run("eval", "--suite", "aime25", "--model", str(ckpt), "--budget", "1", "--limit", "2", "--max-tokens", "8",
               "-o", "select=majority", "--out", str(tmp_path / "aime.jsonl"))
    assert aime.exit_code == 0 and len(read_records(tmp_path / "aime.jsonl")) == 2, aime.output
