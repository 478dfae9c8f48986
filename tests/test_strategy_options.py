"""Explicit contracts: strategy options are validated models (library, command line, server), the
engine declares what callers use, scorers are protocols, finish reasons are a closed set."""

from __future__ import annotations

from typing import get_args

import pytest
from click.testing import CliRunner

from reason.cli import main
from reason.core.engine.base import Engine
from reason.core.errors import ReasonError
from reason.core.scorers import PRMScorer, ValueScorer, Verifier
from reason.core.tiny import build_tokenizer
from reason.core.tree import ENDED, FINISH_REASONS, FinishReason, Tree
from rewards import verifiers
from rewards.base import OutcomeVerifier
from rewards.catalog import load_prm, load_value
from rewards.scoring import NodeScorer, NodeValuer
from search import strategies
from search.options import StrategyOptions, StrategyRegistry
from search.solve import check_options, solve_problems, strategy_options
from search.treepo import rollout as treepo_rollout
from tasks.registry import get_domain

# Per strategy: an option given a value of the wrong type, and one given a value out of its range.
BAD = {
    "sample": [("temperature", "hot"), ("temperature", -1)],
    "best_of_n": [("select", 3), ("temperature", -0.5)],
    "beam": [("width", "4"), ("width", 0)],
    "dvts": [("max_steps", 2.5), ("step_tokens", 0)],
    "first_finish": [("k", "one"), ("k", 0)],
    "astar": [("g", 3), ("max_expansions", 0)],
    "mcts": [("c_puct", "x"), ("widen_alpha", 0.0)],
    "particle": [("anneal", "yes"), ("ess_threshold", 1.5)],
    "epf": [("resampling", "stratified"), ("anneal_phase", 1.5)],
    "treepo": [("first_divergence", "a"), ("top_p", 0)],
}


class Untouchable(Engine):
    """An engine that fails the test if anything reaches it: options are checked before any work."""

    def tokenize_prompt(self, prompt):
        raise AssertionError("the engine was used")

    def decode(self, token_ids):
        raise AssertionError("the engine was used")

    def submit(self, request):
        raise AssertionError("the engine was used")

    def step(self):
        raise AssertionError("the engine was used")

    def has_work(self):
        raise AssertionError("the engine was used")


def library_call(strategy: str, **options):
    domain = get_domain("arith")
    return solve_problems(Untouchable(), [domain.make_problem("1+2")], domain=domain, strategy=strategy, **options)


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    return text


def test_every_strategy_has_bad_values_listed():
    assert set(BAD) | {"greedy"} == set(strategies.names())


@pytest.mark.parametrize("strategy", sorted(strategies.names()))
def test_misspelled_option_is_one_line(strategy):
    with pytest.raises(ReasonError) as exc:
        library_call(strategy, bogus=1)
    known = ", ".join(strategy_options(strategy)) or "none"
    assert one_line(exc) == f"option: strategy {strategy!r} has no option 'bogus'; use one of: {known}"
    assert exc.value.field == "option"


@pytest.mark.parametrize("strategy,field,value", [(s, f, v) for s, cases in BAD.items() for f, v in cases])
def test_wrong_type_or_range_is_one_line(strategy, field, value):
    with pytest.raises(ReasonError) as exc:
        library_call(strategy, **{field: value})
    assert one_line(exc).startswith(f"{field}: ") and repr(value) in str(exc.value)
    assert exc.value.field == field


def test_options_come_back_validated():
    opts = check_options("treepo", {"first_divergence": [2, 4], "policy": "low_prob"})
    assert opts.values()["first_divergence"] == (2, 4) and opts.values()["temperature"] == 0.8
    assert check_options("mcts", {"c_puct": 2}).values()["c_puct"] == 2.0  # an int is a float
    epf = check_options("epf", {}).values()
    assert epf["anneal"] is True and epf["lookahead"] == 1  # the preset's own defaults
    assert check_options("particle", {}).values()["anneal"] is False
    # Hints fill only the options a strategy has; the caller's options win over them.
    assert check_options("greedy", {}, {"temperature": 0.7, "delimiter": "\n"}).values() == {}
    assert check_options("beam", {"delimiter": ";"}, {"delimiter": "\n"}).values()["delimiter"] == ";"
    with pytest.raises(ReasonError, match="^temperature: "):
        check_options("sample", {}, {"temperature": -1.0})
    with pytest.raises(ReasonError, match="^strategy: unknown strategy"):
        check_options("nope", {})


def test_treepo_rollout_checks_its_options():
    with pytest.raises(ReasonError, match="^option: strategy 'treepo' has no option 'bogus'"):
        treepo_rollout(Untouchable(), ["1+2"], n=2, reward=lambda i, t: 0.0, bogus=1)
    with pytest.raises(ReasonError, match="^divergence: "):
        treepo_rollout(Untouchable(), ["1+2"], n=2, reward=lambda i, t: 0.0, divergence=0)


def test_registration_checks_the_strategy_against_its_model():
    class Opts(StrategyOptions):
        width: int = 4

    reg = StrategyRegistry()

    async def drifted(ctx, budget, *, extract, final, width: int = 5):
        return None

    with pytest.raises(TypeError, match="defaults to 5"):
        reg.register("drifted", options=Opts)(drifted)

    async def missing(ctx, budget, *, extract, final):
        return None

    with pytest.raises(TypeError, match="not a keyword-only parameter"):
        reg.register("missing", options=Opts)(missing)

    async def fine(ctx, budget, *, extract, final, width: int = 4):
        return None

    reg.register("fine", options=Opts)(fine)
    assert reg.options("fine") is Opts and reg.get("fine") is fine


@pytest.mark.parametrize("args,field", [
    (["-o", "bogus=1"], "option"),
    (["-s", "mcts", "-o", "c_puct=x"], "c_puct"),
    (["-s", "beam", "-o", "width=0"], "width"),
    (["-s", "greedy", "-o", "temperature=0.5"], "option"),
    (["-s", "sample", "--temperature", "-1"], "temperature"),
])
def test_cli_solve_bad_option_exits_2_with_one_line(args, field):
    res = CliRunner().invoke(main, ["solve", "12+3*4", *args])
    assert res.exit_code == 2, res.output
    assert res.output.startswith(f"error: {field}: ") and res.output.count("\n") == 1, res.output


def test_cli_eval_bad_option_exits_2_with_one_line():
    res = CliRunner().invoke(main, ["eval", "--suite", "arith:1", "--strategy", "particle", "-o", "iterations=0"])
    assert res.exit_code == 2 and res.output.startswith("error: iterations: "), res.output


# -- the engine contract ------------------------------------------------------------------------


class Minimal(Untouchable):
    def tokenize_prompt(self, prompt):
        return [1, 2], "ab"


def test_engine_base_declares_tokenizer_context_and_release():
    engine = Minimal()
    assert engine.tokenizer is None and engine.max_context is None and not engine.has_chat_template()
    tree = engine.new_tree("ab")
    engine.release(tree)  # a no-op by default
    engine.tokenizer = build_tokenizer()
    assert engine.has_chat_template()


# -- scorer protocols ---------------------------------------------------------------------------


def test_scorers_satisfy_the_protocols():
    prm = load_prm("arith")
    scorer, valuer = NodeScorer(prm), NodeValuer(load_value("prm", prm=prm))
    assert isinstance(scorer, PRMScorer) and not isinstance(scorer, ValueScorer)
    assert isinstance(valuer, ValueScorer) and not isinstance(valuer, PRMScorer)
    verifier = verifiers.get("exact")()
    assert isinstance(verifier, OutcomeVerifier) and isinstance(verifier, Verifier)


# -- finish reasons -----------------------------------------------------------------------------


def test_finish_reasons_and_finished():
    assert set(FINISH_REASONS) == set(get_args(FinishReason))
    assert ENDED == {"eos", "answer", "max_depth", "repetition"}
    tree = Tree([1, 2])
    for reason in FINISH_REASONS:
        node = tree.add_child(tree.root, [3], finish_reason=reason)
        assert node.finished == (reason in ENDED)
    assert not tree.root.finished
