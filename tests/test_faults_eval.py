"""Faults in `reason eval` runs (issue 19): one writer per run file, summaries that count a problem
once and do not depend on record order, a problem too long for the context recorded as failed, and
bad inputs refused before anything is written."""

from __future__ import annotations

import fcntl
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from reason.cli import main
from tasks.evaluation import merge_runs, read_records, run_lock
from tasks.metrics import breakdown, curves, summarize

ARITH = ["eval", "--suite", "arith:1", "--budget", "1,2", "--limit", "3", "--batch-size", "2"]


def run(*args: str):
    """``reason ARGS`` in process."""
    return CliRunner().invoke(main, list(args))


def write_jsonl(path: Path, rows: list) -> Path:
    """``rows`` (dicts, or raw lines as strings) as a JSONL file."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def table_rows(output: str) -> list[list[str]]:
    """The data rows of the first summary table in ``output``."""
    return [[c.strip() for c in line.strip("│").split("│")] for line in output.splitlines()
            if line.startswith("│")][:2]


@pytest.fixture(scope="module")
def done(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished 3-problem run at budgets 1 and 2."""
    out = tmp_path_factory.mktemp("done") / "run.jsonl"
    res = run(*ARITH, "--out", str(out))
    assert res.exit_code == 0, res.output
    assert len(read_records(out)) == 6
    return out


def test_a_second_writer_is_refused_and_the_file_left_alone(tmp_path, done):
    out = tmp_path / "run.jsonl"
    out.write_bytes(done.read_bytes()[: len(done.read_bytes()) // 2].rsplit(b"\n", 1)[0] + b"\n")
    before = out.read_bytes()
    with open(out, "a") as holder:  # another open file description: flock conflicts as with another process
        fcntl.flock(holder, fcntl.LOCK_EX)
        res = run(*ARITH, "--out", str(out))
        assert res.exit_code == 2, res.output
        assert res.output.startswith("error: out:") and "being written by another" in res.output
        assert len(res.output.strip().splitlines()) == 1
        assert out.read_bytes() == before
        merged = run("eval", "--merge", "--out", str(out), str(done))
        assert merged.exit_code == 2 and "being written by another" in merged.output
    res = run(*ARITH, "--out", str(out))  # released: the run resumes and completes the file
    assert res.exit_code == 0, res.output
    records = read_records(out)
    assert len(records) == len({r.key() for r in records}) == 6


def test_the_lock_goes_with_a_killed_holder(tmp_path, done):
    out = tmp_path / "run.jsonl"
    code = ("import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
            "print('held', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        res = run(*ARITH, "--out", str(out))
        assert res.exit_code == 2 and "being written by another" in res.output, res.output
    finally:
        holder.kill()  # SIGKILL: the kernel drops its flock
        holder.wait()
    res = run(*ARITH, "--out", str(out))
    assert res.exit_code == 0, res.output
    assert len(read_records(out)) == 6


def test_run_lock_is_reentrant_and_removes_only_a_file_it_created_empty(tmp_path):
    fresh = tmp_path / "fresh.jsonl"
    with run_lock(fresh), run_lock(fresh):  # the CLI holds it while evaluate takes it again
        assert fresh.exists()
        with open(fresh, "a") as other:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert not fresh.exists()
    kept = tmp_path / "kept.jsonl"
    kept.write_text("")
    with run_lock(kept):
        pass
    assert kept.exists()
    with open(kept, "a") as other:  # released
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_a_reader_leaves_a_running_writers_last_line_alone(tmp_path, done):
    lines = done.read_text().splitlines(keepends=True)
    out = tmp_path / "run.jsonl"
    out.write_text("".join(lines[:2]) + lines[2][:40])  # a record being written
    with open(out, "a") as writer:
        fcntl.flock(writer, fcntl.LOCK_EX)
        assert len(read_records(out)) == 2  # e.g. `reason plot` on a running eval's file
        assert out.read_text().endswith(lines[2][:40])  # not cut: the writer still owns it
    assert len(read_records(out)) == 2  # unlocked: a torn line is a killed run's, and is cut
    assert out.read_text() == "".join(lines[:2])


def test_duplicate_records_count_once(tmp_path, done):
    doubled = tmp_path / "doubled.jsonl"
    doubled.write_bytes(done.read_bytes() * 2)  # two writers appended the same run (before runs were locked)
    once, twice = read_records(done), read_records(doubled)
    assert len(twice) == 12
    assert summarize(twice) == summarize(once) and curves(twice) == curves(once)
    assert breakdown(twice) == breakdown(once)
    assert [row["problems"] for row in summarize(twice)] == [3, 3]
    res = run(*ARITH, "--out", str(doubled))  # resumes: nothing to do, the summary counts 3 per budget
    assert res.exit_code == 0, res.output
    assert doubled.read_bytes() == done.read_bytes() * 2
    assert "6 duplicate record(s)" in res.output
    assert [row[1] for row in table_rows(res.output)] == ["3", "3"]
    merged = tmp_path / "merged.jsonl"
    assert len(merge_runs([doubled], merged)) == 6


def test_figures_do_not_depend_on_record_order(tmp_path):
    from tasks.evaluation import CandidateRecord, EvalRecord

    rng = random.Random(5)
    records = []
    for i in range(40):
        right = rng.random() < 0.4
        cands = [CandidateRecord(answer=str(rng.randrange(3)), score=rng.random(), correct=rng.random() < 0.5)
                 for _ in range(6)]
        records.append(EvalRecord(id=f"p{i}", index=i, budget=6, label="x", answer=None, gold="", correct=right,
                                  candidates=cands, ledger={}, seed=0, config_hash="h", level=i % 3))
    shuffled = records[:]
    random.Random(1).shuffle(shuffled)
    first = summarize(records)
    assert first == summarize(shuffled) == summarize(records[::-1])
    assert curves(records) == curves(shuffled) and breakdown(records) == breakdown(shuffled)
    lo, hi = first[0]["ci"]
    assert lo < first[0]["accuracy"] < hi  # a real interval, not a point
    # Written in one order, merged (sorted) into another: the same summary.
    path = tmp_path / "shuffled.jsonl"
    path.write_text("".join(r.model_dump_json() + "\n" for r in shuffled))
    assert summarize(merge_runs([path], tmp_path / "merged.jsonl")) == first


def test_a_problem_longer_than_the_context_fails_alone(tmp_path):
    data = write_jsonl(tmp_path / "long.jsonl", [
        {"problem": "1+2", "answer": "3"},
        {"problem": "1" * 398 + "+1", "answer": "1" * 397 + "2", "unique_id": "too-long"},  # 401 tokens; context 256
        {"problem": "2+3", "answer": "5"},
    ])
    out = tmp_path / "run.jsonl"
    args = ["eval", "--suite", "arith", "--data", str(data), "--budget", "1,2", "--out", str(out)]
    res = run(*args)
    assert res.exit_code == 0, res.output
    assert "failed: problem too-long at budget 1: the prompt is 401 tokens" in res.output
    records = read_records(out)
    assert len(records) == 6
    failed = [r for r in records if r.error]
    assert {(r.id, r.budget) for r in failed} == {("too-long", 1), ("too-long", 2)}
    assert all(not r.correct and not r.candidates and "context (256 tokens)" in r.error for r in failed)
    assert all(r.candidates for r in records if r.id != "too-long")
    again = run(*args)  # the rerun resumes past it instead of failing the same way
    assert again.exit_code == 0, again.output
    assert out.read_text() == "".join(r.model_dump_json() + "\n" for r in records)
    assert [row[1] for row in table_rows(again.output)] == ["3", "3"]  # counted, as wrong


@pytest.mark.slow  # ~5 s alone, over 10 s on a loaded machine
def test_a_search_that_fills_the_context_fails_alone(tmp_path):
    # The prompt fits (252 tokens) but beam search's steps run past the 256-token context.
    data = write_jsonl(tmp_path / "near.jsonl", [
        {"problem": "1+2", "answer": "3"},
        {"problem": "1" * 249 + "+1", "answer": "1" * 248 + "2", "unique_id": "near"},
        {"problem": "2+3", "answer": "5"},
    ])
    out = tmp_path / "run.jsonl"
    res = run("eval", "--suite", "arith", "--data", str(data), "--strategy", "beam", "--budget", "2",
              "--out", str(out))
    assert res.exit_code == 0, res.output
    records = {r.id: r for r in read_records(out)}
    assert len(records) == 3
    assert records["near"].error and "context" in records["near"].error and not records["near"].correct
    assert records["arith-0"].error is None and records["arith-0"].candidates


@pytest.mark.parametrize("option, value, field", [
    ("--limit", "-1", "limit"), ("--limit", "0", "limit"),
    ("--temperature", "-1", "temperature"), ("--temperature", "nan", "temperature"),
    ("--temperature", "inf", "temperature"), ("--max-tokens", "0", "max-tokens"),
    ("--batch-size", "0", "batch-size"),
])
def test_bad_options_are_refused_before_the_file_is_made(tmp_path, option, value, field):
    out = tmp_path / "run.jsonl"
    res = run(*ARITH, f"{option}={value}", "--out", str(out))
    assert res.exit_code == 2 and res.output.startswith(f"error: {field}"), res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("lines, why", [
    ([], "it is empty"),
    (["", "   "], "it is empty"),
    (["not json", '{"problem": "1+2"}', '{"problem": "1+2", "answer": "4"}'], "all 3 of its rows are malformed"),
])
def test_a_data_file_without_problems_is_an_error(tmp_path, lines, why):
    data = tmp_path / "suite.jsonl"
    data.write_text("".join(line + "\n" for line in lines))
    out = tmp_path / "run.jsonl"
    res = run("eval", "--suite", "arith", "--data", str(data), "--out", str(out))
    assert res.exit_code == 2, res.output
    assert res.output.splitlines()[-1].startswith(f"error: data: {data} has no usable problems: {why}")
    assert not out.exists()


def test_limit_takes_exactly_that_many(tmp_path):
    out = tmp_path / "run.jsonl"
    res = run("eval", "--suite", "arith:1", "--budget", "1", "--limit", "1", "--out", str(out))
    assert res.exit_code == 0, res.output
    assert len(read_records(out)) == 1


def test_a_run_that_fails_to_start_leaves_no_file(tmp_path):
    out = tmp_path / "run.jsonl"
    res = run(*ARITH, "--model", str(tmp_path / "no-such-model"), "--out", str(out))
    assert res.exit_code == 2, res.output
    assert not out.exists()
