"""`reason generate` end to end on a tiny checkpoint saved to disk (the hub-model code path)."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from reason.cli import main
from reason.core.engine.hf import HFEngine
from reason.core.tiny import save_tiny_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-qwen2", arch="qwen2", seed=4)


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_generate_json(checkpoint):
    res = run("generate", "What is 2+3?", "--model", str(checkpoint), "-n", "4", "--max-tokens", "9", "--seed", "7", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert len(data["samples"]) == 4
    for s in data["samples"]:
        assert set(s) == {"text", "token_ids", "finish_reason"}
        assert 1 <= len(s["token_ids"]) <= 9
    assert data["ledger"]["prefill_tokens"] == data["ledger"]["prompt_tokens"] > 0
    assert data["ledger"]["generated_tokens"] == sum(len(s["token_ids"]) for s in data["samples"])
    again = json.loads(run("generate", "What is 2+3?", "--model", str(checkpoint), "-n", "4", "--max-tokens", "9", "--seed", "7", "--json").output)
    assert [s["token_ids"] for s in again["samples"]] == [s["token_ids"] for s in data["samples"]]


def test_generate_greedy_matches_hf_generate_from_disk(checkpoint):
    res = run("generate", "Find x.", "--model", str(checkpoint), "--temperature", "0", "--max-tokens", "10", "--no-chat", "--json")
    assert res.exit_code == 0, res.output
    [sample] = json.loads(res.output)["samples"]
    engine = HFEngine.from_pretrained(str(checkpoint), dtype="float32", device="cpu")
    prompt = engine.tokenize_prompt("Find x.")[0]
    x = torch.tensor([prompt])
    ref = engine.model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=10)[0, len(prompt) :]
    # The whole continuation, ended where transformers ends it: at EOS (kept) or at the token cap.
    assert sample["token_ids"] == ref.tolist()
    ended_at_eos = ref[-1].item() in engine.eos_ids
    assert sample["finish_reason"] == ("eos" if ended_at_eos else "length")
    assert ended_at_eos or len(ref) == 10


def test_generate_readable_output(checkpoint):
    res = run("generate", "Hello", "--model", str(checkpoint), "-n", "2", "--max-tokens", "4", "--chat")
    assert res.exit_code == 0, res.output
    assert "2 completion(s)" in res.output and "prefill" in res.output


@pytest.mark.parametrize(
    "args, field",
    [
        (["--model", "/no/such/dir"], "model"),
        (["-n", "0"], "-n"),
        (["--temperature", "-0.5"], "sampling.temperature"),
        (["--top-p", "0"], "sampling.top_p"),
        (["--top-p", "1.2"], "sampling.top_p"),
        (["--max-tokens", "0"], "stop.max_tokens"),
    ],
)
def test_bad_input_exits_nonzero_with_one_line(checkpoint, args, field):
    argv = ["generate", "Hi"] + (args if args[0] == "--model" else ["--model", str(checkpoint)] + args)
    res = run(*argv)
    assert res.exit_code == 2
    lines = [line for line in res.output.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith(f"error: {field}:")


def test_empty_prompt_and_missing_bundled_model(checkpoint, monkeypatch):
    res = run("generate", "", "--model", str(checkpoint))
    assert res.exit_code == 2 and res.output.strip() == "error: PROMPT: is empty; give the text to continue"
    # An install without the bundled weights: point the bundled name at a directory that is not there.
    from tasks.arith import task

    monkeypatch.setitem(task.BUNDLED, "policy", task.HERE / "no-such-model")
    for argv in (["generate", "1+2"], ["solve", "1+2", "--strategy", "greedy"]):
        res = run(*argv)
        assert res.exit_code == 2, res.output
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: model: the bundled 'arith' model is not in this install")


def test_score_with_named_scorers():
    res = run("score", "3+4*5", "--solution", "4*5=20\\n3+21=24\\nanswer: 24", "--prm", "arith", "--delimiter", "\\n",
              "--verifier", "arith", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["step_scores"] == [1.0, 0.0, 0.0] and data["verifier"] == 0.0
    bad = run("score", "3+4*5", "--solution", "x", "--prm", "nope")
    assert bad.exit_code == 2 and bad.output.startswith("error: prm: unknown prm 'nope'")
    bad_q = run("score", "3+x", "--solution", "4*5=20", "--prm", "arith", "--delimiter", "\\n")
    assert bad_q.exit_code == 2 and bad_q.output.startswith("error: question:")


def test_solve_on_the_bundled_model():
    res = run("solve", "12+3*4", "--budget", "4", "--json", "--show-tree")
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    # Identical samples are one merged candidate whose count says how many samples it stands for.
    assert data["strategy"] == "best_of_n" and sum(c["count"] for c in data["candidates"]) == 4
    assert len(data["tree"]["nodes"]) == 1 + len(data["candidates"])
    assert [n["count"] for n in data["tree"]["nodes"][1:]] == [c["count"] for c in data["candidates"]]
    readable = run("solve", "12+3*4", "--strategy", "greedy", "--show-tree")
    assert readable.exit_code == 0 and "answer:" in readable.output and "[0] 12+3*4" in readable.output
    for args, field in ((["--strategy", "nope"], "strategy"), (["--budget", "0"], "budget"), (["--prm", "qwen=/no/such"], "prm")):
        bad = run("solve", "12+3*4", *args)
        assert bad.exit_code == 2 and bad.output.startswith(f"error: {field}:"), bad.output


def test_solve_strategy_options():
    res = run("solve", "12+3*4-5", "--strategy", "treepo", "--budget", "8", "-o", "segment_tokens=4",
              "-o", "first_divergence=[2,4]", "-o", "policy=low_prob", "--json", "--show-tree")
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert sum(c["count"] for c in data["candidates"]) == 8 and 2 <= data["info"]["first_divergence"] <= 4
    assert all(len(n["token_ids"]) == 4 for n in data["tree"]["nodes"] if n["finish_reason"] == "segment")
    for option, field in (("foo=1", "option"), ("segment_tokens", "option"), ("policy=sideways", "policy")):
        bad = run("solve", "12+3*4", "--strategy", "treepo", "-o", option)
        assert bad.exit_code == 2 and bad.output.startswith(f"error: {field}:"), bad.output
