"""Fault injection against the command line (issue 19): hostile or careless input gets one line
naming the field, exit status 2 and no traceback, before any model loads; work is capped.

Every probe runs in process through click's CliRunner; none loads a model except the one that
checks ``-o temperature=...`` is taken by the sampling strategies."""

from __future__ import annotations

import json
import math
import shutil
import struct
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from reason.cli import main
from reason.cli.options import MAX_BUDGET, MAX_COMPLETIONS
from reason.core.engine.base import MIN_TEMPERATURE, Sampling
from reason.core.errors import ReasonError
from search.options import MAX_COUNT, MIN_POSITIVE
from search.solve import check_options
from tasks.arith.grammar import MAX_CHARS, MAX_DEPTH, MAX_DIGITS, evaluate, parse
from tasks.arith.scorers import ArithPRM, final_answer
from tasks.arith.task import BUNDLED

BIG = "9" * 4301  # one digit past Python's limit on int <-> str conversion


def invoke(*args: str):
    """Run ``reason ARGS`` in process."""
    return CliRunner().invoke(main, list(args))


def assert_one_line(res, field: str) -> str:
    """Exit 2, no traceback, one line of output that names ``field``; returns the line."""
    assert "Traceback" not in res.output, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1, res.output
    assert lines[0].startswith("error: ") and field in lines[0], lines[0]
    return lines[0]


# -- sampling values and strategy options, refused before any model loads ------------------------

@pytest.mark.parametrize("args, field", [
    (["generate", "3+4", "--temperature", "-1"], "temperature"),
    (["generate", "3+4", "--temperature", "nan"], "temperature"),
    (["generate", "3+4", "--temperature", "inf"], "temperature"),
    (["generate", "3+4", "--temperature", "-inf"], "temperature"),
    (["generate", "3+4", "--temperature", "1e-30"], "temperature"),
    (["generate", "3+4", "--top-p", "nan"], "top_p"),
    (["generate", "3+4", "--top-p", "0"], "top_p"),
    (["generate", "3+4", "-n", "100000000"], "-n"),
    (["generate", "3+4", "-n", "0"], "-n"),
    (["generate", "3+4", "--stop", "\\x"], "stop"),
    (["generate", "3+4", "--stop", ""], "stop"),
    (["solve", "3+4", "--temperature", "inf"], "temperature"),
    (["solve", "3+4", "--temperature", "nan"], "temperature"),
    (["solve", "3+4", "--temperature", "-1"], "temperature"),
    (["solve", "3+4", "-s", "greedy", "--temperature", "nan"], "temperature"),
    (["solve", "3+4", "--budget", "100000000"], "budget"),
    (["solve", "3+4", "--budget", str(MAX_BUDGET + 1)], "budget"),
    (["solve", "3+4", "--budget", "0"], "budget"),
    (["solve", "3+4", "--budget-tokens", "-1"], "budget-tokens"),
    (["solve", "3+4", "-s", "sample", "-o", "temperature=NaN"], "temperature"),
    (["solve", "3+4", "-s", "best_of_n", "-o", "temperature=Infinity"], "temperature"),
    (["solve", "3+4", "-s", "best_of_n", "-o", "temperature=-0.5"], "temperature"),
    (["solve", "3+4", "-s", "mcts", "-o", "c_puct=1e400"], "c_puct"),
    (["solve", "3+4", "-s", "mcts", "-o", "c_puct=NaN"], "c_puct"),
    (["solve", "3+4", "-s", "mcts", "-o", "c_puct=fast"], "c_puct"),
    (["solve", "3+4", "-s", "mcts", "-o", "widen_alpha=1e-320"], "widen_alpha"),
    (["solve", "3+4", "-s", "mcts", "-o", "children=100000000"], "children"),
    (["solve", "3+4", "-s", "particle", "-o", "weight_temperature=0"], "weight_temperature"),
    (["solve", "3+4", "-s", "particle", "-o", "weight_temperature=1e-320"], "weight_temperature"),
    (["solve", "3+4", "-s", "particle", "-o", "ess_threshold=NaN"], "ess_threshold"),
    (["solve", "3+4", "-s", "treepo", "-o", "div_temperature=0"], "div_temperature"),
    (["solve", "3+4", "-s", "beam", "-o", "width=0"], "width"),
    (["solve", "3+4", "-s", "beam", "-o", "step_tokens=0"], "step_tokens"),
    (["solve", "3+4", "-s", "beam", "-o", "delimiter="], "delimiter"),
    (["solve", "3+4", "-s", "astar", "-o", "spend=0"], "spend"),
    (["solve", "3+4", "-o", "nosuch=1"], "option"),
    (["solve", "3+4", "-o", "x=" + BIG], "x"),
    (["solve", "3+4", "-o", "temperature=" + "[" * 5000], "temperature"),
])
def test_bad_values_are_one_line(args, field):
    assert_one_line(invoke(*args), field)


def test_temperature_option_is_taken_by_sampling_strategies():
    """``-o temperature=`` wins over ``--temperature`` (once a traceback: two values for one keyword)."""
    for strategy in ("sample", "best_of_n"):
        res = invoke("solve", "3+4", "-s", strategy, "--budget", "2", "-o", "temperature=0.5", "--json")
        assert res.exit_code == 0 and "Traceback" not in res.output, res.output
        assert json.loads(res.output)["answer"] is not None


def test_an_option_given_twice_is_refused_not_overwritten():
    line = assert_one_line(invoke("solve", "3+4", "-o", "temperature=0.5", "-o", "temperature=0.7"), "option")
    assert "'temperature' is given twice" in line


def test_library_validates_like_the_command_line():
    """The strategies' options model and Sampling refuse the same values the CLI does."""
    for strategy, options, field in [
        ("mcts", {"c_puct": math.inf}, "c_puct"), ("sample", {"temperature": math.nan}, "temperature"),
        ("sample", {"temperature": MIN_TEMPERATURE / 10}, "temperature"),
        ("particle", {"lookahead_weight": MIN_POSITIVE / 10}, "lookahead_weight"),
        ("beam", {"width": MAX_COUNT + 1}, "width"), ("treepo", {"top_p": math.nan}, "top_p"),
    ]:
        with pytest.raises(ReasonError) as err:
            check_options(strategy, options)
        assert err.value.field == field
    assert check_options("sample", {"temperature": 0}).values()["temperature"] == 0
    assert check_options("beam", {"width": MAX_COUNT}).values()["width"] == MAX_COUNT
    for bad in (math.inf, -math.inf, math.nan, MIN_TEMPERATURE / 2):
        with pytest.raises(ReasonError, match="sampling.temperature"):
            Sampling.make(temperature=bad)
    assert Sampling.make(temperature=MIN_TEMPERATURE).temperature == MIN_TEMPERATURE


def test_caps_are_the_documented_ones():
    limits = Path(__file__).resolve().parents[1] / "docs" / "limits.md"
    text = limits.read_text(encoding="utf-8")
    for name in ("MAX_COMPLETIONS", "MAX_BUDGET", "MAX_COUNT", "MIN_POSITIVE", "MIN_TEMPERATURE",
                 "MAX_CHARS", "MAX_DIGITS", "MAX_DEPTH", "MAX_SAFETENSORS_HEADER"):
        assert f"`{name}`" in text, name
    assert_one_line(invoke("generate", "3+4", "-n", str(MAX_COMPLETIONS + 1)), "-n")


# -- expressions: no recursion or digit-limit crash -----------------------------------------------

@pytest.mark.parametrize("problem, words", [
    ("(" * 5000 + "1" + ")" * 4999, "characters"),
    ("+".join(["1"] * 2000), "deep"),
    ("+".join(["1"] * (MAX_DEPTH + 2)), "deep"),
    ("1*(" * 150 + "1" + ")" * 150, "deep"),
    (BIG + "+1", "digits"),
    ("9" * (MAX_DIGITS + 1), "digits"),
    ("9" * 600 + "*" + "9" * 600, "digits"),
    ("-" * 20000 + "1", "characters"),
])
def test_long_deep_or_huge_expressions_are_one_line(problem, words):
    line = assert_one_line(invoke("solve", "--", problem), "problem")
    assert words in line
    with pytest.raises(ReasonError, match=words):
        parse(problem)


def test_expressions_within_the_caps_still_parse():
    assert evaluate(parse("+".join(["1"] * (MAX_DEPTH + 1)))) == MAX_DEPTH + 1
    assert evaluate(parse("(" * 1000 + "7" + ")" * 1000)) == 7
    assert evaluate(parse("-" * 1000 + "3")) == 3
    assert evaluate(parse("9" * MAX_DIGITS + "-" + "9" * MAX_DIGITS)) == 0
    assert evaluate(parse(" " * (MAX_CHARS - 1) + "1")) == 1


def test_scoring_huge_numbers_is_not_a_crash():
    assert_one_line(invoke("score", BIG + "+1", "--solution", "x", "--prm", "arith"), "question")
    res = invoke("score", "1+1", "--solution", BIG + "+1=3", "--prm", "arith", "--json")
    assert res.exit_code == 0 and json.loads(res.output)["step_scores"] == [0.0], res.output
    res = invoke("score", "1+1", "--solution", "answer: " + BIG, "--verifier", "arith", "--json")
    assert res.exit_code == 0 and json.loads(res.output)["verifier"] == 0.0, res.output
    assert_one_line(invoke("score", "1+1", "--solution", "x", "--verifier", "arith", "--reference", BIG), "reference")
    assert_one_line(invoke("score", "1+1", "--solution", "\\x", "--prm", "arith"), "solution")
    assert final_answer("answer: " + BIG) is None
    assert ArithPRM().check("1+1", [BIG + "+1=2", "answer: 2"]) == [False, False]


# -- input files: bad bytes, directories, deep JSON, huge integers ---------------------------------

def test_non_utf8_input_files_are_one_line_naming_the_file(tmp_path):
    preds = tmp_path / "preds.jsonl"
    preds.write_bytes(b'{"id": "a", "prediction": "\xff\xfe"}\n')
    line = assert_one_line(invoke("grade", "--suite", "arith:1", "--predictions", str(preds)), "predictions")
    assert "preds.jsonl:1" in line and "UTF-8" in line
    data = tmp_path / "data.jsonl"
    data.write_bytes(b'{"problem": "1+1", "answer": "2"}\n{"problem": "1+\xff", "answer": "2"}\n')
    good = tmp_path / "good.jsonl"
    good.write_text('{"id": "arith-0", "prediction": "answer: 2"}\n', encoding="utf-8")
    line = assert_one_line(invoke("grade", "--suite", "arith", "--data", str(data), "--predictions", str(good)), "data")
    assert "data.jsonl:2" in line
    run = tmp_path / "run.jsonl"
    run.write_bytes(b"x\xff\n")
    line = assert_one_line(invoke("plot", str(run), "--out", str(tmp_path / "a.png")), "runs")
    assert "run.jsonl:1" in line
    assert_one_line(invoke("grade", "--suite", "arith", "--data", str(tmp_path), "--predictions", str(good)), "data")


def test_grade_skips_unreadable_predictions(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text('{"problem": "1+1", "answer": "2", "unique_id": "a"}\n'
                    '{"problem": "2+2", "answer": "4", "unique_id": "b"}\n', encoding="utf-8")
    preds = tmp_path / "preds.jsonl"
    preds.write_text(json.dumps({"id": "a", "prediction": "\\boxed{" + "9" * 5000 + "}"}) + "\n"
                     + json.dumps({"id": "b", "prediction": "\\boxed{4}"}) + "\n"
                     + "[" * 5000 + "\n" + '{"id": "c", "prediction": ' + "9" * 5000 + "}\n", encoding="utf-8")
    res = invoke("grade", "--suite", "aime24", "--data", str(data), "--predictions", str(preds))
    assert res.exit_code == 0 and "Traceback" not in res.output, res.output
    # A 5000-digit answer is graded (wrong: the AIME verifier compares integers as text); the
    # unreadable rows are skipped with their line named.
    assert "1/2 correct" in res.output and "2 row(s) skipped" in res.output
    assert "nested too deeply" in res.output and "5000 digits" in res.output


def test_command_line_text_that_is_not_utf8():
    assert_one_line(invoke("generate", "\udcff"), "PROMPT")
    assert_one_line(invoke("solve", "3+4", "--suite", "ar\udcffith"), "--suite")


# -- checkpoints: damaged safetensors, missing config ----------------------------------------------

def _checkpoint(tmp_path: Path, name: str, weights: bytes | None, config: bool = True) -> Path:
    """A copy of the bundled arith checkpoint's config and tokenizer with ``weights`` as its
    model.safetensors (left out when None)."""
    out = tmp_path / name
    out.mkdir()
    for f in BUNDLED["policy"].iterdir():
        if f.suffix != ".safetensors" and (config or f.name != "config.json"):
            shutil.copy(f, out / f.name)
    if weights is not None:
        (out / "model.safetensors").write_bytes(weights)
    return out


def _damaged() -> dict[str, tuple[bytes, str]]:
    real = (BUNDLED["policy"] / "model.safetensors").read_bytes()
    header = b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}'
    return {
        "empty": (b"", "empty"),
        "short": (b"\x01\x02\x03", "truncated"),
        "header-cut": (real[:1000], "truncated"),
        "data-cut": (real[: len(real) // 2], "truncated"),
        "huge-header": (b"\xff" * 7 + b"\x7f" + b"garbage", "bad safetensors header"),
        "not-json": (struct.pack("<Q", 9) + b"not json!" + b"data", "not JSON"),
        "bad-offsets": (struct.pack("<Q", len(header)) + header + b"xxxx", "bad safetensors header"),
    }


@pytest.mark.parametrize("kind", list(_damaged()))
def test_damaged_checkpoints_are_one_line_naming_the_file(tmp_path, kind):
    weights, words = _damaged()[kind]
    ckpt = _checkpoint(tmp_path, kind, weights)
    for args, field in [(["generate", "3+4", "-m", str(ckpt)], "model"),
                        (["solve", "3+4", "-m", str(ckpt), "--budget", "1"], "model"),
                        (["score", "1+1", "--solution", "1+1=2", "--prm", f"token-classification={ckpt}"], "prm"),
                        (["score", "1+1", "--solution", "1+1=2", "--value", f"lm={ckpt}"], "value"),
                        (["solve", "3+4", "--value", f"lm={ckpt}"], "value")]:
        line = assert_one_line(invoke(*args), field)
        assert "model.safetensors" in line and words in line, line


def test_checkpoint_without_config_or_with_a_bad_one(tmp_path):
    ckpt = _checkpoint(tmp_path, "noconf", (BUNDLED["policy"] / "model.safetensors").read_bytes(), config=False)
    assert "config.json" in assert_one_line(invoke("generate", "3+4", "-m", str(ckpt)), "model")
    ckpt = _checkpoint(tmp_path, "badconf", None)
    (ckpt / "config.json").write_bytes(b"{\xff")
    assert_one_line(invoke("generate", "3+4", "-m", str(ckpt)), "model")
    assert_one_line(invoke("generate", "3+4", "-m", str(tmp_path / "absent")), "model")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without CUDA")
def test_cuda_on_a_cpu_only_torch_is_one_line():
    for args in (["generate", "3+4", "--device", "cuda"], ["solve", "3+4", "--device", "cuda:1"],
                 ["score", "1+1", "--solution", "1+1=2", "--value", "arith", "--device", "cuda"]):
        assert "CUDA is not available" in assert_one_line(invoke(*args), "device")
    assert_one_line(invoke("generate", "3+4", "--device", "meta"), "device")


# -- names and output paths -----------------------------------------------------------------------

@pytest.mark.parametrize("model, words", [("Arith", "did you mean 'arith'"), ("arth", "did you mean 'arith'"),
                                          ("arith:3", "suite spec"), ("", "empty")])
def test_model_names_that_are_no_model(model, words):
    assert words in assert_one_line(invoke("generate", "3+4", "-m", model), "model")


def test_plot_out_must_be_an_image(tmp_path):
    run = tmp_path / "run.jsonl"
    run.write_text("", encoding="utf-8")
    for out in ("x.jsonl", "noext", "a.txt"):
        assert_one_line(invoke("plot", str(run), "--out", str(tmp_path / out)), "out")
        assert not (tmp_path / out).exists() and not (tmp_path / (out + ".png")).exists()
    assert_one_line(invoke("plot", str(run), "--out", str(run)), "out")
