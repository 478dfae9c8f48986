"""New policy weights between rollout batches: loaded in place, and no KV from the old ones used."""

from __future__ import annotations

import copy

import pytest
import torch

from reason.core.engine.base import Sampling, Stop
from reason.core.engine.hf import HFEngine
from reason.core.errors import ReasonError
from tasks.registry import resolve_model

STOP = Stop(max_tokens=24)
SHORT = Stop(max_tokens=5)  # first-level nodes stop mid-solution, so what follows them can differ


@pytest.fixture()
def engine():
    return HFEngine.from_pretrained(resolve_model("arith"), dtype="float32", device="cpu")


def perturbed(model: torch.nn.Module, scale: float = 0.5) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {k: v + scale * v.std() * torch.randn(v.shape, generator=gen) if v.is_floating_point() and v.dim() == 2 else v
            for k, v in model.state_dict().items()}


def grow(engine: HFEngine, tree=None):
    """Two levels of 4 seeded children; the second level expands a first-level node."""
    tree = tree or engine.new_tree("((23+20)*5-17)*3")
    first = engine.expand(tree, tree.root, 4, SHORT, Sampling(temperature=1.0, seed=5))
    second = engine.expand(tree, first[0], 4, STOP, Sampling(temperature=1.0, seed=6))
    return tree, [tuple(n.token_ids) for n in first], [tuple(n.token_ids) for n in second]


@pytest.mark.parametrize("how", ["state_dict", "shared_model"])
def test_new_weights_change_tokens_and_no_stale_kv_is_used(engine, how):
    tree, first, _ = grow(engine)
    new_state = perturbed(engine.model)
    if how == "state_dict":
        dropped = engine.update_weights(new_state)
    else:  # the trainer owns the model object and changed it in place
        with torch.no_grad():
            engine.model.load_state_dict(new_state)
        dropped = engine.update_weights()
    assert dropped > 0 and engine.weights_version == 1
    # Same seeds, new weights: different tokens.
    _, first_new, second_new = grow(engine)
    assert first_new != first
    # A fresh engine over the new weights agrees token for token, also when expanding a node of the
    # tree grown before the update (its cached path KV was computed under the old weights).
    fresh_model = copy.deepcopy(engine.model)
    fresh = HFEngine(fresh_model, engine.tokenizer)
    _, first_ref, second_ref = grow(fresh)
    assert (first_new, second_new) == (first_ref, second_ref)
    fresh_tree = fresh.new_tree(tree.root.token_ids)
    for node in (tree.root, tree.root.children[1]):
        old_tree_kids = engine.expand(tree, node, 4, STOP, Sampling(temperature=1.0, seed=9))
        fresh_node = fresh_tree.root if node.is_root else fresh_tree.add_child(fresh_tree.root, node.token_ids)
        ref_kids = fresh.expand(fresh_tree, fresh_node, 4, STOP, Sampling(temperature=1.0, seed=9))
        assert [k.token_ids for k in old_tree_kids] == [k.token_ids for k in ref_kids]


def test_weight_update_errors(engine):
    bad = {"nope.weight": torch.zeros(2, 2)}
    with pytest.raises(ReasonError, match="state_dict: does not fit the model"):
        engine.update_weights(bad)
    tree = engine.new_tree("1+2")
    from reason.core.engine.base import ExpandRequest

    engine.submit(ExpandRequest(tree, tree.root, 2, STOP))
    with pytest.raises(ReasonError, match="weights: requests are in flight"):
        engine.update_weights()
