"""Deciding, token by token, whether a sequence has reached its :class:`~reason.core.engine.base.Stop`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from reason.core.engine.base import Stop
from reason.core.tree import FinishReason


class TokenTexts:
    """Each token id's text decoded on its own, computed once per id (a memo over ``decode``)."""

    def __init__(self, decode: Callable[[Sequence[int]], str]) -> None:
        self.decode = decode
        self._texts: dict[int, str] = {}

    def __call__(self, token: int) -> str:
        text = self._texts.get(token)
        if text is None:
            text = self._texts[token] = self.decode([token])
        return text


class StopChecker:
    """Checks one sequence's tokens against a :class:`Stop` after every new token.

    Stop strings are matched on the decoded text of a short tail window, so a match that spans token
    boundaries is found at the token that completes it, without re-decoding the whole sequence.
    """

    def __init__(
        self,
        stop: Stop,
        eos_ids: set[int],
        decode: Callable[[Sequence[int]], str],
        room: int | None,
        token_text: Callable[[int], str] | None = None,
    ) -> None:
        self.stop = stop
        self.stop_ids = set(stop.token_ids) | (eos_ids if stop.eos else set())
        self.eos_ids = eos_ids
        self.decode = decode
        self.room = room  # tokens the model's context still has for this sequence
        self.window = max((len(s) for s in stop.strings), default=0) + 4
        self.token_text = token_text or TokenTexts(decode)
        self.last_chars = {s[-1] for s in stop.strings if s}

    def check(self, tokens: Sequence[int]) -> FinishReason | None:
        """The finish reason if ``tokens`` (this sequence's generated tokens, the newest last) end
        here, else None. Up to ``stop.min_tokens`` tokens, stop ids and strings do not end it (the
        sampler never draws a stop id there)."""
        last = tokens[-1]
        n = len(tokens)
        if n > self.stop.min_tokens:
            if last in self.stop_ids:
                return "eos" if last in self.eos_ids and last not in self.stop.token_ids else "stop"
            if self.stop.strings and self._may_complete(last):
                tail = tokens[-self.window :]
                text = self.decode(tail)
                hits = [s for s in self.stop.strings if s in text]
                if hits:
                    before = self.decode(tail[:-1]) if len(tail) > 1 else ""
                    if any(s not in before for s in hits):
                        return "stop"
        if self.stop.segment_tokens is not None and n >= self.stop.segment_tokens:
            return "segment"
        if self.stop.max_tokens is not None and n >= self.stop.max_tokens:
            return "length"
        if self.room is not None and n >= self.room:
            return "length"
        return None

    def _may_complete(self, token: int) -> bool:
        """Whether appending ``token`` can complete a stop string: a new match ends inside the
        token's own text, so that text holds the string's last character. Tokens whose text alone
        is empty or a partial character (decoders that are not concatenative there) are always
        checked against the decoded tail."""
        text = self.token_text(token)
        return not text or "\ufffd" in text or any(c in text for c in self.last_chars)
