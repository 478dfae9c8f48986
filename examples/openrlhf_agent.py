"""OpenRLHF agent file: each prompt's ``n_samples_per_prompt`` samples are the leaves of one TreePO tree.

On a GPU machine with OpenRLHF (0.8+) and vLLM, point the trainer at this file:

    python -m openrlhf.cli.train_ppo_ray ... --train.agent_func_path examples/openrlhf_agent.py \\
        --rollout.n_samples_per_prompt 8

The trajectories' ``reward`` is the verifier's (use a group-relative estimator such as group_norm);
``REASON_REWARD=tree`` makes it each leaf's tree advantage instead (then train on it as is, e.g.
``reinforce``). Settings: ``REASON_N`` (leaves per tree; default: the concurrent calls per prompt),
``REASON_VERIFIER`` (default ``math``), ``REASON_SEGMENT_TOKENS`` (default 256).

Run directly (``python examples/openrlhf_agent.py``), it dry-runs one group on CPU: the bundled arith
model, through :class:`reason.rl.local.LocalEngineActor`, stands in for OpenRLHF's vLLM engine actor.
"""

from __future__ import annotations

import os

from reason.rl.openrlhf import TreeAgentExecutor


class AgentExecutor(TreeAgentExecutor):
    """What OpenRLHF loads (it constructs ``AgentExecutor()`` with no arguments)."""

    def __init__(self) -> None:
        n = os.environ.get("REASON_N")
        super().__init__(n=int(n) if n else None, verifier=os.environ.get("REASON_VERIFIER", "math"),
                         reward=os.environ.get("REASON_REWARD", "reward"),
                         segment_tokens=int(os.environ.get("REASON_SEGMENT_TOKENS", "256")))


def dry_run(group: int = 8) -> None:
    """One prompt's group of ``execute`` calls, as OpenRLHF's engine actor makes them."""
    import asyncio

    from reason.core.engine.hf import HFEngine
    from tasks.registry import resolve_model
    from reason.rl.local import LocalEngineActor, SamplingParams
    from tasks.arith.problems import generate


    engine = HFEngine.from_pretrained(resolve_model("arith"), dtype="float32", device="cpu")
    actor = LocalEngineActor(engine, logprobs_mode="processed_logprobs")  # as OpenRLHF sets vLLM up
    executor = TreeAgentExecutor(verifier="arith", segment_tokens=8, first_divergence=2)
    problem = generate(2, 1, seed=4)[0]

    async def run() -> list[dict]:
        # OpenRLHF sets max_tokens to its generate_max_len; vLLM's default of 16 would cut every
        # solution before its answer line, leaving all rewards 0.
        params = SamplingParams(logprobs=1, max_tokens=64)
        return await asyncio.gather(*[executor.execute(problem.prompt, str(problem.answer), params, 256,
                                                       engine.tokenizer, actor) for _ in range(group)])

    outs = asyncio.run(run())
    print(f"prompt: {problem.prompt!r}  answer: {problem.answer}")
    for out in outs:
        start = out["action_ranges"][0][0]
        text = engine.decode(out["observation_tokens"][start:]).strip()
        covered = sum(hi - lo for lo, hi in out["action_ranges"])
        print(f"reward {out['reward']:.0f}  tree advantage {out['extra_logs']['tree_advantage']:+.3f}  "
              f"segments {len(out['action_ranges'])} ({covered} tokens)  {text[-40:]!r}")
    print(f"{group} trajectories from {executor.trees_grown} tree, {actor.requests} engine requests; "
          f"generated {executor.generated_tokens} tokens for {executor.leaf_tokens} leaf tokens")


if __name__ == "__main__":
    dry_run()
