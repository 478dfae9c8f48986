"""its_hub's OpenAI-compatible client, unchanged, against ``reason serve``.

its_hub (``pip install "its-hub[lm]"``; not a dependency of this project) sends vLLM's extra chat
fields (``extra_body``, ``add_generation_prompt``, ``continue_final_message``,
``include_stop_str_in_output``) and continues a partial assistant message for every step. This
script serves the bundled arith model in process (``reason serve``'s app on a real socket), points
its_hub's ``OpenAICompatibleLanguageModel`` at it and runs its particle filtering (the arith step
checker as its PRM, behind its_hub's ``AbstractProcessRewardModel``) and self-consistency on
``--problems`` arith problems, one at a time as its_hub runs them. Prints accuracy, wall time, the
requests the server answered and the prompt tokens it found cached, and the fields it ignored.

Run: ``nice -n 19 python benchmarks/its_hub_client.py [--problems 10 --budget 8] --its-hub-path /tmp/its``
after ``pip install --target /tmp/its "its-hub[lm]==1.2.0"`` (or with its_hub installed).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any

from reason.core.engine.hf import HFEngine
from reason.serve import create_app
from reason.serve.thread import ServerThread
from tasks.arith.problems import generate
from tasks.arith.scorers import ArithPRM, final_answer
from tasks.registry import resolve_model


class IgnoredFields(logging.Handler):
    """Collects the server's 'fields ... are ignored' warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def its_hub_prm(question: str) -> Any:
    """The arith step checker as an its_hub process reward model (the last step's score, in
    (0, 1) so its_hub's inverse sigmoid stays finite)."""
    from its_hub.api.reward_models.prm import AbstractProcessRewardModel

    checker = ArithPRM(high=0.9, low=0.1)

    class ArithStepPRM(AbstractProcessRewardModel):
        def score(self, prompt_or_messages: Any, steps: list[str]) -> list[float]:
            return [(checker.score(question, [s for s in text.split("\n") if s.strip()]) or [0.5])[-1]
                    for text in steps]

        async def ascore(self, prompt_or_messages: Any, steps: list[str]) -> list[float]:
            return self.score(prompt_or_messages, steps)

    return ArithStepPRM()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=10)
    parser.add_argument("--budget", type=int, default=8)
    parser.add_argument("--its-hub-path", default=None,
                        help="a pip --target folder holding its_hub, searched after this environment's packages")
    args = parser.parse_args()
    if args.its_hub_path:
        sys.path.append(args.its_hub_path)
    try:
        from its_hub.core.algorithms.particle_gibbs import ParticleFiltering
        from its_hub.core.algorithms.self_consistency import SelfConsistency
        from its_hub.core.lms.openai_lm import OpenAICompatibleLanguageModel
        from its_hub.core.lms.step_generation import StepGeneration
    except ImportError as exc:
        sys.exit(f"its_hub is not importable ({exc}); pip install 'its-hub[lm]' (into a --target dir on PYTHONPATH)")

    ignored = IgnoredFields()
    logging.getLogger("reason.serve").addHandler(ignored)
    engine = HFEngine.from_pretrained(resolve_model("arith"), dtype="float32", device="cpu")
    app = create_app(engine, model_name="arith")
    server = app.state.server
    problems = generate(3, args.problems, seed=31)
    with ServerThread(app) as srv:
        lm = OpenAICompatibleLanguageModel(endpoint=srv.url, api_key="none", model_name="arith",
                                           max_completion_tokens=64)
        sg = StepGeneration(max_steps=8, step_token="\n", stop_token="answer", temperature=1.0,
                            include_stop_str_in_output=True)
        for name in ("particle_filtering", "self_consistency"):
            requests0, reused0, received0 = server.worker.requests, server.index.reused_tokens, server.prompt_tokens
            right, started = 0, time.perf_counter()
            for p in problems:
                if name == "particle_filtering":
                    algorithm = ParticleFiltering(sg, its_hub_prm(p.question))
                else:
                    algorithm = SelfConsistency(consistency_space_projection_func=lambda text: final_answer(text))
                out = algorithm.infer(lm, p.question, args.budget)
                text = out["content"] if isinstance(out, dict) else str(out)
                right += final_answer(text) == p.answer
            wall = time.perf_counter() - started
            received = server.prompt_tokens - received0
            print(f"its_hub {name}: {right}/{len(problems)} correct, {wall:.1f} s, server answered "
                  f"{server.worker.requests - requests0} requests, {server.index.reused_tokens - reused0:,}/"
                  f"{received:,} prompt tokens found cached", flush=True)
    fields = sorted({m.split("fields ", 1)[1].split(" are ignored")[0] for m in ignored.messages if "fields " in m})
    print(f"fields the server ignored (logged {len(ignored.messages)} times): {fields}")


if __name__ == "__main__":
    main()
