"""``reason eval --ray`` (issue 22, part 4) on a local Ray cluster of 2 CPU workers with the arith model:
the same records as a local run, record for record; a file resumes and merges across both kinds of run."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from reason.cli import main
from tasks.evaluation import read_records, timing_free

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow

# 6 problems at two budgets in chunks of 2: 12 records in 6 actor calls.
ARGS = ["eval", "--suite", "arith:2", "--strategy", "best_of_n", "--budget", "1,2", "--limit", "6", "--batch-size", "2"]
TOTAL = 12


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def by_key(records) -> list[dict]:
    return sorted((timing_free(r) for r in records), key=lambda d: (d["budget"], d["index"]))


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster of 2 CPUs: 2 workers of one CPU each."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=100 * 2**20)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "local.jsonl"
    res = run(*ARGS, "--out", str(out))
    assert res.exit_code == 0, res.output
    assert len(read_records(out)) == TOTAL
    return by_key(read_records(out))


def test_ray_run_equals_the_local_run_record_for_record(cluster, local, tmp_path):
    out = tmp_path / "ray.jsonl"
    res = run(*ARGS, "--ray", "--ray-workers", "2", "--out", str(out))
    assert res.exit_code == 0, res.output
    records = read_records(out)
    assert len({r.key() for r in records}) == len(records) == TOTAL
    assert by_key(records) == local
    assert "accuracy" in res.output  # the same summary as a local run
    again = run(*ARGS, "--ray", "--out", str(out))  # all done: nothing reruns, nothing is appended
    assert again.exit_code == 0 and len(read_records(out)) == TOTAL


def test_ray_resumes_a_local_shard_and_merges_with_one(cluster, local, tmp_path):
    half = tmp_path / "half.jsonl"
    assert run(*ARGS, "--shard", "0/2", "--out", str(half)).exit_code == 0
    before = half.read_text().splitlines()
    assert len(before) == TOTAL // 2
    res = run(*ARGS, "--ray", "--ray-workers", "2", "--out", str(half))  # resume the local file on Ray
    assert res.exit_code == 0, res.output
    assert half.read_text().splitlines()[:len(before)] == before  # nothing rewritten
    records = read_records(half)
    assert len({r.key() for r in records}) == len(records) == TOTAL and by_key(records) == local
    # A Ray shard and a local shard merge into the local run.
    s0, s1, merged = tmp_path / "s0.jsonl", tmp_path / "s1.jsonl", tmp_path / "all.jsonl"
    s0.write_text("".join(line + "\n" for line in before))  # the local shard 0/2 as it was written
    res = run(*ARGS, "--shard", "1/2", "--ray", "--out", str(s1))
    assert res.exit_code == 0, res.output
    assert {r.index % 2 for r in read_records(s1)} == {1}
    assert run("eval", "--merge", "--out", str(merged), str(s0), str(s1)).exit_code == 0
    assert [timing_free(r) for r in read_records(merged)] == local


def test_ray_workers_needs_ray():
    res = run(*ARGS, "--ray-workers", "2")
    assert res.exit_code == 2 and res.output.startswith("error: ray-workers:")


def test_ray_saves_the_trees_a_local_run_saves(cluster, tmp_path):
    """--save-trees on Ray: each record carries its search and tree, built on the worker, equal to
    a local run's (wall times aside)."""
    args = ["eval", "--suite", "arith:2", "--strategy", "beam", "--budget", "2", "--limit", "4", "--batch-size", "2",
            "--save-trees"]
    here, there = tmp_path / "here.jsonl", tmp_path / "there.jsonl"
    assert run(*args, "--out", str(here)).exit_code == 0
    res = run(*args, "--ray", "--ray-workers", "2", "--out", str(there))
    assert res.exit_code == 0, res.output
    local_records, ray_records = by_key(read_records(here)), by_key(read_records(there))
    assert len(ray_records) == 4 and all(r["search"]["tree"]["nodes"] for r in ray_records)
    # A worker's torch runs on its one CPU's threads, so logprobs may differ in float rounding.
    floats = [[lp for n in r["search"]["tree"]["nodes"] for key in ("logprobs", "sampling_logprobs") for lp in n[key]]
              for r in (*local_records, *ray_records)]
    assert floats[:4] == [pytest.approx(f, abs=1e-4) for f in floats[4:]]
    for r in (*local_records, *ray_records):
        for n in r["search"]["tree"]["nodes"]:
            n.pop("logprobs"), n.pop("sampling_logprobs")
    assert ray_records == local_records
