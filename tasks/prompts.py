"""Prompt templates: how a problem is put to a policy model.

A template is a system message (or none) and a user message with ``{problem}``. With a tokenizer
that has a chat template, :func:`build_prompt` returns chat messages (the engine applies the chat
template); without one, the messages are joined into plain text. Templates by name:

* ``qwen-math``: the system message Qwen2.5-Math models (and the Qwen PRMs) were trained with, the
  problem as the user turn; steps come out separated by blank lines. The default for math suites.
* ``step-by-step``: for general instruct models (e.g. Llama 3.x): asks for ``## Step N:`` steps
  separated by blank lines and the answer in ``\\boxed{}``.
* ``plain``: the problem alone.

Any other text containing ``{problem}`` is used as the user message as it is.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from reason.core.engine.base import Engine
from reason.core.errors import ReasonError
from search.domain import Problem


class Template(BaseModel):
    """A system message (may be empty) and a user message with a ``{problem}`` slot."""

    system: str = ""
    user: str = "{problem}"

    def messages(self, problem: str) -> list[dict[str, str]]:
        """The chat messages for ``problem``."""
        out = [{"role": "system", "content": self.system}] if self.system else []
        return out + [{"role": "user", "content": self.user.replace("{problem}", problem)}]


TEMPLATES: dict[str, Template] = {
    "qwen-math": Template(system="Please reason step by step, and put your final answer within \\boxed{}."),
    "step-by-step": Template(
        user="Work through this problem one step at a time. Write each step as '## Step N:' followed by its "
        "reasoning, leave a blank line between steps, and end with 'The final answer is $\\boxed{ANSWER}$.' "
        "where ANSWER is your result.\n\nProblem: {problem}"
    ),
    "plain": Template(),
}
DEFAULT = {"math500": "qwen-math", "aime24": "qwen-math", "aime25": "qwen-math"}


def get_template(name_or_text: str | None, suite: str) -> Template:
    """The template named ``name_or_text``, a user template given as text, or the suite's default."""
    if name_or_text is None:
        return TEMPLATES[DEFAULT.get(suite, "plain")]
    if name_or_text in TEMPLATES:
        return TEMPLATES[name_or_text]
    if "{problem}" in name_or_text:
        return Template(user=name_or_text)
    raise ReasonError("prompt-template", f"unknown template {name_or_text!r}",
                      f"use one of {', '.join(TEMPLATES)} or text containing {{problem}}")


def build_prompt(problem: Problem, *, engine: Engine | None = None, template: str | None = None,
                 suite: str = "") -> Any:
    """Chat messages for ``problem`` when the engine's tokenizer has a chat template, else text."""
    messages = get_template(template, suite).messages(problem.question)
    if engine is not None and engine.has_chat_template():
        return messages
    return "\n\n".join(m["content"] for m in messages) + "\n\n"
