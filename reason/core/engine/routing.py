"""Which of several policy servers an expansion goes to (the ``openai`` backend's ``base_url`` list).

Tree-affine routing (``"tree"``, the default): every expansion of one tree goes to the same server
while that server is healthy, so its prefix cache holds the tree's paths (each request re-sends the
whole path, and all but the newest node are found cached there); a new tree goes to the least loaded
healthy server (fewest requests in flight, then fewest trees). A server that stops answering is
taken out: its trees move to other servers on their next expansion (which re-sends the whole path,
so nothing is lost, only that path's cache), and it is probed until it answers again, when it takes
new trees. ``"round_robin"`` sends each request to the next healthy server in turn (for comparison:
it spreads one tree over every server's cache).

Per server, :class:`ServerStats` counts requests, prompt tokens sent and prompt tokens the server
reported cached (``usage.prompt_tokens_details.cached_tokens``, as vLLM with
``--enable-prompt-tokens-details`` and ``reason serve`` report).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from reason.core.errors import ReasonError

Routing = Literal["tree", "round_robin"]


class ServerStats(BaseModel):
    """One server's share of the work, as the client saw it."""

    url: str
    healthy: bool = True
    in_flight: int = 0
    trees: int = 0
    requests: int = 0
    failures: int = 0
    trees_moved_in: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0


def parse_base_urls(spec: str | Sequence[str]) -> list[str]:
    """Server URLs from a list, a comma-separated string or ``@FILE`` (one URL a line; ``#`` comments
    and blank lines skipped), each checked to be http(s); duplicates are refused."""
    if isinstance(spec, str):
        if spec.startswith("@"):
            path = Path(spec[1:])
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ReasonError("base-url", f"cannot read {path} ({type(exc).__name__})",
                                  "give a UTF-8 file of URLs, one a line") from None
            items = [line.split("#", 1)[0].strip() for line in text.splitlines()]
        else:
            items = [part.strip() for part in spec.split(",")]
    else:
        items = [str(part).strip() for part in spec]
    urls = [u for u in items if u]
    if not urls:
        raise ReasonError("base-url", "names no server", "give e.g. http://127.0.0.1:8000/v1 (several comma-separated)")
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise ReasonError("base_url", f"{url!r} is not an http(s) URL", "give e.g. http://127.0.0.1:8000/v1")
    normal = [u.rstrip("/") if u.rstrip("/").endswith("/v1") else u.rstrip("/") + "/v1" for u in urls]
    twice = next((u for u in normal if normal.count(u) > 1), None)
    if twice is not None:
        raise ReasonError("base-url", f"names {twice} more than once", "list each server once")
    return normal


class ServerPool:
    """Routing state over several servers (see the module docstring); safe from many threads."""

    def __init__(self, urls: Sequence[str], routing: Routing = "tree") -> None:
        if routing not in ("tree", "round_robin"):
            raise ReasonError("routing", f"unknown routing {routing!r}", "use 'tree' or 'round_robin'")
        self.routing = routing
        self.stats = [ServerStats(url=u) for u in urls]
        self._home: dict[int, int] = {}  # tree uid -> server index
        self._turn = random.randrange(len(urls)) if urls else 0  # independent clients start at different servers
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.stats)

    def _least_loaded(self, healthy: list[int]) -> int:
        """Fewest requests in flight, then fewest trees; ties go round in turn (so clients that each
        route their own trees still spread them)."""
        n = len(self.stats)
        choice = min(healthy, key=lambda i: (self.stats[i].in_flight, self.stats[i].trees, (i - self._turn) % n))
        self._turn += 1
        return choice

    def pick(self, tree_uid: int) -> int:
        """The server for the next expansion of tree ``tree_uid``, counted as in flight there. With
        every server down, the one the tree last used (a call there fails or finds it back up)."""
        with self._lock:
            healthy = [i for i, s in enumerate(self.stats) if s.healthy]
            home = self._home.get(tree_uid)
            if self.routing == "round_robin" and healthy:
                choice = healthy[self._turn % len(healthy)]
                self._turn += 1
            elif home is not None and (home in healthy or not healthy):
                choice = home
            elif healthy:
                choice = self._least_loaded(healthy)
            else:
                choice = self._turn % len(self.stats)
                self._turn += 1
            if home != choice:
                if home is not None:
                    self.stats[home].trees -= 1
                    if self.routing == "tree":  # round-robin moves every tree at every request
                        self.stats[choice].trees_moved_in += 1
                self.stats[choice].trees += 1
                self._home[tree_uid] = choice
            self.stats[choice].in_flight += 1
            return choice

    def finished(self, server: int, prompt_tokens: int, cached_tokens: int) -> None:
        """A request to ``server`` was answered."""
        with self._lock:
            s = self.stats[server]
            s.in_flight -= 1
            s.requests += 1
            s.prompt_tokens += prompt_tokens
            s.cached_prompt_tokens += cached_tokens
            s.healthy = True

    def failed(self, server: int, take_out: bool) -> bool:
        """A request to ``server`` failed; with ``take_out`` the server is marked down (its trees move
        on their next expansion). True when another server is healthy to try instead."""
        with self._lock:
            s = self.stats[server]
            s.in_flight -= 1
            s.failures += 1
            if take_out:
                s.healthy = False
            return any(x.healthy for i, x in enumerate(self.stats) if i != server)

    def down(self) -> list[int]:
        """Servers currently taken out."""
        with self._lock:
            return [i for i, s in enumerate(self.stats) if not s.healthy]

    def revive(self, server: int) -> None:
        """``server`` answered a probe: it takes new trees again."""
        with self._lock:
            self.stats[server].healthy = True

    def release(self, tree_uid: int) -> None:
        """Tree ``tree_uid`` is done: forget its server."""
        with self._lock:
            home = self._home.pop(tree_uid, None)
            if home is not None:
                self.stats[home].trees -= 1

    def report(self) -> list[dict]:
        """Each server's :class:`ServerStats` as a dict, plus the cached share of its prompt tokens."""
        with self._lock:
            return [{**s.model_dump(), "cached_share": s.cached_prompt_tokens / s.prompt_tokens if s.prompt_tokens
                     else 0.0} for s in self.stats]


def wait_backoff(backoff: float, attempt: int) -> None:
    """Sleep before retry ``attempt`` (1, 2, ...): ``backoff * 2**(attempt-1)`` seconds."""
    if attempt:
        time.sleep(backoff * 2 ** (attempt - 1))
