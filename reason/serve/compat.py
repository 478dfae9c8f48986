"""What the server does for vLLM's clients beyond plain OpenAI requests (see :mod:`reason.serve.schemas`).

Honoured: chat ``add_generation_prompt`` / ``continue_final_message`` (the chat template renders the
conversation so the model continues the last assistant message), ``skip_special_tokens`` (the text
returned), ``truncate_prompt_tokens`` (the prompt's last tokens are kept), and the sampling
extensions ``min_p``, ``repetition_penalty``, ``presence_penalty``, ``frequency_penalty`` and
``min_tokens`` (see :mod:`reason.serve.schemas`). Ignored: unknown fields and the sampling fields the
engine cannot honour (``logit_bias``, ``bad_words``, beam search, ...); they are logged once per
request as a warning and named in the ``X-Ignored-Fields`` response header, so a client can tell.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from reason.core.errors import ReasonError
from reason.core.tree import Node
from reason.serve.schemas import ignored_fields

IGNORED_HEADER = "X-Ignored-Fields"
"""The response header naming the request fields the server ignored (comma-separated)."""

log = logging.getLogger("reason.serve")


def ignored_header(body: Any, endpoint: str) -> dict[str, str]:
    """The response headers for ``body``: :data:`IGNORED_HEADER` when it set fields this server
    ignores (logged as a warning), else none."""
    names = ignored_fields(body)
    if not names:
        return {}
    shown = ["".join(c if " " < c < "\x7f" else "?" for c in n[:60]) for n in names[:32]]  # printable ASCII
    log.warning("%s: the request's fields %s are ignored by this server", endpoint, ", ".join(shown))
    return {IGNORED_HEADER: ",".join(shown)}


def render_chat(tokenizer: Any, messages: Sequence[dict[str, str]], add_generation_prompt: bool,
                continue_final_message: bool) -> list[int]:
    """Token ids of a chat through the tokenizer's template, vLLM's way: with
    ``continue_final_message`` the rendering stops at the end of the last (assistant) message."""
    if not getattr(tokenizer, "chat_template", None):
        raise ReasonError("messages", "chat messages given but the model has no chat template",
                          "use /v1/completions with plain text")
    text = tokenizer.apply_chat_template(list(messages), add_generation_prompt=add_generation_prompt,
                                         continue_final_message=continue_final_message, tokenize=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def output_text(tokenizer: Any, node: Node, skip_special_tokens: bool | None) -> str:
    """A choice's text: the node's own, or decoded again with special tokens skipped (or kept) when
    the request says so."""
    if skip_special_tokens is None or tokenizer is None:
        return node.text
    return tokenizer.decode(node.token_ids, skip_special_tokens=skip_special_tokens)


def truncate(ids: list[int], keep: int | None) -> list[int]:
    """vLLM's ``truncate_prompt_tokens``: the prompt's last ``keep`` tokens."""
    return ids if keep is None or len(ids) <= keep else ids[-keep:]
