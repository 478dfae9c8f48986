"""vLLM's sampling extensions (``min_p``, ``repetition_penalty``, ``presence_penalty``,
``frequency_penalty``, ``min_tokens``) are honoured: each processed distribution equals a reference
built from transformers' own logits processors or the option's definition, on a tiny real model; the
tree's history split (the root is the prompt, every later path token is generated) holds; drafting
keeps seeded and greedy tokens identical; the server, the openai engine, the vllm engine's
``SamplingParams`` and the CLI pass the fields through; bad values are one-line errors."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from transformers import MinNewTokensLengthLogitsProcessor, MinPLogitsWarper, RepetitionPenaltyLogitsProcessor

from reason.cli import main
from reason.core.engine.base import ExpandRequest, Sampling, Stop
from reason.core.engine.hf import HFEngine
from reason.core.engine.hf.penalties import mask_stops, penalise
from reason.core.engine.hf.sampler import sample_tokens
from reason.core.engine.openai import OpenAIEngine
from reason.core.engine.vllm import sampling_kwargs
from reason.core.errors import ReasonError
from reason.serve import create_app
from reason.serve.compat import IGNORED_HEADER
from reason.serve.thread import ServerThread
from tasks.registry import resolve_model

M = 1000  # grid points: token frequencies are exact to 1 / M


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread for this module: its tensors are small, and a second thread only spins on
    a shared CPU (the filtered rows cost 20x more CPU time with two)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def reference(z: torch.Tensor, prompt: list[int], generated: list[int], sp: Sampling, stop_ids: list[int] = (),
              min_tokens: int = 0) -> torch.Tensor:
    """The processed distribution q (float64) of next-token logits ``z`` after ``prompt`` and
    ``generated``, from transformers' processors where it has them and from the definitions
    otherwise, in vLLM's order: min_tokens, repetition, frequency and presence penalties,
    temperature, min-p, top-k, top-p (of what min-p left, renormalised)."""
    x = z.double()[None].clone()
    ids = torch.tensor([list(prompt) + list(generated)])
    if stop_ids:
        x = MinNewTokensLengthLogitsProcessor(len(prompt), min_tokens, list(stop_ids))(ids, x)
    if sp.repetition_penalty != 1.0:
        x = RepetitionPenaltyLogitsProcessor(sp.repetition_penalty)(ids, x)
    counts = torch.bincount(torch.tensor(list(generated), dtype=torch.long), minlength=x.shape[1]).double()
    x = x - sp.frequency_penalty * counts - sp.presence_penalty * (counts > 0).double()
    if sp.temperature == 0.0:
        q = torch.zeros_like(x[0])
        q[x[0].argmax()] = 1.0
        return q
    x = x / sp.temperature
    if sp.min_p > 0.0:
        x = MinPLogitsWarper(sp.min_p)(ids, x)
    p = torch.softmax(x[0], -1)
    order = torch.argsort(-p, stable=True)
    if sp.top_k:
        order = order[: sp.top_k]
    kept = p[order] / p[order].sum()
    n = int((torch.cumsum(kept, 0) - kept < sp.top_p).sum()) if sp.top_p < 1.0 else len(order)
    q = torch.zeros_like(p)
    q[order[: max(n, 1)]] = p[order[: max(n, 1)]]
    return q / q.sum()


@pytest.fixture(scope="module")
def tiny(models, tokenizer):
    """An hf engine over the tiny random Llama (438 tokens, logits spread enough to show every option)."""
    return HFEngine(models["llama"], tokenizer)


@pytest.fixture(scope="module")
def arith():
    path = resolve_model("arith")
    plain = HFEngine.from_pretrained(path, dtype="float32", device="cpu")
    drafted = HFEngine.from_pretrained(path, dtype="float32", device="cpu", draft="suffix", draft_threshold=0.0)
    return plain, drafted


def next_logits(engine: HFEngine, ids: list[int]) -> torch.Tensor:
    """The model's next-token logits after every prefix of ``ids`` (one plain forward)."""
    with torch.inference_mode():
        return engine.model(torch.tensor([ids])).logits[0].float()


SETTINGS = [
    Sampling(temperature=1.0, repetition_penalty=1.6),
    Sampling(temperature=0.8, repetition_penalty=0.7),  # below 1: seen tokens are favoured
    Sampling(temperature=0.9, presence_penalty=1.2, frequency_penalty=0.6),
    Sampling(temperature=1.0, presence_penalty=-1.0, frequency_penalty=-0.5),
    Sampling(temperature=0.7, min_p=0.1),
    Sampling(temperature=1.0, min_p=0.05),
    Sampling(temperature=1.1, min_p=0.02, top_p=0.6),
    Sampling(temperature=0.9, min_p=0.03, top_k=12, repetition_penalty=1.3, frequency_penalty=0.4),
]


@pytest.mark.parametrize("sp", SETTINGS, ids=lambda sp: ",".join(f"{k}={v}" for k, v in sp.model_dump().items()
                                                                  if v != Sampling.model_fields[k].default))
def test_processed_distribution_matches_the_reference(tiny, tokenizer, sp):
    """Over a grid of uniforms, each token's share equals its reference probability within 1 / M,
    and every drawn token's sampling logprob is log q of the reference (its model logprob the raw one)."""
    ids = tokenizer("Problem: What is 12 + 30 * 2?\nStep 1: First compute 30 * 2 = 60.")["input_ids"]
    prompt, generated = ids[:8], ids[8:]
    z = next_logits(tiny, ids)[-1]
    q = reference(z, prompt, generated, sp)
    logits = z[None].repeat(M, 1)
    if sp.penalised:
        penalise(logits, list(range(M)), [torch.tensor(prompt)] * M, [torch.tensor(generated)] * M,
                 [sp.repetition_penalty] * M, [sp.presence_penalty] * M, [sp.frequency_penalty] * M)
    grid = [(i + 0.5) / M for i in range(M)]
    chosen = sample_tokens(logits, [sp.temperature] * M, [sp.top_k] * M, [sp.top_p] * M, grid, [sp.min_p] * M,
                           raw=z[None].repeat(M, 1) if sp.penalised else None)
    freq = np.bincount(chosen.tokens, minlength=len(q)) / M
    assert np.abs(freq - q.numpy()).max() <= 1.0 / M + 1e-5  # the grid's resolution plus float32 rounding
    assert (q[torch.tensor(chosen.tokens)] > 0).all()
    logq = torch.log(q[torch.tensor(chosen.tokens)])
    assert torch.allclose(torch.tensor(chosen.sampling_logprobs, dtype=torch.float64), logq, atol=2e-4)
    own = torch.log_softmax(z.double(), -1)[torch.tensor(chosen.tokens)]
    assert torch.allclose(torch.tensor(chosen.logprobs, dtype=torch.float64), own, atol=2e-4)
    assert (q > 0).sum() < len(q) or sp.min_p == 0.0  # min-p really cut something here


def test_rows_with_different_settings_batch_like_single_rows(tiny, tokenizer):
    """penalise and mask_stops on several rows with their own histories and settings at once give
    each row what it gets alone."""
    ids = tokenizer("Step 2: Then 12 + 60 = 72. The answer is 72.")["input_ids"]
    z = next_logits(tiny, ids)[-1]
    hist = [(ids[:3], ids[3:]), (ids[:10], ids[10:]), (ids, [])]
    settings = [(1.5, 0.0, 0.0), (1.0, 0.8, 0.3), (0.6, -0.4, 1.0)]
    together = z[None].repeat(4, 1)
    penalise(together, [0, 2, 3], *zip(*[(torch.tensor(p), torch.tensor(g)) for p, g in hist]), *zip(*settings))
    mask_stops(together, [1, 3], [[0, 5], [7]])
    for row, k in ((0, 0), (2, 1), (3, 2)):
        alone = z[None].clone()
        penalise(alone, [0], [torch.tensor(hist[k][0])], [torch.tensor(hist[k][1])], *[[x] for x in settings[k]])
        if row == 3:
            alone[0, 7] = float("-inf")
        assert torch.equal(together[row], alone[0])
    assert torch.isinf(together[1, [0, 5]]).all() and torch.equal(together[1, 1:5], z[1:5])


def test_min_p_rows_mixed_with_others_draw_as_alone(tiny, tokenizer):
    """Greedy, plain (T = 1 and T != 1) and filtered rows, with and without min-p, in one call: each
    row's token and both logprobs are what it gets alone."""
    z = next_logits(tiny, tokenizer("The sum of the interior angles")["input_ids"])[-1]
    rows = [(0.0, 0, 1.0, 0.0, 0.3), (1.0, 0, 1.0, 0.05, 0.7), (0.8, 0, 1.0, 0.1, 0.2), (1.0, 0, 1.0, 0.0, 0.9),
            (0.9, 20, 1.0, 0.02, 0.6), (1.2, 0, 0.7, 0.05, 0.4)]
    together = sample_tokens(z[None].repeat(len(rows), 1), *map(list, zip(*[(t, k, p, u) for t, k, p, _, u in rows])),
                             [mp for *_, mp, _ in rows])
    for i, (t, k, p, mp, u) in enumerate(rows):
        alone = sample_tokens(z[None].clone(), [t], [k], [p], [u], [mp])
        assert together.tokens[i] == alone.tokens[0]
        assert together.logprobs[i] == pytest.approx(alone.logprobs[0], abs=1e-5)
        assert together.sampling_logprobs[i] == pytest.approx(alone.sampling_logprobs[0], abs=1e-5)


def grow_mid(engine: HFEngine, prompt: str):
    tree = engine.new_tree(prompt)
    [mid] = engine.expand(tree, tree.root, 1, Stop(max_tokens=6, eos=False), Sampling(temperature=0.0))
    return tree, mid


@pytest.mark.parametrize("whole_path_is_prompt", [False, True])
def test_engine_children_follow_the_reference_along_the_tree(tiny, whole_path_is_prompt):
    """A child of a non-root node: at every position its sampling logprob is log q of the reference
    whose prompt is the root (or the whole path, with ``prompt_len``) and whose generated tokens are
    the rest of the path and the child's earlier tokens; its model logprob is the raw one; no EOS or
    stop id is drawn before ``min_tokens``."""
    tree, mid = grow_mid(tiny, "Problem: Find x if 3x + 5 = 20.")
    sp = Sampling(temperature=0.9, seed=3, repetition_penalty=1.4, presence_penalty=0.6, frequency_penalty=0.5,
                  min_p=0.02)
    stop = Stop(max_tokens=10, min_tokens=6, token_ids=(mid.token_ids[0],))
    root_ids, path = list(tree.root.token_ids), list(tree.root.token_ids) + list(mid.token_ids)
    cut = len(path) if whole_path_is_prompt else len(root_ids)
    [kids] = tiny.expand_many([ExpandRequest(tree, mid, 4, stop, sp, prompt_len=cut if whole_path_is_prompt else None)])
    stops = sorted(set(stop.token_ids) | tiny.eos_ids)
    for kid in kids:
        seq = path + list(kid.token_ids)
        logits = next_logits(tiny, seq)
        for j, t in enumerate(kid.token_ids):
            z = logits[len(path) + j - 1]
            q = reference(z, seq[:cut], seq[cut : len(path) + j], sp, stops, min_tokens=6 + len(path) - cut)
            assert kid.sampling_logprobs[j] == pytest.approx(float(torch.log(q[t])), abs=2e-4)
            assert kid.logprobs[j] == pytest.approx(float(torch.log_softmax(z, -1)[t]), abs=2e-4)
            if j < 6:
                assert t not in stops


def test_min_tokens_prevents_an_early_end(arith, tiny):
    """Greedy arith ends at EOS after some 30 tokens and at the first newline with a stop string;
    with min_tokens neither ends it early. On the tiny model a stop id that greedy would draw first
    is never drawn before min_tokens."""
    plain, _ = arith
    tree = plain.new_tree("((23+20)*5-17)*3")
    greedy = Sampling(temperature=0.0)
    [free] = plain.expand(tree, tree.root, 1, Stop(max_tokens=40), greedy)
    assert free.finish_reason == "eos"
    n = len(free.token_ids)
    [held] = plain.expand(tree, tree.root, 1, Stop(max_tokens=n + 8, min_tokens=n + 5), greedy)
    assert len(held.token_ids) > n + 5 and 1 not in held.token_ids[: n + 5]
    [line] = plain.expand(tree, tree.root, 1, Stop(strings=("\n",), max_tokens=20), greedy)
    [lines] = plain.expand(tree, tree.root, 1, Stop(strings=("\n",), max_tokens=20, min_tokens=12), greedy)
    assert len(line.token_ids) < 12 and lines.finish_reason == "stop" and len(lines.token_ids) > 12
    t = tiny.new_tree("The answer is")
    [first] = tiny.expand(t, t.root, 1, Stop(max_tokens=1), greedy)
    stop = first.token_ids[0]
    [early] = tiny.expand(t, t.root, 1, Stop(token_ids=(stop,), max_tokens=20), greedy)
    assert early.token_ids == [stop] and early.finish_reason == "stop"
    [late] = tiny.expand(t, t.root, 1, Stop(token_ids=(stop,), max_tokens=20, min_tokens=4), greedy)
    assert stop not in late.token_ids[:4] and len(late.token_ids) > 4


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_identical_with_and_without_drafting(arith, temperature):
    """Penalised, min-p and min_tokens children of a non-root node: the same tokens and logprobs of
    both kinds with the suffix drafter as without, and drafts were accepted."""
    plain, drafted = arith
    sp = Sampling(temperature=temperature, seed=11, repetition_penalty=1.5, presence_penalty=0.6,
                  frequency_penalty=0.5, min_p=0.05 if temperature else 0.0)

    def run(engine):  # greedy and unpenalised, the child ends at EOS after 25 tokens
        tree, mid = grow_mid(engine, "((23+20)*5-17)*3")
        [kids] = engine.expand_many([ExpandRequest(tree, mid, 4, Stop(max_tokens=32, min_tokens=28), sp)])
        return kids

    before = drafted.ledger.draft_accepted
    ref, got = run(plain), run(drafted)
    assert [k.token_ids for k in got] == [k.token_ids for k in ref]
    for a, b in zip(got, ref):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
        assert a.sampling_logprobs == pytest.approx(b.sampling_logprobs, abs=1e-4)
    assert drafted.ledger.draft_accepted > before
    unpenalised = run_plain(plain, temperature)
    assert [k.token_ids for k in ref] != unpenalised  # the options changed something


def run_plain(engine, temperature):
    tree, mid = grow_mid(engine, "((23+20)*5-17)*3")
    [kids] = engine.expand_many([ExpandRequest(tree, mid, 4, Stop(max_tokens=32), Sampling(temperature=temperature,
                                                                                           seed=11))])
    return [k.token_ids for k in kids]


@pytest.fixture(scope="module")
def server(arith):
    engine = HFEngine.from_pretrained(resolve_model("arith"), dtype="float32", device="cpu")
    with ServerThread(create_app(engine, model_name="arith")) as srv:
        yield srv


EXTENSIONS = {"repetition_penalty": 1.8, "presence_penalty": 0.5, "frequency_penalty": 0.7, "min_p": 0.05}


def test_server_and_openai_engine_honour_the_fields(server, arith):
    """Completions with the extensions (no X-Ignored-Fields) answer what the hf engine gives for the
    same Sampling and Stop; the openai engine sends them and gets the same children back."""
    plain, _ = arith
    body = {"prompt": "((23+20)*5-17)*3", "max_tokens": 40, "temperature": 0.7, "seed": 5, "n": 3,
            "min_tokens": 35, "logprobs": 1, **EXTENSIONS}
    r = httpx.post(server.url + "/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    assert IGNORED_HEADER not in r.headers
    sp = Sampling(temperature=0.7, seed=5, **EXTENSIONS)
    stop = Stop(max_tokens=40, min_tokens=35)
    tree = plain.new_tree(body["prompt"])
    want = plain.expand(tree, tree.root, 3, stop, sp)
    assert [c["token_ids"] for c in r.json()["choices"]] == [k.token_ids for k in want]
    assert all(len(k.token_ids) > 35 for k in want)
    got_slp = r.json()["choices"][0]["logprobs"]["sampling_logprobs"]
    assert got_slp == pytest.approx(want[0].sampling_logprobs, abs=1e-4)
    client = OpenAIEngine(server.url, plain.tokenizer)
    try:
        t = client.new_tree(body["prompt"])
        assert [k.token_ids for k in client.expand(t, t.root, 3, stop, sp)] == [k.token_ids for k in want]
    finally:
        client.close()
    still = httpx.post(server.url + "/completions", json={**body, "length_penalty": 0.5}, timeout=60)
    assert still.headers[IGNORED_HEADER] == "length_penalty"


def test_vllm_sampling_params_carry_the_fields(arith):
    plain, _ = arith
    tree = plain.new_tree("1+2")
    request = ExpandRequest(tree, tree.root, 2, Stop(max_tokens=8, min_tokens=3), Sampling(**EXTENSIONS))
    kwargs = sampling_kwargs(request, 5)
    assert {k: kwargs[k] for k in EXTENSIONS} == EXTENSIONS and kwargs["min_tokens"] == 3
    assert sampling_kwargs(ExpandRequest(tree, tree.root, 1, Stop(max_tokens=8, min_tokens=7)), 4)["min_tokens"] == 4


@pytest.mark.parametrize("kwargs, needle", [
    ({"min_p": 1.5}, "sampling.min_p:"),
    ({"repetition_penalty": 0.0}, "sampling.repetition_penalty:"),
    ({"presence_penalty": -2.5}, "sampling.presence_penalty:"),
    ({"frequency_penalty": float("inf")}, "sampling.frequency_penalty:"),
])
def test_bad_sampling_values_are_one_line_errors(kwargs, needle):
    with pytest.raises(ReasonError) as err:
        Sampling.make(**kwargs)
    assert str(err.value).startswith(needle) and "\n" not in str(err.value)


def test_bad_min_tokens_and_cli_flags():
    with pytest.raises(ReasonError, match=r"^stop.min_tokens: is over max_tokens \(4\)"):
        Stop.make(max_tokens=4, min_tokens=9)
    with pytest.raises(ReasonError, match=r"^stop.min_tokens:"):
        Stop.make(min_tokens=-1)
    with pytest.raises(ReasonError, match="prompt_len"):
        ExpandRequest(None, None, prompt_len=-1).validate()
    result = CliRunner().invoke(main, ["generate", "1+2", "--repetition-penalty", "0"])
    assert result.exit_code != 0 and "repetition_penalty" in result.output and len(result.output.strip().splitlines()) == 1
    result = CliRunner().invoke(main, ["generate", "1+2", "--json", "-t", "0", "--min-tokens", "30", "--max-tokens", "34",
                                       "--repetition-penalty", "1.2", "--presence-penalty", "0.1",
                                       "--frequency-penalty", "0.1", "--min-p", "0.1"])
    assert result.exit_code == 0, result.output
    [sample] = json.loads(result.output)["samples"]
    assert len(sample["token_ids"]) > 30
